"""The memorisation guard: a train/eval mismatch cannot hide behind good training metrics.

One expert demonstration (task 0: close the top drawer of the cabinet, about 50 steps) is rendered from a random
reset; a tiny VLA is trained from scratch on it through finetune/lora.py with `binning` until it is memorised; then
eval/libero90.py replays that demonstration's saved starting state closed loop: it must succeed, and its first
actions must be the demonstration's (within 0.1, gripper sign equal), which needs the two data paths to agree on
image orientation, crop / resize / JPEG, normalization statistics and the gripper's sign. Two exact checks catch
what a successful replay can hide: the evaluation's first model input is the training image pixel for pixel, and
its first chunk is the one training taught. The README ("Learning shown in the simulator") lists which mismatches,
broken on the evaluation side only (tests/guard_breaks.py), made which check fail.
The same runs with `beast` (five actions per query, 0.010 round-trip L1 on these chunks), which also covers the
order of actions within a chunk.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from vqvla_reference import SHARED

ASSETS = SHARED / "libero90-assets" / "assets"
TASK = 0


@pytest.fixture(scope="module", params=["binning", "beast"])
def memorised(request, tmp_path_factory):
    """binning (one action per query) and beast (five per query, so chunk order matters), each memorised."""
    from openvla_vq.model.tiny import write_tiny_checkpoint

    if not ASSETS.is_dir():
        pytest.fail(f"LIBERO-90 asset pack missing at {ASSETS}")
    out = tmp_path_factory.mktemp("guard")
    env = {**os.environ, "LIBERO_CONFIG_PATH": str(out / "libero_config")}

    def run(*cmd: str, timeout: int = 900) -> str:
        done = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, env=env, timeout=timeout)
        assert done.returncode == 0, done.stderr[-3000:]
        return done.stdout

    run("-m", "openvla_vq.sim.make_libero_rlds", "--out", str(out / "data"), "--tasks", str(TASK), "--episodes_per_task", "1",
        "--assets_dir", str(ASSETS))
    write_tiny_checkpoint(out / "vla")
    run("finetune/lora.py", "--vla_path", str(out / "vla"), "--data_root_dir", str(out / "data"), "--dataset_name",
        "libero_90_experts", "--tokenizer", request.param, "--run_root_dir", str(out / "runs"), "--run_id", "guard",
        "--batch_size", "16", "--max_steps", "1000", "--save_steps", "1000", "--log_steps", "100", "--learning_rate", "3e-3",
        "--shuffle_buffer_size", "2000", "--image_aug", "false", "--train_modules", "lm_head", "--lr_schedule", "cosine")
    run("eval/libero90.py", "--checkpoint", str(out / "runs" / "guard" / "checkpoints" / "step_00001000"), "--tasks", str(TASK),
        "--trials", "1", "--init_states_file", str(out / "data" / "libero_90_experts" / "1.0.0" / "init_states.npz"),
        "--max_steps", "200", "--out_dir", str(out / "eval"), "--assets_dir", str(ASSETS), "--videos_per_task", "0",
        "--save_actions", "true", "--save_first_inputs", "true")
    return out


FOLLOWED_STEPS = 12  # the replay tracks the demonstration this long before small differences add up


def replay_error(executed: np.ndarray, demo: np.ndarray, steps: int = FOLLOWED_STEPS) -> float:
    """Largest |executed - demonstrated| over the first steps (arm dims), +inf where the gripper's sign differs."""
    if np.any(np.sign(executed[:steps, 6]) != np.sign(demo[:steps, 6])):
        return float("inf")
    return float(np.abs(executed[:steps, :6] - demo[:steps, :6]).max())


def test_a_memorised_demonstration_replays_to_success_closed_loop(memorised):
    results = json.loads((memorised / "eval" / "results.json").read_text())
    demo = json.loads((memorised / "data" / "libero_90_experts" / "1.0.0" / "generation_report.json").read_text())
    assert demo["experts"] == {str(TASK): {"attempts": 1, "successes": 1}}
    assert results["protocol"]["init_states"].endswith("init_states.npz")
    episode = results["tasks"][str(TASK)]
    assert episode["successes"] == 1, f"the memorised demonstration failed closed loop: {episode}"
    # success alone is a weak witness (a drawer can be shut by many motions): the replay must also act as taught
    (attempt,) = (memorised / "data" / ".episodes").glob(f"libero_90_experts-*/task{TASK:02d}_try000.npz")
    executed = np.load(memorised / "eval" / "actions" / f"task{TASK:02d}_trial00.npy")
    error = replay_error(executed, np.load(attempt)["actions"])
    assert error < 0.1, f"closed loop, the first {FOLLOWED_STEPS} actions differ from the demonstration's by {error}"


def first_training_sample(memorised, chunk_len: int) -> dict:
    """Frame 0 of the demonstration as fine-tuning read it: the 224 px image the model was given, and its action
    chunk normalized with the run's statistics."""
    from openvla_vq.data.rlds_dataset import RLDSChunkDataset

    frames = RLDSChunkDataset(memorised / "data", "libero_90_experts", chunk_len=chunk_len, split="all", train=False)
    return next(iter(frames))


