"""FAST (DCT + BPE, variable length) and BEAST (B-splines, fixed length) against independent expectations: the DCT-II
formula, rounding bounds, spline identities; malformed sequences are one-line errors, never zeros; constrained
generation from a random model always decodes; variable-length labels batch and train."""

import numpy as np
import pytest
import torch

from openvla_vq import load_action_tokenizer
from openvla_vq.action_tokenizers import ActionTokenizerError
from openvla_vq.action_tokenizers.beast import BeastActionTokenizer, BeastConfig
from openvla_vq.action_tokenizers.fast import FastActionTokenizer, FastConfig, dct_symbols, train_bpe
from openvla_vq.model.prismatic import IGNORE_INDEX

K, D = 5, 7


def smooth_chunks(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, K)[None, :, None]
    return (0.7 * np.sin(2 * np.pi * (t * rng.uniform(0.1, 0.8, (n, 1, D)) + rng.uniform(size=(n, 1, D))))).astype(np.float32)


@pytest.fixture(scope="module")
def fast():
    symbols = dct_symbols(smooth_chunks(3000), 10.0)
    low, high = int(symbols.min()), int(symbols.max())
    return FastActionTokenizer(FastConfig(min_symbol=low, max_symbol=high), "fast-test",
                               bpe_json=train_bpe(symbols, low, high, 1024))


def dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II written out: C[k, j] = sqrt(2/n) cos(pi (2j + 1) k / 2n), row 0 scaled by 1/sqrt(2)."""
    k, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    c = np.sqrt(2.0 / n) * np.cos(np.pi * (2 * j + 1) * k / (2 * n))
    c[0] /= np.sqrt(2.0)
    return c


def test_fast_symbols_are_the_orthonormal_dct_low_frequencies_first():
    x = smooth_chunks(16)
    scale = 1e6
    expected = np.einsum("kj,bjd->bkd", dct_matrix(K), x.astype(np.float64))  # [B, frequency, dim]
    got = dct_symbols(x, scale) / scale
    assert np.abs(got - expected.reshape(16, -1)).max() < 1e-6  # (k0 d0..d6), (k1 d0..d6), ...


def test_fast_round_trip_error_is_bounded_by_rounding(fast):
    x = smooth_chunks(500, seed=1)
    ids = fast.encode(x)
    error = (fast.decode(ids) - torch.from_numpy(x)).abs()
    # each coefficient is off by at most 0.5/scale; an orthonormal inverse keeps each dim's error norm over K steps
    assert error.max().item() <= np.sqrt(K) * 0.5 / fast.config.scale + 1e-6
    rows = fast.token_rows(ids)
    assert all(r[-1] == fast.end_id and fast.end_id not in r[:-1] for r in rows)
    assert len({len(r) for r in rows}) > 1  # genuinely variable length
    assert np.mean([len(r) for r in rows]) < K * D  # BPE merges symbols


def test_fast_malformed_sequences_are_one_line_errors_never_zeros(fast):
    ids = fast.encode(smooth_chunks(4))
    rows = fast.token_rows(ids)
    no_end = ids.clone()
    no_end[0, :] = ids[0, 0]  # the first token over the whole row: no end marker anywhere
    short = ids.clone()
    short[1, len(rows[1]) - 2] = fast.end_id  # one token dropped: too few symbols
    foreign = ids.clone()
    foreign[2, 0] = 100
    for bad, row, words in ((no_end, 0, "no end marker"), (short, 1, "DCT symbols before its end marker, expected 35"),
                            (foreign, 2, "holds id 100 at position 0, not a FAST token")):
        with pytest.raises(ActionTokenizerError) as info:
            fast.decode(bad)
        assert words in str(info.value) and f"row {row}" in str(info.value) and "\n" not in str(info.value)
        assert not bool(fast.decodable(bad)[row]) and bool(fast.decodable(bad)[3])


def test_fast_constraint_never_allows_a_dead_end(fast):
    """Random walks through the automaton: every finished sequence decodes, whatever is picked among the allowed ids."""
    constraint = fast.decoding_constraint(32000)
    gen = torch.Generator().manual_seed(0)
    state, picks = constraint.start(200, "cpu"), []
    for _ in range(constraint.max_length):
        allowed = constraint.allowed(state)
        assert bool(allowed.any(1).all())
        choice = torch.multinomial(allowed.float(), 1, generator=gen)[:, 0]
        picks.append(choice)
        state = constraint.advance(state, choice)
    assert bool(constraint.finished(state).all())
    ids = torch.stack(picks, 1)
    assert bool(fast.decodable(ids).all())
    assert fast.decode(ids).shape == (200, K, D)


def test_fast_save_load_and_disagreeing_folder(fast, tmp_path):
    fast.save(tmp_path / "fast")
    again = load_action_tokenizer(tmp_path / "fast")
    x = smooth_chunks(8)
    assert torch.equal(again.encode(x), fast.encode(x)) and again.fingerprint() == fast.fingerprint()
    import json

    config = json.loads((tmp_path / "fast" / "config.json").read_text())
    config["config"]["max_symbol"] -= 3  # the BPE's alphabet is wider than the config says
    (tmp_path / "fast" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ActionTokenizerError, match="alphabet disagrees with config.json"):
        load_action_tokenizer(tmp_path / "fast")


def test_variable_length_labels_batch_and_give_a_finite_loss(fast, tmp_path):
    from openvla_vq.data.collator import ActionChunkCollator
    from openvla_vq.model import ImageProcessor, PrismaticVLA
    from openvla_vq.model.text_tokenizer import load_text_tokenizer
    from openvla_vq.model.tiny import write_tiny_checkpoint

    folder = write_tiny_checkpoint(tmp_path / "vla")
    model = PrismaticVLA.from_pretrained(folder)
    tok = fast.for_vocab(model.config.base_vocab_size)
    x = smooth_chunks(6, seed=3)
    samples = [{"image": np.zeros((224, 224, 3), np.uint8), "instruction": "open the drawer", "actions": a} for a in x]
    text = load_text_tokenizer(folder)
    batch = ActionChunkCollator(text, tok, ImageProcessor(model.vision_backbone), model.config.pad_token_id, 1024)(samples)
    rows = tok.token_rows(tok.encode(x))
    assert len({len(r) for r in rows}) > 1
    for i, row in enumerate(rows):
        supervised = batch["labels"][i][batch["labels"][i] != IGNORE_INDEX].tolist()
        assert supervised == row + [text.eos_token_id]  # its own ids, its end marker, EOS; padding ignored
    loss = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], pixel_values=batch["pixel_values"],
                 labels=batch["labels"]).loss
    assert torch.isfinite(loss)


def test_1000_constrained_generations_of_fast_m_from_a_random_model_all_decode():
    from openvla_vq.evaluation.tokenizer_compare import random_vla, undecodable_rates

    model, text = random_vla()
    fast_m = load_action_tokenizer("fast_m")
    rates = undecodable_rates(fast_m, model, text, generations=1000)
    assert rates["constrained"]["undecodable"] == 0
    print(f"fast_m, random VLA, unconstrained: {rates['unconstrained']['undecodable']} of 1000 undecodable")
    assert rates["unconstrained"]["rate"] > 0.5  # over the whole vocabulary a random model rarely lands on FAST ids


def test_beast_basis_is_a_partition_of_unity_and_quadratics_survive_up_to_quantization():
    beast = BeastActionTokenizer(BeastConfig())
    assert torch.allclose(beast.basis.sum(1), torch.ones(K, dtype=torch.float64))
    t = np.linspace(0, 1, K)[None, :, None]
    rng = np.random.default_rng(0)
    a, b, c = (rng.uniform(-0.3, 0.3, (64, 1, D)) for _ in range(3))
    x = torch.from_numpy(a + b * t + c * t ** 2).float()  # degree 2: inside the spline space, fitted exactly
    ids = beast.encode(x)
    assert ids.shape == (64, 3 * D) and beast.tokens_per_chunk == 21
    step = 2 * beast.config.control_range / (beast.config.n_bins - 1)
    assert (beast.decode(ids) - x).abs().max().item() <= step / 2 + 1e-6  # basis weights sum to one
    with pytest.raises(ActionTokenizerError, match="need degree"):
        BeastActionTokenizer(BeastConfig(num_control_points=2, degree=2))


def test_beast_registered_and_saved_folder_checks_its_basis(tmp_path):
    beast = load_action_tokenizer("beast")
    beast.save(tmp_path / "beast")
    import json

    config = json.loads((tmp_path / "beast" / "config.json").read_text())
    config["config"]["num_control_points"] = 4
    (tmp_path / "beast" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ActionTokenizerError, match="basis"):
        load_action_tokenizer(tmp_path / "beast")
