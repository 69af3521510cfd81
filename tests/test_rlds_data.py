"""The RLDS fine-tuning dataset, against independent numpy computations on the raw episodes."""

import json
from pathlib import Path

import numpy as np
import pytest

from openvla_vq.action_tokenizers import BinningActionTokenizer, BinningConfig, VQActionTokenizer, VQConfig
from openvla_vq.data.collator import ActionChunkCollator
from openvla_vq.data.rlds_dataset import RLDSChunkDataset, find_builder
from openvla_vq.data.specs import dataset_spec
from openvla_vq.model import IGNORE_INDEX, ImageProcessor
from rlds_fixtures import write_libero_like

K = 5


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("rlds")
    return root, write_libero_like(root)


def reference_chunks(arrays: list[dict], stats: dict) -> list[np.ndarray]:
    """OpenVLA's recipe written out: gripper 1 - clip(g, 0, 1); q01/q99 normalization of dims 0-5; K-step future
    chunks; past the end, normalized relative dims 0 and the gripper repeated."""
    q01, q99 = np.array(stats["action"]["q01"]), np.array(stats["action"]["q99"])
    out = []
    for a in arrays:
        act = a["actions"].astype(np.float64).copy()
        act[:, 6] = 1 - np.clip(act[:, 6], 0, 1)
        act[:, :6] = np.clip(2 * (act[:, :6] - q01[:6]) / (q99[:6] - q01[:6] + 1e-8) - 1, -1, 1)
        n = len(act)
        for t in range(n):
            chunk = np.stack([act[min(t + k, n - 1)] for k in range(K)])
            for k in range(K):
                if t + k >= n:
                    chunk[k, :6] = 0.0
            out.append(chunk)
    return out