def test_the_first_image_the_evaluation_gives_the_model_is_the_training_image_pixel_for_pixel(memorised):
    """From the demonstration's own start, the evaluation's first model input (render, rotation, JPEG round trip,
    resize, crop) must be the image fine-tuning read for frame 0. Catches every image mismatch at once, also those
    too small to change the replay (bilinear instead of lanczos resize)."""
    import imageio.v3 as iio

    given = iio.imread(memorised / "eval" / "inputs" / f"task{TASK:02d}_trial00.png")
    trained = first_training_sample(memorised, chunk_len=1)["image"]
    assert given.shape == trained.shape, f"the evaluation gave the model {given.shape} images, training {trained.shape}"
    differing = float(np.mean(given != trained))
    assert differing == 0.0, f"{differing:.1%} of the first image's pixel values differ from the training image's"


def test_the_first_query_executes_the_taught_chunk_exactly(memorised):
    """The first executed chunk must be the demonstration's first chunk as training taught it: normalized with the
    run's q01/q99, through the tokenizer and back, unnormalized by OpenVLA's formula (written out here), the
    gripper in LIBERO's sign. A replay within 0.1 of the demonstration misses statistics that are slightly off
    (min/max instead of q01/q99 moves this demonstration's first action by 0.03)."""
    import torch

    from openvla_vq.action_tokenizers import load_action_tokenizer

    run = memorised / "runs" / "guard"
    tokenizer = load_action_tokenizer(json.loads((run / "checkpoints" / "step_00001000" / "action_tokenizer.json").read_text())["spec"])
    stats = json.loads((run / "dataset_statistics.json").read_text())["libero_90_experts"]["action"]
    normalized = torch.tensor(first_training_sample(memorised, tokenizer.chunk_len)["actions"])[None]
    taught = tokenizer.decode(tokenizer.encode(normalized))[0].numpy()
    q01, q99, mask = (np.asarray(stats[k]) for k in ("q01", "q99", "mask"))
    expected = np.where(mask, 0.5 * (taught + 1) * (q99 - q01) + q01, taught)
    (attempt,) = (memorised / "data" / ".episodes").glob(f"libero_90_experts-*/task{TASK:02d}_try000.npz")
    demo = np.load(attempt)["actions"][:tokenizer.chunk_len]
    executed = np.load(memorised / "eval" / "actions" / f"task{TASK:02d}_trial00.npy")[:tokenizer.chunk_len]
    np.testing.assert_allclose(executed[:, :6], expected[:, :6], atol=1e-5, err_msg="arm dimensions of the first chunk")
    np.testing.assert_array_equal(executed[:, 6], np.sign(demo[:, 6]), err_msg="gripper of the first chunk (LIBERO's sign)")


def test_the_eval_policy_call_in_bf16_chooses_the_same_ids_on_the_trained_checkpoint(memorised):
    """The eval's policy call (preprocess_image -> predict_action) in bfloat16, as eval/libero90.py runs it on GPU,
    against float32 on a fixed batch: the demonstration's frames. Rounding to bfloat16 may flip a near tie: BEAST's
    memorised model once chose 1495 against 1516 for one coefficient of 1 of 13 frames on a machine where float32 and
    bfloat16 disagreed there. A broken bfloat16 path (a lost scale, an adapter not merged) shifts every frame's logits,
    not one tie, so all but one frame must choose the same ids, and the frames that do must decode to the same actions.
    tests/guard_breaks.py --tables bf16 shows it: those breaks change 12-13 of 13 frames; changes of rounding only
    (truncating to bfloat16, an argmax over bfloat16 logits) pass, as they do not change this policy's choices."""
    import torch

    from openvla_vq.data.rlds_dataset import RLDSChunkDataset
    from openvla_vq.data.preprocess import preprocess_image
    from openvla_vq.policy import load_policy

    checkpoint = memorised / "runs" / "guard" / "checkpoints" / "step_00001000"
    frames = list(RLDSChunkDataset(memorised / "data", "libero_90_experts", chunk_len=1, split="all", train=False))[::4][:16]
    images = [preprocess_image(f["image"], crop=False) for f in frames]
    instructions = [f["instruction"] for f in frames]
    policies = {dtype: load_policy(checkpoint, dtype=dtype)[0] for dtype in (torch.float32, torch.bfloat16)}
    ids = {dtype: p.predict_ids(images, instructions) for dtype, p in policies.items()}
    same = (ids[torch.float32] == ids[torch.bfloat16]).all(dim=1).numpy()
    assert same.sum() >= len(same) - 1, f"bfloat16 chose other ids than float32 on {(~same).sum()} of {len(same)} frames"
    actions = {dtype: p.predict_action(images, instructions) for dtype, p in policies.items()}
    np.testing.assert_array_equal(actions[torch.float32][same], actions[torch.bfloat16][same])  # same ids, same actions
