"""Expert LIBERO-format demonstrations: rendered in the real LIBERO-90 simulator, read by the fine-tuning pipeline.

The generator runs as a subprocess on purpose: TensorFlow (used by this test process to read the data)
and MuJoCo's EGL renderer cannot share a process.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from openvla_vq.data.rlds_dataset import RLDSChunkDataset
from simulator import ASSETS, run_simulator
from vqvla_reference import SHARED


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("libero")
    done, _ = run_simulator(COMMAND + ["--out", str(out)], out, timeout=600)
    return out, done.stdout


# task 0 (close the top drawer): the cheapest expert, about 50 steps
COMMAND = [sys.executable, "-m", "openvla_vq.sim.make_libero_rlds", "--tasks", "0", "--episodes_per_task", "1",
           "--assets_dir", str(ASSETS)]
INSTRUCTION = "close the top drawer of the cabinet"


def test_generator_writes_expert_rlds_with_every_attempt_and_its_start_state(generated):
    out, stdout = generated
    folder = out / "libero_90_experts" / "1.0.0"
    report = json.loads((folder / "generation_report.json").read_text())
    assert report["experts"] == {"0": {"attempts": 1, "successes": 1}}, "the drawer expert succeeds from a random reset"
    (row,) = report["attempts"]
    assert row["task_index"] == 0 and row["instruction"] == INSTRUCTION and row["seed"] == 100_000
    with np.load(folder / "init_states.npz") as states:
        assert sorted(states) == ["task0", "task0_body_pos", "task0_body_quat"]
        assert np.array_equal(states["task0"][0], np.asarray(row["init_state"]))
    # a fresh random reset, not one of LIBERO's fixed evaluation states (read from hf-libero's file without libero)
    import importlib.util

    import torch

    root = Path(importlib.util.find_spec("libero").submodule_search_locations[0]) / "libero"
    fixed = root / "init_files" / "libero_90" / "KITCHEN_SCENE10_close_the_top_drawer_of_the_cabinet.pruned_init"
    with torch.serialization.safe_globals([(np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
                                           np.ndarray, (np.dtype, "numpy.dtype"), np.dtypes.Float64DType]):
        fixed_states = np.asarray(torch.load(fixed, weights_only=True))
    assert np.abs(fixed_states - np.asarray(row["init_state"])).max(axis=1).min() > 1e-3
    assert "task 0: 1/1" in stdout


def test_pipeline_reads_the_rendered_episodes(generated):
    out, _ = generated
    samples = list(RLDSChunkDataset(out, "libero_90_experts", chunk_len=5, train=False, split="all"))
    assert 30 <= len(samples) <= 120
    first = samples[0]
    assert first["instruction"] == INSTRUCTION
    assert first["image"].shape == (224, 224, 3) and first["image"].std() > 10, "a rendered scene, not a blank frame"
    assert all(np.abs(s["actions"]).max() <= 1.0 for s in samples)


def test_pipeline_reads_the_wrist_camera_for_two_image_models(generated):
    """With wrist_images the samples also carry the episode's wrist frame (stored as JPEG, resized like `image`)."""
    from openvla_vq.data.images import resize_uint8

    out, _ = generated
    (attempt,) = (out / ".episodes").glob("libero_90_experts-*/task00_try000.npz")
    recorded = resize_uint8(np.load(attempt)["wrist_images"][0], 224).numpy().astype(float)
    stream = RLDSChunkDataset(out, "libero_90_experts", chunk_len=5, train=False, split="all", wrist_images=True)
    first = next(iter(stream))
    assert first["wrist_image"].shape == (224, 224, 3)
    assert np.abs(first["wrist_image"] - recorded).mean() < 3, "the wrist frame, up to JPEG"
    assert np.abs(first["image"] - recorded).mean() > 20, "not the third-person frame"


def test_frames_are_rotated_like_libero_rlds(generated):
    """The asset pack's contact sheet was rendered independently (init state 0, 10 no-op steps, rotated 180 degrees;
    one 128 px tile per task, 10 per row, the task index printed in the tile's top-left corner, which is masked)."""
    out, _ = generated
    sheet = Image.open(SHARED / "libero90-assets" / "contact_sheet.png").convert("RGB")
    row, col = divmod(0, 10)
    preview = np.asarray(sheet.crop((col * 128, row * 128, col * 128 + 128, row * 128 + 128)), np.float32)
    (attempt,) = (out / ".episodes").glob("libero_90_experts-*/task00_try000.npz")
    with np.load(attempt) as z:
        first = np.asarray(Image.fromarray(z["images"][0]).resize((128, 128), Image.Resampling.BILINEAR), np.float32)
    keep = np.ones((128, 128), bool)
    keep[:32, :48] = False
    upright, flipped = np.abs(first - preview)[keep].mean(), np.abs(first[::-1, ::-1] - preview)[keep].mean()
    assert upright < 10 and flipped > 3 * upright, (upright, flipped)


