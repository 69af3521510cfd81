"""Crash-safe writes and checked loads.

Everything the project saves is written to a temporary sibling, then renamed: a reader sees either the old
complete file/folder or the new complete one, never a half-written one (POSIX rename is atomic within a
filesystem). Weights read back are checked key by key and shape by shape against the model before loading.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it replaces `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        _default_permissions(tmp)
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / "x")
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _default_permissions(folder: Path) -> None:
    """mkdtemp/mkstemp create private (0700/0600) entries; give them the permissions a plain mkdir/open would."""
    umask = os.umask(0)
    os.umask(umask)
    folder.chmod(0o777 & ~umask)
    for item in folder.rglob("*"):
        item.chmod((0o777 if item.is_dir() else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "w") -> Iterator[Any]:
    """Open a temporary sibling of `path` for writing; rename it over `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    os.fchmod(fd, 0o666 & ~umask)  # mkstemp creates 0600; give the file the permissions open() would
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write `obj` as indented JSON."""
    with atomic_file(path) as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> None:
    """Render a matplotlib figure to PNG and write it atomically; the figure is closed."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    with atomic_file(path, "wb") as f:
        f.write(buffer.getvalue())


def check_state_dict(model, tensors: dict, what: str, error: type[Exception]) -> None:
    """Raise a one-line `error` naming missing/unexpected keys (first few) or the first shape mismatch."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    extra = [k for k in tensors if k not in expected]
    if missing or extra:
        raise error(f"{what}: {len(missing)} missing keys {missing[:3]}, {len(extra)} unexpected keys {extra[:3]}")
    wrong = [(k, list(v.shape), list(tensors[k].shape)) for k, v in expected.items() if tensors[k].shape != v.shape]
    if wrong:
        k, want, got = wrong[0]
        raise error(f"{what}: shape mismatch at {k}: expected {want}, found {got} ({len(wrong)} mismatches)")


class CheckpointError(ValueError):
    """A checkpoint file or folder that cannot be loaded as it is (one line, names the file)."""


def load_safetensors(path: Path, device: str = "cpu") -> dict:
    """safetensors.torch.load_file with a one-line CheckpointError naming a truncated or corrupt file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device=device)
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); it may be truncated: re-download or re-save it") from None


def check_safetensors(path: Path) -> None:
    """Read only the header (cheap on a 15 GB shard): a truncated or corrupt file is a one-line CheckpointError."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}); it may be truncated: re-download or re-save it") from None
