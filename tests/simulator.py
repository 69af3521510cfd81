"""Running LIBERO-90 simulator commands from tests: in a subprocess, because TensorFlow (loaded by the test
process) and MuJoCo's EGL renderer cannot share one, with the LIBERO-90 asset pack from ../shared."""

import os
import subprocess
from pathlib import Path

import pytest

from vqvla_reference import SHARED

ASSETS = SHARED / "libero90-assets" / "assets"


def run_simulator(command: list[str], out: Path, timeout: int) -> tuple[subprocess.CompletedProcess, dict]:
    """Runs `command` with its own LIBERO config under `out`; returns the finished process and that environment."""
    if not ASSETS.is_dir():
        pytest.fail(f"LIBERO-90 assets missing at {ASSETS}")
    env = {**os.environ, "LIBERO_CONFIG_PATH": str(out / "libero_config")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    return done, env
