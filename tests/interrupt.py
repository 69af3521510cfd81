"""Kill a training run as a crash would, right after it has written a given checkpoint (the resume tests)."""

import os
import signal
import subprocess
import time
from pathlib import Path


def kill_after_checkpoint(command: list[str], checkpoint: Path, env: dict, cwd: Path | None = None,
                          whole_group: bool = False, timeout: float = 600) -> None:
    """Start `command`, SIGKILL it once `checkpoint` exists (the launcher and all its ranks when `whole_group`)."""
    proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=whole_group)
    deadline = time.time() + timeout
    while not checkpoint.is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    if whole_group:
        os.killpg(proc.pid, signal.SIGKILL)
    else:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
