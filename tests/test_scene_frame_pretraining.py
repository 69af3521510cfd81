"""Pretraining on labelled frames from the LIBERO-90 simulator (sim/scene_frames.py): the vision towers and projector
through linear heads (training/pretrain_vision.py), and the whole VLA answering where the waypoints are in OpenVLA's
bins (training/pretrain_vla.py). The generator runs as a subprocess: TensorFlow (loaded here by the frame
preprocessing) and MuJoCo's renderer cannot share a process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from simulator import ASSETS, run_simulator
REACHED_M = 0.008  # the experts' waypoint tolerance (sim/experts.py)


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    out = tmp_path_factory.mktemp("scene-frames")
    # task 47 (cream cheese into the basket), two episodes without noise, every frame
    command = [sys.executable, "-m", "openvla_vq.sim.scene_frames", "--out", str(out / "frames"), "--tasks", "47",
               "--episodes_per_task", "2", "--every", "1", "--action_noise", "0", "--assets_dir", str(ASSETS)]
    _, env = run_simulator(command, out, timeout=900)
    return out / "frames", command, env


def assert_fitted_and_saved(report: dict, frames_folder, out) -> None:
    """The loss fell by more than 30% over six logged points; the report measured the held-out episode; the folder
    carries the text tokenizer and no resume state is left."""
    losses = [row["loss"] for row in report["curve"]]
    assert len(losses) == 6 and np.mean(losses[-2:]) < 0.7 * losses[0], losses
    held = report["held_out"]["47"]
    assert held["frames"] == len(np.load(frames_folder / "task47_ep001.npz")["phase"])
    assert 0 <= held["phase_accuracy"] <= 1 and held["waypoint_error_cm"] > 0
    assert (out / "tokenizer.json").is_file() and not out.with_name(out.name + ".state.pt").exists()


def test_labels_say_where_the_waypoints_are_from_the_hand_in_that_frame(frames):
    folder, _, _ = frames
    z = np.load(folder / "task47_ep000.npz")
    n = len(z["phase"])
    assert z["images"].shape == z["wrist_images"].shape == (n, 256, 256, 3)
    assert z["waypoints"].shape == (n, 6, 3) and z["gripper"].shape == (n, 2) and z["eef"].shape == (n, 3)
    assert str(z["instruction"]) == "pick up the cream cheese box and put it in the basket"  # LIBERO-90 task 47
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
    assert_fitted_and_saved(report, folder, tmp_path / "pretrained")


def test_vla_pretraining_answers_in_openvla_bins_and_trains_the_whole_model(frames, tmp_path):
    from openvla_vq.model.prismatic import IGNORE_INDEX, PrismaticVLA
    from openvla_vq.model.text_tokenizer import load_text_tokenizer
    from openvla_vq.model.tiny import write_tiny_checkpoint
    from openvla_vq.model.vision import ImageProcessor
    from openvla_vq.training.pretrain_vision import load_frames
    from openvla_vq.training.pretrain_vla import WAYPOINT_RANGE_M, Answers, pretrain

    folder, _, _ = frames
    vla = write_tiny_checkpoint(tmp_path / "vla", num_images=2)
    model, text_tokenizer = PrismaticVLA.from_pretrained(vla), load_text_tokenizer(vla)
    vocab = model.config.base_vocab_size
    answers = Answers(load_frames(folder, 2, held_out=1), text_tokenizer, ImageProcessor(model.vision_backbone), vocab,
                      model.config.pad_token_id, 1024)
    batch = answers.batch(47, "train", np.array([0, 40]))
    # the answer, written out: phase over 8 phases, fingers over 4 cm, 6 waypoints minus the hand per 0.3 m, each
    # in OpenVLA's bins (id = vocab - digitize(v, linspace(-1, 1, 256))), then EOS
    z = np.load(folder / "task47_ep000.npz")
    for row, frame in enumerate((0, 40)):
        values = np.concatenate([[2 * z["phase"][frame] / 7 - 1, 2 * z["gripper"][frame, 0] / 0.04 - 1],
                                 np.clip(z["waypoints"][frame].ravel() / WAYPOINT_RANGE_M, -1, 1)])
        expected = list(vocab - np.digitize(values, np.linspace(-1, 1, 256))) + [text_tokenizer.eos_token_id]
        labels = batch["labels"][row]
        assert labels[labels != IGNORE_INDEX].tolist() == expected
        question = text_tokenizer.decode(batch["input_ids"][row][labels == IGNORE_INDEX], skip_special_tokens=True)
        assert question.strip() == ("In: Where are the waypoints to pick up the cream cheese box and put it in the "
                                    "basket, from the hand?\nOut:")
    report = pretrain(vla, folder, tmp_path / "pretrained", steps=150, batch_size=8, learning_rate=3e-3, held_out=1,
                      save_steps=75, log_steps=25)
    before, after = model.state_dict(), PrismaticVLA.from_pretrained(tmp_path / "pretrained").state_dict()
    for prefix in ("language_model.model.layers.0.self_attn", "language_model.lm_head", "language_model.model.embed_tokens",
                   "vision_backbone.featurizer.patch_embed", "projector.fc1"):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix)), f"{prefix} not trained"
    assert_fitted_and_saved(report, folder, tmp_path / "pretrained")


def test_cotraining_asks_the_question_beside_the_actions_so_the_fine_tune_learns_the_answer_too(frames, tmp_path):
    """finetune/lora.py --cotrain_frames: the same fine-tune from the same random VLA, with and without the question
    on the frames; afterwards the pretraining's question is asked on the frames of the held-out episode, which
    neither fine-tune saw. The action answers share the bin ids, so both runs move towards the answer; the
    co-trained one, which also learned the question, answers with a loss at least 20% lower."""
    from openvla_vq.model.text_tokenizer import load_text_tokenizer
    from openvla_vq.model.tiny import write_tiny_checkpoint
    from openvla_vq.training.config import FinetuneConfig
    from openvla_vq.training.finetune import finetune
    from openvla_vq.training.merge import merged_model
    from openvla_vq.training.pretrain_vla import forward, load_answers
    from rlds_fixtures import write_libero_like

    folder, _, _ = frames
    write_libero_like(tmp_path / "data", episodes=4, length=12)
    vla = write_tiny_checkpoint(tmp_path / "vla", num_images=2)
    base = dict(vla_path=str(vla), data_root_dir=tmp_path / "data", run_root_dir=tmp_path / "runs", batch_size=4,
                max_steps=100, save_steps=100, log_steps=20, learning_rate=3e-3, train_modules="lm_head", image_aug=False,
                shuffle_buffer_size=40, lr_schedule="cosine")
    losses = {}
    for run_id, extra in (("actions", {}), ("cotrained", {"cotrain_frames": folder, "cotrain_held_out": 1})):
        run_dir = finetune(FinetuneConfig(**base, run_id=run_id, **extra))
        checkpoint = run_dir / "checkpoints" / "step_00000100"
        model = merged_model(checkpoint, json.loads((checkpoint / "run_config.json").read_text())).eval()
        answers = load_answers(folder, model, load_text_tokenizer(vla), held_out=1)
        with torch.no_grad():
            held_out = answers.batch(47, "held_out", np.arange(len(answers.frames[47]["held_out"]["phase"])))
            losses[run_id] = forward(model, held_out).loss.item()
    assert losses["cotrained"] < 0.8 * losses["actions"], losses  # without the question the two runs are identical


def test_a_cotrained_fine_tune_killed_and_resumed_ends_with_the_uninterrupted_runs_weights(frames, tmp_path):
    """The questions are drawn from the data position the checkpoint keeps: after SIGKILL and --resume true, the run
    asks what the uninterrupted one asked, and ends bitwise where it ends."""
    from safetensors.torch import load_file

    from interrupt import kill_after_checkpoint
    from openvla_vq.model.tiny import write_tiny_checkpoint
    from rlds_fixtures import write_libero_like

    folder, _, _ = frames
    write_libero_like(tmp_path / "data", episodes=4, length=12)
    vla = write_tiny_checkpoint(tmp_path / "vla", num_images=2)
    script = Path(__file__).resolve().parents[1] / "finetune" / "lora.py"

    def command(run_id: str) -> list[str]:
        return [sys.executable, str(script), "--vla_path", str(vla), "--data_root_dir", str(tmp_path / "data"),
                "--run_root_dir", str(tmp_path / "runs"), "--run_id", run_id, "--batch_size", "2", "--max_steps", "20",
                "--save_steps", "10", "--log_steps", "5", "--shuffle_buffer_size", "40", "--cotrain_frames", str(folder),
                "--cotrain_batch_size", "4", "--cotrain_held_out", "1"]

    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    assert subprocess.run(command("whole"), capture_output=True, env=env, timeout=900).returncode == 0
    checkpoints = tmp_path / "runs" / "killed" / "checkpoints"
    kill_after_checkpoint(command("killed"), checkpoints / "step_00000010", env)
    assert (checkpoints / "step_00000010").is_dir() and not (checkpoints / "step_00000020").exists()
    resumed = subprocess.run(command("killed") + ["--resume", "true"], capture_output=True, text=True, env=env, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = (load_file(str(tmp_path / "runs" / run / "checkpoints" / "step_00000020" / "adapter" / "adapter_model.safetensors"))
            for run in ("whole", "killed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_pretraining_inputs_are_refused_in_one_line(tmp_path):
    from bad_inputs import assert_one_line_error
    from openvla_vq.learn_libero import main

    with pytest.raises(SystemExit, match="--pretrain_vision_episodes 3: pretraining holds out 4 episodes"):
        main(["--pretrain_vision_episodes", "3", "--out", str(tmp_path / "run")])
    assert not (tmp_path / "run").exists(), "refused before any stage"
    for module in ("pretrain_vision", "pretrain_vla"):
        me = [sys.executable, "-m", f"openvla_vq.training.{module}", "--out", str(tmp_path / "out")]
        assert_one_line_error(subprocess.run(me + ["--vla", str(tmp_path)], capture_output=True, text=True),
                              "is not a VLA checkpoint")
    (tmp_path / "config.json").write_text("{}")
    assert_one_line_error(subprocess.run(me + ["--vla", str(tmp_path), "--steps", "0"], capture_output=True, text=True),
                          "each must be at least 1")
    assert_one_line_error(subprocess.run(me + ["--vla", str(tmp_path), "--frames", str(tmp_path / "none")],
                                         capture_output=True, text=True), "no labelled frames")
    # frames recorded before the recorder kept the instruction
    from openvla_vq.model.tiny import write_tiny_checkpoint

    old = tmp_path / "old-frames"
    old.mkdir()
    np.savez(old / "task47_ep000.npz", images=np.zeros((1, 256, 256, 3), np.uint8), wrist_images=np.zeros((1, 256, 256, 3), np.uint8),
             waypoints=np.zeros((1, 6, 3)), phase=np.zeros(1, np.int64), gripper=np.zeros((1, 2)), eef=np.zeros((1, 3)),
             num_phases=8)
    np.savez(old / "task47_ep001.npz", **np.load(old / "task47_ep000.npz"))
    vla = write_tiny_checkpoint(tmp_path / "vla", num_images=2)
    done = subprocess.run([sys.executable, "-m", "openvla_vq.training.pretrain_vla", "--vla", str(vla), "--frames",
                           str(old), "--held_out", "1", "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert_one_line_error(done, "has no instruction")
    frames = [sys.executable, "-m", "openvla_vq.sim.scene_frames", "--out", str(tmp_path / "frames")]
    assert_one_line_error(subprocess.run(frames + ["--every", "0"], capture_output=True, text=True), "--every 0")
    assert_one_line_error(subprocess.run(frames + ["--action_noise", "3"], capture_output=True, text=True),
                          "--action_noise 3.0 is outside")
