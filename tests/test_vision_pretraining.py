"""Vision-tower pretraining: labelled frames from the LIBERO-90 simulator (sim/scene_frames.py) and the towers and
projector trained on them (training/pretrain_vision.py). The generator runs as a subprocess: TensorFlow (loaded here
by the frame preprocessing) and MuJoCo's renderer cannot share a process."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from vqvla_reference import SHARED

ASSETS = SHARED / "libero90-assets" / "assets"
REACHED_M = 0.008  # the experts' waypoint tolerance (sim/experts.py)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    if not ASSETS.is_dir():
        pytest.fail(f"LIBERO-90 assets missing at {ASSETS}")
    out = tmp_path_factory.mktemp("scene-frames")
    env = {**os.environ, "LIBERO_CONFIG_PATH": str(out / "libero_config")}
    # task 47 (cream cheese into the basket), two episodes without noise, every frame
    command = [sys.executable, "-m", "openvla_vq.sim.scene_frames", "--out", str(out / "frames"), "--tasks", "47",
               "--episodes_per_task", "2", "--every", "1", "--action_noise", "0", "--assets_dir", str(ASSETS)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return out / "frames", command, env


def test_labels_say_where_the_waypoints_are_from_the_hand_in_that_frame(frames):
    folder, _, _ = frames
    z = np.load(folder / "task47_ep000.npz")
    n = len(z["phase"])
    assert z["images"].shape == z["wrist_images"].shape == (n, 256, 256, 3)
    assert z["waypoints"].shape == (n, 6, 3) and z["gripper"].shape == (n, 2) and z["eef"].shape == (n, 3)
    # the plan is fixed once the scene settles: waypoint + hand is the same world point in every frame
    world = z["waypoints"] + z["eef"][:, None]
    np.testing.assert_allclose(world, np.broadcast_to(world[0], world.shape), atol=1e-9)
    assert np.ptp(z["eef"], axis=0).max() > 0.1, "the hand moves through the episode"
    # pick-and-place plan: approach (0) above the grasp (1), same x, y; phases run in order
    np.testing.assert_allclose(world[0, 0, :2], world[0, 1, :2])
    assert world[0, 0, 2] > world[0, 1, 2]
    # (the episode ends at LIBERO's success, in the release, before the retreat)
    assert np.all(np.diff(z["phase"]) >= 0) and z["phase"].max() == 6 and int(z["num_phases"]) == 8
    # in the frame a phase starts, the hand has reached the previous phase's waypoint (noise-free expert, unless
    # the phase ran out of steps): descend's waypoint when the grasp begins, lower's when the release begins
    for phase, waypoint in ((2, 1), (6, 4)):
        first = int(np.argmax(z["phase"] == phase))
        assert np.linalg.norm(z["waypoints"][first, waypoint]) < 2 * REACHED_M
    # the fingers are closed while lifting (phase 3), open while approaching (phase 0)
    assert z["gripper"][z["phase"] == 3][:, 0].mean() < z["gripper"][z["phase"] == 0][:, 0].mean()


def test_a_rerun_keeps_the_recorded_episodes(frames):
    folder, command, env = frames
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npz")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert before == {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npz")} and len(before) == 2


def test_pretraining_trains_the_vision_side_only_and_fits_the_labels(frames, tmp_path):
    from openvla_vq.model.prismatic import PrismaticVLA
    from openvla_vq.model.tiny import write_tiny_checkpoint
    from openvla_vq.training.pretrain_vision import pretrain

    folder, _, _ = frames
    vla = write_tiny_checkpoint(tmp_path / "vla", num_images=2)
    report = pretrain(vla, folder, tmp_path / "pretrained", steps=60, batch_size=8, learning_rate=1e-3, held_out=1,
                      save_steps=30, log_steps=10)
    before, after = PrismaticVLA.from_pretrained(vla).state_dict(), PrismaticVLA.from_pretrained(tmp_path / "pretrained").state_dict()
    assert before.keys() == after.keys()
    for name in before:
        same = torch.equal(before[name], after[name])
        if name.startswith("language_model."):
            assert same, f"{name}: pretraining must leave the language model as it was"
    for prefix in ("vision_backbone.featurizer.patch_embed", "vision_backbone.fused_featurizer.pos_embed", "projector.fc1"):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)), f"{prefix} not trained"
    losses = [row["loss"] for row in report["curve"]]
    assert len(losses) == 6 and np.mean(losses[-2:]) < 0.7 * losses[0], losses
    held = report["held_out"]["47"]
    assert held["frames"] == len(np.load(folder / "task47_ep001.npz")["phase"])
    assert 0 <= held["phase_accuracy"] <= 1 and held["waypoint_error_cm"] > 0
    assert (tmp_path / "pretrained" / "tokenizer.json").is_file() and not (tmp_path / "pretrained.state.pt").exists()


def test_bad_pretraining_inputs_are_refused_in_one_line(tmp_path):
    from bad_inputs import assert_one_line_error
    from openvla_vq.learn_libero import main

    with pytest.raises(SystemExit, match="--pretrain_vision_episodes 3: pretraining holds out 4 episodes"):
        main(["--pretrain_vision_episodes", "3", "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists(), "refused before any stage"
    me = [sys.executable, "-m", "openvla_vq.training.pretrain_vision", "--out", str(tmp_path / "out")]
    assert_one_line_error(subprocess.run(me + ["--vla", str(tmp_path)], capture_output=True, text=True),
                          "is not a VLA checkpoint")
    (tmp_path / "config.json").write_text("{}")
    assert_one_line_error(subprocess.run(me + ["--vla", str(tmp_path), "--steps", "0"], capture_output=True, text=True),
                          "each must be at least 1")
    assert_one_line_error(subprocess.run(me + ["--vla", str(tmp_path), "--frames", str(tmp_path / "none")],
                                         capture_output=True, text=True), "no labelled frames")
    frames = [sys.executable, "-m", "openvla_vq.sim.scene_frames", "--out", str(tmp_path / "frames")]
    assert_one_line_error(subprocess.run(frames + ["--every", "0"], capture_output=True, text=True), "--every 0")
    assert_one_line_error(subprocess.run(frames + ["--action_noise", "3"], capture_output=True, text=True),
                          "--action_noise 3.0 is outside")
