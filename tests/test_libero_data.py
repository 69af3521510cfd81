"""The offline LIBERO-format dataset: rendered in the real LIBERO-90 simulator, read by the fine-tuning pipeline.

The generator runs as a subprocess on purpose: TensorFlow (used by this test process to read the data)
and MuJoCo's EGL renderer cannot share a process.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from openvla_vq.data.rlds_dataset import RLDSChunkDataset
from vqvla_reference import SHARED

ASSETS = SHARED / "libero90-assets" / "assets"


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    if not ASSETS.is_dir():
        pytest.fail(f"LIBERO test assets missing at {ASSETS}")
    out = tmp_path_factory.mktemp("libero")
    env = {**os.environ, "LIBERO_CONFIG_PATH": str(out / "libero_config")}
    cmd = [sys.executable, "-m", "openvla_vq.sim.make_libero_rlds", "--out", str(out), "--tasks", "86",
           "--episodes_per_task", "1", "--max_steps", "25", "--assets_dir", str(ASSETS)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return out, done.stdout


def test_generator_writes_rlds_with_a_success_report(generated):
    out, stdout = generated
    folder = out / "libero_90_scripted" / "1.0.0"
    report = json.loads((folder / "generation_report.json").read_text())
    (row,) = report["episodes"]
    assert row["task_index"] == 86 and row["instruction"] == "pick up the book in the middle and place it on the cabinet shelf"
    assert row["sim_steps"] == 25 and isinstance(row["success"], bool) and "success rate" in stdout


def test_pipeline_reads_the_rendered_episodes(generated):
    out, _ = generated
    samples = list(RLDSChunkDataset(out, "libero_90_scripted", chunk_len=5, train=False, split="all"))
    assert 1 <= len(samples) <= 25
    first = samples[0]
    assert first["instruction"] == "pick up the book in the middle and place it on the cabinet shelf"
    assert first["image"].shape == (224, 224, 3) and first["image"].std() > 10, "a rendered scene, not a blank frame"
    assert all(np.abs(s["actions"]).max() <= 1.0 for s in samples)


def test_frames_are_rotated_like_libero_rlds(generated):
    """The asset pack's contact sheet was rendered independently (init state 0, 10 no-op steps, rotated 180 degrees;
    one 128 px tile per task, 10 per row, the task index printed in the tile's top-left corner, which is masked)."""
    out, _ = generated
    sheet = Image.open(SHARED / "libero90-assets" / "contact_sheet.png").convert("RGB")
    row, col = divmod(86, 10)
    preview = np.asarray(sheet.crop((col * 128, row * 128, col * 128 + 128, row * 128 + 128)), np.float32)
    with np.load(out / ".episodes" / "libero_90_scripted" / "task86_ep00.npz") as z:
        first = np.asarray(Image.fromarray(z["images"][0]).resize((128, 128), Image.Resampling.BILINEAR), np.float32)
    keep = np.ones((128, 128), bool)
    keep[:32, :48] = False
    upright, flipped = np.abs(first - preview)[keep].mean(), np.abs(first[::-1, ::-1] - preview)[keep].mean()
    assert upright < 10 and flipped > 3 * upright, (upright, flipped)


def test_rerun_resumes_from_recorded_episodes(generated):
    out, _ = generated
    env = {**os.environ, "LIBERO_CONFIG_PATH": str(out / "libero_config")}
    cmd = [sys.executable, "-m", "openvla_vq.sim.make_libero_rlds", "--out", str(out), "--tasks", "86",
           "--episodes_per_task", "1", "--max_steps", "25", "--assets_dir", str(ASSETS)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0 and "task 86 episode 0" not in done.stdout, "the recorded episode is reused, not re-simulated"
