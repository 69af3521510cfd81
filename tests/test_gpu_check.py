"""bench/gpu_check.sh, the script prepared for a brief GPU slot, runs end to end at --size tiny on CPU, without
TensorFlow (the GPU machine has none), and prints every number it exists for."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_at_tiny_size_without_tensorflow(tmp_path):
    blocker = tmp_path / "tensorflow"
    blocker.mkdir()
    (blocker / "__init__.py").write_text('raise ImportError("no TensorFlow on the GPU machine")\n')
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(["bash", "bench/gpu_check.sh", "--size", "tiny"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-2000:])
    out = done.stdout
    for tokenizer in ("binning", "vq-paper"):
        for batch in (1, 8):
            assert any(line.split()[:2] == [tokenizer, str(batch)] and line.endswith("%") for line in out.splitlines()), out
    assert "decode share" in out and "ratio vq-paper/binning in actions/s at batch 8" in out
    assert "gradient checkpointing, binning (7+1 tokens): step time" in out and "peak memory" in out
    assert "gpu_check done" in out
    bad = subprocess.run(["bash", "bench/gpu_check.sh", "--size", "70b"], cwd=REPO, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.strip() == "error: --size 70b: pass tiny or 7b"
