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
from openvla_vq.evaluation.protocol import gripper_to_env, wilson_interval
from openvla_vq.evaluation.records import EpisodeLog, read_records
from openvla_vq.model.tiny import write_tiny_checkpoint
from vqvla_reference import SHARED

REPO = Path(__file__).resolve().parents[1]
ASSETS = SHARED / "libero-test-assets" / "assets"
TASKS = [38, 39, 86, 87, 88, 89]


def test_wilson_interval_matches_textbook_values():
    assert wilson_interval(0, 1) == pytest.approx((0.0, 0.7935), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(45, 50) == pytest.approx((0.7864, 0.9565), abs=1e-4)


def test_gripper_follows_openvla_post_processing():
    actions = np.zeros((4, 7), np.float32)
    actions[:, 6] = [1.0, 0.0, 0.8, 0.2]  # 1 = open in the training data
    assert gripper_to_env(actions)[:, 6].tolist() == [-1.0, 1.0, -1.0, 1.0]  # LIBERO: -1 open, +1 close


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
    assert len((out / "tasks.csv").read_text().splitlines()) == 1 + len(TASKS)
    assert (out / "success.png").stat().st_size > 1000 and list((out / "videos").glob("*.mp4"))
    table = compare([out, out], tmp_path / "compare")
    assert table.count("| eval | binning | 6 |") == 2 and (tmp_path / "compare" / "compare.png").is_file()