def test_statistics_match_numpy_and_are_cached(data):
    root, arrays = data
    ds = RLDSChunkDataset(root, "libero_90_no_noops", chunk_len=K, train=False, split="all")
    raw = np.concatenate([a["actions"] for a in arrays])
    raw[:, 6] = 1 - np.clip(raw[:, 6], 0, 1)
    s = ds.statistics
    np.testing.assert_allclose(s["action"]["q01"], np.quantile(raw, 0.01, axis=0), rtol=1e-5)
    np.testing.assert_allclose(s["action"]["q99"], np.quantile(raw, 0.99, axis=0), rtol=1e-5)
    assert s["action"]["mask"] == [True] * 6 + [False]
    assert s["num_transitions"] == len(raw) and s["num_trajectories"] == len(arrays)
    files = list(Path(find_builder(root, "libero_90_no_noops").data_dir).glob("dataset_statistics_*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == s
    files[0].write_text(json.dumps({**s, "num_trajectories": -1}))  # a second load reads the cache, not the data
    assert RLDSChunkDataset(root, "libero_90_no_noops", chunk_len=K, train=False).statistics["num_trajectories"] == -1
    files[0].write_text(json.dumps(s))


def test_chunks_equal_openvla_recipe_in_order(data):
    root, arrays = data
    ds = RLDSChunkDataset(root, "libero_90_no_noops", chunk_len=K, train=False, split="all")
    samples = list(ds)
    want = reference_chunks(arrays, ds.statistics)
    assert len(samples) == len(want) == sum(len(a["actions"]) for a in arrays)
    for got, exp in zip(samples, want):
        np.testing.assert_allclose(got["actions"], exp, atol=1e-5)
    assert samples[0]["instruction"] == arrays[0]["instruction"]
    assert samples[0]["image"].shape == (224, 224, 3) and samples[0]["image"].dtype == np.uint8


def test_held_out_split_and_process_shards_are_disjoint(data):
    root, arrays = data
    count = lambda **kw: sum(1 for _ in RLDSChunkDataset(root, "libero_90_no_noops", chunk_len=1, train=False, **kw))
    total = sum(len(a["actions"]) for a in arrays)
    assert count(split="train") + count(split="val") == total and count(split="val") == len(arrays[-1]["actions"])
    firsts = []
    for rank in range(2):
        ds = RLDSChunkDataset(root, "libero_90_no_noops", chunk_len=1, train=False, split="all", process_index=rank, num_processes=2)
        firsts.append({s["actions"].tobytes() for s in ds})
    assert not firsts[0] & firsts[1] and len(firsts[0] | firsts[1]) > 0


def test_training_stream_shuffles_augments_and_repeats(data):
    root, arrays = data
    plain = RLDSChunkDataset(root, "libero_90_no_noops", chunk_len=K, train=False, split="train")
    aug = RLDSChunkDataset(root, "libero_90_no_noops", chunk_len=K, train=True, image_aug=True, shuffle_buffer_size=50, seed=3)
    stream = iter(aug)
    samples = [next(stream) for _ in range(2 * sum(len(a["actions"]) for a in arrays))]  # more than one epoch
    assert all(s["image"].shape == (224, 224, 3) for s in samples)
    ordered = [s["actions"].tobytes() for s in plain]
    assert [s["actions"].tobytes() for s in samples[: len(ordered)]] != ordered
    again = iter(RLDSChunkDataset(root, "libero_90_no_noops", chunk_len=K, train=True, image_aug=True, shuffle_buffer_size=50, seed=3))
    first = next(again)
    assert np.array_equal(first["image"], samples[0]["image"]), "same seed, same stream"
    assert not any(np.array_equal(samples[0]["image"], p["image"]) for p in list(plain)[:40]), "augmentation changes pixels"


def test_missing_dataset_and_unknown_spec_are_clear(data, tmp_path):
    root, _ = data
    with pytest.raises(FileNotFoundError, match=r"no RLDS dataset 'libero_10_no_noops'.*holds \['libero_90_no_noops'\]"):
        RLDSChunkDataset(root, "libero_10_no_noops", chunk_len=K)
    with pytest.raises(KeyError, match="did you mean 'libero_90'"):
        dataset_spec("libero_91")


@pytest.mark.parametrize("kind", ["binning", "vq"])
def test_collator_builds_openvla_batches(data, kind):
    from openvla_vq.model.tiny import train_text_tokenizer
    from openvla_vq.model.text_tokenizer import load_text_tokenizer

    root, _ = data
    text = load_text_tokenizer(train_text_tokenizer(root / "tok", 1600))
    tok = BinningActionTokenizer(BinningConfig(vocab_size=1600)) if kind == "binning" else \
        VQActionTokenizer(VQConfig(block_out_channels=[16] * 4, norm_groups=4, layers_per_block=1, latent_dim=8, vocab_size=1600))
    ds = RLDSChunkDataset(root, "libero_90_no_noops", chunk_len=tok.chunk_len, train=False)
    samples = [s for _, s in zip(range(4), ds)]
    proc = ImageProcessor(stats=[((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ((0.5,) * 3, (0.5,) * 3)])
    batch = ActionChunkCollator(text, tok, proc, pad_token_id=1600, max_length=1024)(samples)
    assert batch["pixel_values"].shape == (4, 6, 224, 224) and batch["actions"].shape == (4, tok.chunk_len, 7)
    supervised = batch["labels"] != IGNORE_INDEX
    assert supervised.sum(1).tolist() == [tok.tokens_per_chunk + 1] * 4
    ids = tok.encode(batch["actions"])
    for i in range(4):
        assert batch["labels"][i][supervised[i]].tolist() == ids[i].tolist() + [text.eos_token_id]


def test_a_dataset_rewritten_from_other_episodes_is_read_with_its_new_actions_and_statistics(tmp_path):
    """tfds keeps an existing dataset; `overwrite` (used by the expert generator, whose attempts change with the
    expert) must replace the episodes and drop the cached statistics of the old ones."""
    from openvla_vq.data.rlds_writer import libero_episode, write_rlds
    from rlds_fixtures import episode_arrays

    def write(seed: int, overwrite: bool) -> np.ndarray:
        a = episode_arrays(seed, 10)
        write_rlds(tmp_path, "libero_90_no_noops", [libero_episode(a["images"], a["wrist"], a["states"], a["joints"],
                                                                   a["actions"], a["instruction"], "e0")], overwrite=overwrite)
        return a["actions"]

    def statistics() -> dict:
        return RLDSChunkDataset(tmp_path, "libero_90_no_noops", chunk_len=1, train=False, split="all").statistics

    first = write(1, overwrite=False)
    write(2, overwrite=False)  # kept as it was
    np.testing.assert_allclose(statistics()["action"]["q99"][:6], np.quantile(first[:, :6], 0.99, axis=0), rtol=1e-5)
    second = write(2, overwrite=True)
    np.testing.assert_allclose(statistics()["action"]["q99"][:6], np.quantile(second[:, :6], 0.99, axis=0), rtol=1e-5)