def test_rerun_resumes_from_recorded_episodes(generated):
    out, _ = generated
    done, _ = run_simulator(COMMAND + ["--out", str(out)], out, timeout=600)
    assert "task 0 attempt 0" not in done.stdout, "the recorded attempt is reused, not re-simulated"


def test_a_recorded_start_replays_the_demonstration_exactly(generated, monkeypatch):
    """The evaluation's replay of a saved start (state plus fixture layout, which LIBERO's state vector lacks: the
    cabinet is placed by moving a model body) reproduces the recorded frames under the recorded actions."""
    from openvla_vq.evaluation.env_worker import EnvWorker

    out, _ = generated
    (attempt,) = (out / ".episodes").glob("libero_90_experts-*/task00_try000.npz")
    demo = np.load(attempt)
    assert int(demo["sim_steps"]) == len(demo["actions"]), "no step was filtered: frame i follows action i-1"
    monkeypatch.setenv("LIBERO_CONFIG_PATH", str(out / "libero_config"))
    worker = EnvWorker(str(ASSETS), None, "agentview,robot0_eye_in_hand",
                       str(out / "libero_90_experts" / "1.0.0" / "init_states.npz"))
    try:
        worker.send("reset", 0, 0, 10, False)
        (image, wrist), _, _ = worker.recv()
        assert np.array_equal(image, demo["images"][0]) and np.array_equal(wrist, demo["wrist_images"][0])
        worker.send("step", demo["actions"][:20], False)
        (image, wrist), *_ = worker.recv()
        assert np.array_equal(image, demo["images"][20]) and np.array_equal(wrist, demo["wrist_images"][20])
    finally:
        worker.close()


def test_dart_noise_perturbs_what_is_executed_and_records_the_experts_action(generated):
    """--action_noise (DART): the same random reset and first frame as without noise, and the same first recorded
    action (the expert's, not the executed one); the executed noise then moves the hand off the noiseless path.
    Attempts with noise are kept apart from the noiseless ones (never reused for each other)."""
    out, _ = generated
    done, _ = run_simulator(COMMAND + ["--out", str(out), "--action_noise", "0.3", "--stage", "simulate"], out, timeout=600)
    assert "task 0 attempt 0" in done.stdout, "the noiseless attempt is not reused for a noisy run"
    attempts = sorted((out / ".episodes").glob("libero_90_experts-*/task00_try000.npz"))
    (clean,), (noisy,) = [p for p in attempts if "noise" not in p.parent.name], [p for p in attempts if "noise0.3" in str(p)]
    clean, noisy = np.load(clean), np.load(noisy)
    assert bool(noisy["success"]), "the drawer expert recovers from the noise"
    assert np.array_equal(clean["init_state"], noisy["init_state"]) and np.array_equal(clean["images"][0], noisy["images"][0])
    assert np.array_equal(clean["actions"][0], noisy["actions"][0]), "the expert's action is recorded, not the noisy one"
    hand_apart = np.linalg.norm(clean["states"][10, :3] - noisy["states"][10, :3])
    assert hand_apart > 0.005, f"after 10 noisy steps (std 1.5 cm each) the hand is only {hand_apart:.4f} m off"


def test_dart_noise_statistics():
    """Std `noise` on the position deltas, half on the rotation deltas, none on the gripper; clipped to [-1, 1]."""
    from openvla_vq.sim.make_libero_rlds import perturbed

    rng = np.random.default_rng(0)
    action = np.array([0.0, 0.5, -0.2, 0.0, 0.1, 0.0, 1.0])
    executed = np.stack([perturbed(action, 0.2, rng) for _ in range(4000)])
    np.testing.assert_allclose((executed - action)[:, :6].std(axis=0), [0.2, 0.2, 0.2, 0.1, 0.1, 0.1], rtol=0.06)
    assert (executed[:, 6] == 1.0).all() and np.abs(perturbed(np.r_[np.ones(6), -1.0], 0.5, rng)).max() <= 1.0


@pytest.mark.parametrize("task", [47, 18, 20], ids=["pick-place-in-basket", "pan-on-stove-by-handle", "turn-on-stove-knob"])
def test_expert_succeeds_and_the_hand_moves_in_every_recorded_frame(task, tmp_path):
    """LIBERO's own goal check decides success. Every kept frame moves the hand (a still scene whose label then
    changes, as while fingers close, cannot be learned from images): the largest arm action is at least 0.03."""
    command = [sys.executable, "-m", "openvla_vq.sim.make_libero_rlds", "--tasks", str(task), "--episodes_per_task", "1",
               "--max_attempts", "1", "--assets_dir", str(ASSETS), "--out", str(tmp_path), "--stage", "simulate"]
    run_simulator(command, tmp_path, timeout=600)
    (attempt,) = (tmp_path / ".episodes").glob(f"libero_90_experts-*/task{task:02d}_try000.npz")
    with np.load(attempt) as z:
        assert bool(z["success"]), f"the task {task} expert failed from its random reset"
        actions = z["actions"]
    assert np.abs(actions[:, :6]).max(axis=1).min() >= 0.03
    assert set(np.unique(actions[:, 6])) == {-1.0, 1.0}, "the expert both opens and closes the gripper"
