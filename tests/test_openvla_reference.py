"""Parity with OpenVLA's own code: ../shared/openvla-reference (a tiny checkpoint in OpenVLA's layout and the outputs of
OpenVLA's HF classes for it, run unmodified with transformers 4.40.1) reproduced by our loader, processor, prompt,
training labels and loss, and predict_action. Tolerances are the reference README's for a float32 reimplementation."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from openvla_vq.action_tokenizers import load_action_tokenizer
from openvla_vq.data.collator import ActionChunkCollator
from openvla_vq.model import IGNORE_INDEX, ImageProcessor, PrismaticVLA
from openvla_vq.model.prompt import prompt_ids, training_example
from openvla_vq.model.text_tokenizer import load_text_tokenizer
from openvla_vq.policy import VLAPolicy
from openvla_reference import CHECKPOINT, GOLDENS, golden, image, loadable_copy

pytestmark = pytest.mark.skipif(not CHECKPOINT.is_dir() and not os.environ.get("CI"),
                                reason=f"OpenVLA reference pack missing: {CHECKPOINT} (clone with ../shared beside the repo)")
GOLD = golden() if CHECKPOINT.is_dir() else {}
UNNORM_KEY = "libero_90_no_noops"
NOISE = ("custom code", "trust_remote_code", "model of type", "y/N")  # what transformers 5 prints for OpenVLA folders


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return loadable_copy(tmp_path_factory.mktemp("openvla-ref") / "checkpoint")


@pytest.fixture(scope="module")
def model(folder):
    return PrismaticVLA.from_pretrained(folder).eval()


@pytest.fixture(scope="module")
def text_tokenizer(folder):
    return load_text_tokenizer(folder)


@pytest.fixture(scope="module")
def binning():
    return load_action_tokenizer("binning").for_vocab(32000)


def test_weights_are_the_reference_weights(model):
    # the reference's fingerprint: sha256 of all tensors as little-endian float32, in sorted-key order
    import hashlib

    h = hashlib.sha256()
    for key in sorted(model.state_dict()):
        h.update(model.state_dict()[key].detach().numpy().astype("<f4").tobytes())
    assert h.hexdigest() == GOLD["meta"]["model_fingerprint_sha256_f32le_sorted_keys"]


def test_pixel_values_exact(model):
    processor = ImageProcessor(model.vision_backbone)
    for name in ("img1", "img2", "img3"):
        expected = np.load(GOLDENS / GOLD["processor"][name]["npy"])
        assert np.array_equal(processor([image(name)]).numpy(), expected), name


def test_prompt_ids_with_29871(text_tokenizer):
    for prompt in GOLD["prompts"]:
        assert text_tokenizer(prompt["prompt"]).input_ids == prompt["input_ids"]
        # predict_action appends 29871 ("▁"): our prompt ends with it, and the attention covers it (openvla #58)
        assert prompt_ids(text_tokenizer, prompt["instruction"]) == prompt["input_ids_after_predict_action_append"]


def test_forward_features_and_last8_logits(model):
    pixels = ImageProcessor(model.vision_backbone)([image("img1")])
    forward = GOLD["forward"]
    with torch.no_grad():
        patches = model.vision_backbone(pixels)
        projected = model.project_patches(pixels)
        for key, mask_29871 in (("input_ids", None), ("input_ids_after_predict_action_append", True)):
            ids = torch.tensor([GOLD["prompts"][0][key]])
            logits = model(ids, torch.ones_like(ids), pixels).logits[0]
            assert logits.shape == (forward["multimodal_len"] + (1 if mask_29871 else 0), 32064)
            npy = "forward_plus29871_logits_last8.npy" if mask_29871 else forward["last8_npy"]
            np.testing.assert_allclose(logits[-8:].numpy(), np.load(GOLDENS / npy), atol=1e-4, rtol=0)
    np.testing.assert_allclose(patches.numpy(), np.load(GOLDENS / forward["patch_features"]["npy"]), atol=1e-5, rtol=0)
    np.testing.assert_allclose(projected.numpy(), np.load(GOLDENS / forward["projector_features"]["npy"]), atol=1e-5, rtol=0)


def test_training_example_ids_labels_and_loss(model, text_tokenizer, binning):
    train = GOLD["training"]
    action_ids = binning.encode(torch.tensor([[train["action"]]], dtype=torch.float32))[0]
    assert action_ids.tolist() == train["action_token_ids"]
    input_ids, labels = training_example(text_tokenizer, GOLD["prompts"][0]["instruction"], action_ids.tolist())
    assert input_ids.tolist() == train["input_ids"] and labels.tolist() == train["labels"]
    pixels = ImageProcessor(model.vision_backbone)([image("img1")])
    with torch.no_grad():
        out = model(input_ids[None], torch.ones_like(input_ids)[None], pixels, labels=labels[None])
    assert abs(float(out.loss) - train["loss"]) < 1e-4
    predicting = out.logits[0, train["predicting_logit_positions_multimodal"]]
    np.testing.assert_allclose(predicting.numpy(), np.load(GOLDENS / train["logits_npy"]), atol=1e-4, rtol=0)


def test_padded_batch_of_two_through_the_training_collator(model, text_tokenizer, binning):
    batch2 = GOLD["training_batch2"]
    collator = ActionChunkCollator(text_tokenizer, binning, ImageProcessor(model.vision_backbone),
                                   pad_token_id=model.config.pad_token_id, max_length=model.config.llm_max_length)
    samples = [{"actions": np.asarray([ex["action"]], np.float32), "instruction": ex["instruction"], "image": image(ex["image"])}
               for ex in batch2["examples"]]
    batch = collator(samples)
    assert batch["input_ids"].tolist() == batch2["padded_input_ids"]
    assert batch["labels"].tolist() == batch2["padded_labels"]
    assert batch["attention_mask"].tolist() == batch2["attention_mask"]
    assert int((batch["labels"] != IGNORE_INDEX).sum()) == 16
    with torch.no_grad():
        loss = model(batch["input_ids"], batch["attention_mask"], batch["pixel_values"], labels=batch["labels"]).loss
    assert abs(float(loss) - batch2["loss"]) < 1e-4


def test_predict_action_ids_and_actions(folder, binning):
    policy = VLAPolicy.from_pretrained(folder, binning, unnorm_key=UNNORM_KEY)
    for gen in GOLD["generation"]:
        instruction = GOLD["prompts"][gen["prompt_index"]]["instruction"]
        ids = policy.predict_ids([image(gen["image"])], [instruction])
        assert ids[0].tolist() == gen["generated_ids"]
        actions = policy.predict_action([image(gen["image"])], [instruction])
        assert actions.shape == (1, 1, 7)
        # OpenVLA un-normalizes in float64; ours is float32 (binning's decode contract), so ~1e-7 apart
        np.testing.assert_allclose(actions[0, 0], gen["unnormalized_action"], atol=1e-6, rtol=0)
    # batched: all three queries in one forward pass give the same ids
    images = [image(g["image"]) for g in GOLD["generation"]]
    texts = [GOLD["prompts"][g["prompt_index"]]["instruction"] for g in GOLD["generation"]]
    assert policy.predict_ids(images, texts).tolist() == [g["generated_ids"] for g in GOLD["generation"]]


LOAD_SILENTLY = """
import sys
from pathlib import Path
from openvla_vq.action_tokenizers import load_action_tokenizer
from openvla_vq.model.text_tokenizer import load_text_tokenizer
from openvla_vq.policy import VLAPolicy
folder = sys.argv[1]
tok = load_text_tokenizer(folder)
policy = VLAPolicy.from_pretrained(folder, load_action_tokenizer("binning"), unnorm_key="libero_90_no_noops")
print("loaded", len(tok))
"""


def test_openvla_folder_loads_silently_with_stdin_closed(folder):
    """No "[y/N]" question on stdin (auto_map), no model-type warning, no remote code: the only output is ours."""
    result = subprocess.run([sys.executable, "-c", LOAD_SILENTLY, str(folder)], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=300, env={**os.environ, "TRANSFORMERS_VERBOSITY": "info"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "loaded 32001"
    for noise in NOISE:
        assert noise not in result.stderr, result.stderr[-2000:]



def test_fine_tune_merge_and_eval_loading_of_an_openvla_folder_are_silent(folder, tmp_path):
    """finetune/lora.py, training/merge.py and the evaluation's policy loader on the OpenVLA folder, stdin closed."""
    from rlds_fixtures import write_libero_like

    write_libero_like(tmp_path / "data", episodes=2, length=8)
    env = {**os.environ, "OMP_NUM_THREADS": "2", "TRANSFORMERS_VERBOSITY": "info"}
    repo = Path(__file__).resolve().parents[1]
    train = subprocess.run(
        [sys.executable, str(repo / "finetune" / "lora.py"), "--vla_path", str(folder), "--data_root_dir", str(tmp_path / "data"),
         "--run_root_dir", str(tmp_path / "runs"), "--tokenizer", "binning", "--run_id", "ref", "--batch_size", "2",
         "--max_steps", "2", "--save_steps", "2", "--shuffle_buffer_size", "10"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600, env=env, cwd=repo)
    assert train.returncode == 0, train.stderr[-3000:]
    step = tmp_path / "runs" / "ref" / "checkpoints" / "step_00000002"
    merge = subprocess.run([sys.executable, "-m", "openvla_vq.training.merge", str(step), "--out", str(tmp_path / "merged")],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600, env=env, cwd=repo)
    assert merge.returncode == 0, merge.stderr[-3000:]
    load = subprocess.run([sys.executable, "-c", "import sys; from openvla_vq.policy import load_policy; "
                           "[load_policy(p, unnorm_key='libero_90_no_noops') for p in sys.argv[1:]]", str(step), str(tmp_path / "merged")],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600, env=env, cwd=repo)
    assert load.returncode == 0, load.stderr[-3000:]
    for result in (train, merge, load):
        for noise in NOISE:
            assert noise not in result.stdout + result.stderr, (result.args, (result.stdout + result.stderr)[-2000:])
