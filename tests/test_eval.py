"""LIBERO-90 evaluation: protocol pieces against independent values, and a 2-process smoke run killed and resumed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from openvla_vq.evaluation.compare import compare
from openvla_vq.evaluation.ensemble import TemporalEnsemble
from openvla_vq.evaluation.report import wilson_interval
from openvla_vq.sim.protocol import MUJOCO_VERSION, gripper_to_env, mujoco_version_warning
from openvla_vq.evaluation.records import EpisodeLog, read_records
from openvla_vq.model.tiny import write_tiny_checkpoint
from bad_inputs import assert_one_line_error, disagreeing_tokenizer, truncate
from vqvla_reference import SHARED

REPO = Path(__file__).resolve().parents[1]
ASSETS = SHARED / "libero90-assets" / "assets"
TASKS = [38, 39, 86, 87, 88, 89]


def test_wilson_interval_matches_textbook_values():
    assert wilson_interval(0, 1) == pytest.approx((0.0, 0.7935), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(45, 50) == pytest.approx((0.7864, 0.9565), abs=1e-4)


def test_gripper_follows_openvla_post_processing():
    actions = np.zeros((4, 7), np.float32)
    actions[:, 6] = [1.0, 0.0, 0.8, 0.2]  # 1 = open in the training data
    assert gripper_to_env(actions)[:, 6].tolist() == [-1.0, 1.0, -1.0, 1.0]  # LIBERO: -1 open, +1 close


def test_temporal_ensemble_averages_every_chunk_that_predicts_the_step():
    """ACT's rule worked by hand: the chunk queried at step s predicts step s + j with the value 100 s + j, so at step
    t the predictions are 100 s + (t - s) for the K queries s = t-K+1 .. t, weighted exp(-m i), i = 0 the oldest."""
    def run(m: float, steps: int) -> list[float]:
        ensemble = TemporalEnsemble(chunk_len=3, weight_decay=m)
        return [float(ensemble.step(np.array([[100.0 * s + j] for j in range(3)]))[0]) for s in range(steps)]

    assert run(0.0, 6) == pytest.approx([0.0, (1 + 100) / 2, (2 + 101 + 200) / 3, (102 + 201 + 300) / 3,
                                         (202 + 301 + 400) / 3, (302 + 401 + 500) / 3])
    # m = ln 2: weights 1, 1/2, 1/4 from the oldest prediction to the newest
    assert run(np.log(2), 6)[-1] == pytest.approx((302 + 401 / 2 + 500 / 4) / 1.75)
    # a chunk of one action (binning) is executed as predicted
    assert TemporalEnsemble(chunk_len=1).step(np.array([[0.3, -0.2]])) == pytest.approx([0.3, -0.2])
    # the gripper (model space, 1 = open) is averaged, then OpenVLA's sign: the weighted majority
    ensemble = TemporalEnsemble(chunk_len=3, weight_decay=0.0)
    for gripper in (0.9, 0.8, 0.1):
        action = ensemble.step(np.full((3, 1), gripper))
    assert gripper_to_env(action[None])[0, -1] == -1.0  # two of three predictions say open: LIBERO's -1


def test_records_survive_a_cut_line(tmp_path):
    log = EpisodeLog(tmp_path, 0)
    log.append({"task": 1, "trial": 0, "success": True})
    log.close()
    with open(tmp_path / "rank0.jsonl", "a") as f:
        f.write('{"task": 2, "tri')  # killed mid-write
    assert [r["task"] for r in read_records(tmp_path)] == [1]
    log = EpisodeLog(tmp_path, 0)
    log.append({"task": 2, "trial": 0, "success": False})
    log.close()
    assert [r["task"] for r in read_records(tmp_path)] == [1, 2]


@pytest.fixture(scope="module")
def tiny_policy_folder(tmp_path_factory):
    folder = write_tiny_checkpoint(tmp_path_factory.mktemp("eval") / "tiny", base_vocab_size=1600)
    stats = {"libero_90_no_noops": {"action": {"q01": [-0.9, -0.9, -0.9, -0.1, -0.1, -0.2, 0.0],
                                               "q99": [0.9, 0.9, 0.9, 0.1, 0.1, 0.2, 1.0], "mask": [True] * 6 + [False]}}}
    (folder / "dataset_statistics.json").write_text(json.dumps(stats))
    (folder / "action_tokenizer.json").write_text(json.dumps({"spec": "binning"}))
    return folder


def test_two_process_smoke_eval_killed_and_resumed(tiny_policy_folder, tmp_path):
    if not ASSETS.is_dir():
        pytest.fail(f"LIBERO test assets missing at {ASSETS}")
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(REPO / "eval" / "libero90.py"),
           "--checkpoint", str(tiny_policy_folder), "--tasks", ",".join(map(str, TASKS)), "--trials", "1", "--max_steps", "6",
           "--out_dir", str(out), "--assets_dir", str(ASSETS), "--videos_per_task", "1"]
    env = {**os.environ, "LIBERO_CONFIG_PATH": str(tmp_path / "libero_config")}
    first = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 400
    while time.time() < deadline and first.poll() is None and len(read_records(out / "episodes")) < 2:
        time.sleep(0.2)
    os.killpg(first.pid, signal.SIGKILL)  # the launcher, both ranks and their env workers
    first.wait()
    done_before = read_records(out / "episodes")
    assert 2 <= len(done_before) < len(TASKS), "killed midway"
    second = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stderr[-3000:]
    records = read_records(out / "episodes")
    pairs = [(r["task"], r["trial"]) for r in records]
    assert sorted(pairs) == [(t, 0) for t in TASKS], "every episode exactly once"
    assert {r["rank"] for r in records} == {0, 1}
    results = json.loads((out / "results.json").read_text())
    assert results["missing_episodes"] == 0 and results["overall"]["episodes"] == len(TASKS)
    assert results["protocol"]["num_steps_wait"] == 10 and results["protocol"]["center_crop"] is True
    assert len(results["checkpoint_sha256"]) == 64 and results["packages"]["hf-libero"] == "0.1.4"
    # the MuJoCo of the published LIBERO numbers is what setup.py pins, recorded, and no version warning printed
    assert results["mujoco"] == {"installed": MUJOCO_VERSION, "published_libero_numbers": "3.3.2"}
    assert "warning: MuJoCo" not in second.stderr
    assert len((out / "tasks.csv").read_text().splitlines()) == 1 + len(TASKS)
    assert (out / "success.png").stat().st_size > 1000 and list((out / "videos").glob("*.mp4"))
    table = compare([out, out], tmp_path / "compare")
    assert table.count("| eval | binning | 6 |") == 2 and (tmp_path / "compare" / "compare.png").is_file()


def test_mujoco_version_warning_is_one_line(monkeypatch):
    import importlib.metadata

    assert mujoco_version_warning() is None  # the pinned version is installed
    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "3.8.1" if name == "mujoco" else real(name))
    line = mujoco_version_warning()
    assert line.count("\n") == 0 and "3.8.1" in line and "mujoco==3.3.2" in line


def test_environment_faults_end_episodes_and_the_run_goes_on(tiny_policy_folder, tmp_path):
    """A task that raises in reset on every attempt and a worker that SIGKILLs itself: both episodes are recorded
    once as failures with their error, a fresh worker takes over, and the other episodes run normally."""
    out = tmp_path / "eval"
    env = {**os.environ, "LIBERO_CONFIG_PATH": str(tmp_path / "libero_config"),
           "OPENVLA_VQ_INJECT_FAULTS": "raise@87:0,kill@88:0"}
    cmd = [sys.executable, str(REPO / "eval" / "libero90.py"), "--checkpoint", str(tiny_policy_folder), "--tasks", "86,87,88,89",
           "--trials", "1", "--max_steps", "4", "--out_dir", str(out), "--assets_dir", str(ASSETS), "--videos_per_task", "0"]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    records = {(r["task"], r["trial"]): r for r in read_records(out / "episodes")}
    assert sorted(records) == [(86, 0), (87, 0), (88, 0), (89, 0)] and len(read_records(out / "episodes")) == 4
    assert "injected fault in reset of task 87" in records[(87, 0)]["error"] and not records[(87, 0)]["success"]
    assert "env worker died (exit code -9)" in records[(88, 0)]["error"] and not records[(88, 0)]["success"]
    assert "error" not in records[(86, 0)] and records[(89, 0)]["steps"] == 4, "episodes after the faults run normally"
    results = json.loads((out / "results.json").read_text())
    assert results["overall"]["episodes"] == 4 and results["overall"]["errors"] == 2
    assert results["tasks"]["87"]["errors"] == 1 and results["tasks"]["86"]["errors"] == 0
    assert done.stderr.count("episode ended by an environment fault") == 2


def test_bad_eval_input_is_one_line_without_traceback(tiny_policy_folder, tmp_path):
    import shutil

    corrupt = tmp_path / "corrupt"
    shutil.copytree(tiny_policy_folder, corrupt)
    truncate(corrupt / "model.safetensors")
    not_checkpoint = tmp_path / "empty"
    not_checkpoint.mkdir()
    import numpy as np

    states = tmp_path / "init_states.npz"
    np.savez(states, task3=np.zeros((2, 9)))
    cases = {
        "init_states.npz has fewer than --trials 3 states for tasks {3: 2, 4: 0}":
            ["--checkpoint", str(tiny_policy_folder), "--tasks", "3,4", "--trials", "3", "--init_states_file", str(states)],
        "--init_states_file": ["--checkpoint", str(tiny_policy_folder), "--init_states_file", str(tmp_path / "none.npz")],
        "does not exist": ["--checkpoint", str(tmp_path / "nowhere")],
        "is not a checkpoint": ["--checkpoint", str(not_checkpoint)],
        "task indices run from 0 to 89": ["--checkpoint", str(tiny_policy_folder), "--tasks", "3,90"],
        "fixed initial states; pass 1 to 50": ["--checkpoint", str(tiny_policy_folder), "--trials", "51"],
        "has no scenes/": ["--checkpoint", str(tiny_policy_folder), "--assets_dir", str(tmp_path)],
        "model.safetensors is not a readable safetensors file": ["--checkpoint", str(corrupt), "--assets_dir", str(ASSETS)],
        "shape mismatch": ["--checkpoint", str(tiny_policy_folder), "--tokenizer", str(disagreeing_tokenizer(tmp_path / "vq-disagrees"))],
        "--temporal_ensemble queries every step": ["--checkpoint", str(tiny_policy_folder), "--temporal_ensemble", "true",
                                                   "--actions_per_query", "5"],
    }
    env = {**os.environ, "LIBERO_CONFIG_PATH": str(tmp_path / "libero_config")}
    for expected, cli in cases.items():
        done = subprocess.run([sys.executable, str(REPO / "eval" / "libero90.py"), *cli, "--out_dir", str(tmp_path / "out")],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
        assert_one_line_error(done, expected)


@pytest.mark.parametrize("tokenizer", ["fast_m", "beast"])
def test_more_tokenizers_run_through_the_harness_unchanged(tiny_policy_folder, tmp_path, tokenizer):
    """--tokenizer fast_m (variable length) and beast through eval/libero90.py: every query decodes (an undecodable
    sequence would end the run with an error), and the report measures the ids FAST actually emitted."""
    out = tmp_path / "eval"
    done = subprocess.run([sys.executable, str(REPO / "eval" / "libero90.py"), "--checkpoint", str(tiny_policy_folder),
                           "--tokenizer", tokenizer, "--tasks", "86", "--trials", "1", "--max_steps", "10", "--out_dir", str(out),
                           "--assets_dir", str(ASSETS), "--videos_per_task", "0"],
                          cwd=REPO, env={**os.environ, "LIBERO_CONFIG_PATH": str(tmp_path / "libero_config")},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    (record,) = read_records(out / "episodes")
    assert "error" not in record and record["steps"] == 10 and record["queries"] == 2  # 5 actions per query
    tok = results["tokenizer"]
    assert tok["name"] == tokenizer and tok["chunk_len"] == 5
    if tokenizer == "beast":
        assert tok["tokens_per_chunk"] == tok["max_tokens_per_chunk"] == 21
    else:
        assert 2 <= tok["tokens_per_chunk"] <= tok["max_tokens_per_chunk"] == 36


def test_temporal_ensemble_queries_every_step(tiny_policy_folder, tmp_path):
    """--temporal_ensemble with a five-action tokenizer: one query per executed step, recorded in the report."""
    out = tmp_path / "eval"
    done = subprocess.run([sys.executable, str(REPO / "eval" / "libero90.py"), "--checkpoint", str(tiny_policy_folder),
                           "--tokenizer", "beast", "--tasks", "86", "--trials", "1", "--max_steps", "7", "--out_dir", str(out),
                           "--assets_dir", str(ASSETS), "--videos_per_task", "0", "--temporal_ensemble", "true",
                           "--save_actions", "true"],
                          cwd=REPO, env={**os.environ, "LIBERO_CONFIG_PATH": str(tmp_path / "libero_config")},
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = read_records(out / "episodes")
    assert "error" not in record and record["steps"] == record["queries"] == 7
    assert np.load(out / "actions" / "task86_trial00.npy").shape == (7, 7)
    protocol = json.loads((out / "results.json").read_text())["protocol"]
    assert protocol["actions_per_query"] == 1 and protocol["temporal_ensemble_m"] == 0.01
