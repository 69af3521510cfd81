"""Bad inputs shared by the entry points' error tests, and the check of their answer: a non-zero exit, a last
stderr line `error: ...` naming the problem, and no traceback."""

import json
import subprocess
from pathlib import Path


def assert_one_line_error(done: subprocess.CompletedProcess, expected: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode != 0 and lines and lines[-1].startswith("error: ") and expected in lines[-1], done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]


def truncate(path: Path) -> Path:
    """Cut a file in half, as an interrupted download or copy leaves it."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def disagreeing_tokenizer(folder: Path) -> Path:
    """A VQ tokenizer folder whose config.json says latent_dim 12 while its weights were saved with 8."""
    from openvla_vq.action_tokenizers import VQActionTokenizer, VQConfig

    VQActionTokenizer(VQConfig(block_out_channels=[16] * 4, layers_per_block=1, norm_groups=4, latent_dim=8)).save(folder)
    config = json.loads((folder / "config.json").read_text())
    config["config"]["latent_dim"] = 12
    (folder / "config.json").write_text(json.dumps(config))
    return folder
