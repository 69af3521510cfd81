"""LIBERO-90 environments offline and headless, shared by dataset generation and evaluation.

hf-libero needs three things done before its first import: a pre-written config.yaml (otherwise it calls
input() and dies in CI), an assets folder (it ignores config.yaml's and would download from a hub), and
EGL rendering. `setup_libero` does all three. Assets come from the argument, else $LIBERO_ASSETS, else the
LIBERO-90 pack beside the repository (../shared/libero90-assets/assets: all 90 tasks build, some visuals are
placeholders, so not for comparing with published numbers), else hf-libero's own copy/download; a clear error
names them when none works.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

LIBERO_90 = "libero_90"
SHARED_ASSETS = Path(__file__).resolve().parents[3] / "shared" / "libero90-assets" / "assets"
_assets: Path | None = None


def setup_libero(assets_dir: str | os.PathLike | None = None) -> Path:
    """Configure hf-libero (config.yaml, assets, EGL) and return the assets folder in use."""
    global _assets
    os.environ.setdefault("MUJOCO_GL", "egl")
    os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
    spec = importlib.util.find_spec("libero")
    if spec is None:
        raise ImportError("hf-libero is not installed: run 'make setup' (it installs hf-libero==0.1.4 --no-deps)")
    root = Path(spec.submodule_search_locations[0]) / "libero"
    config_dir = Path(os.environ.setdefault("LIBERO_CONFIG_PATH", str(Path.home() / ".cache" / "openvla_vq" / "libero")))
    config_dir.mkdir(parents=True, exist_ok=True)
    assets = assets_dir or os.environ.get("LIBERO_ASSETS") or (SHARED_ASSETS if SHARED_ASSETS.is_dir() else None)
    assets = str(Path(assets).resolve()) if assets else None  # robosuite resolves relative paths against its own folder
    if not (config_dir / "config.yaml").is_file():
        import yaml

        (config_dir / "config.yaml").write_text(yaml.safe_dump({
            "benchmark_root": str(root), "bddl_files": str(root / "bddl_files"), "init_states": str(root / "init_files"),
            "datasets": str(config_dir / "datasets"), "assets": str(assets or root / "assets")}))
    import libero.libero as libero_pkg

    if assets:
        if not (Path(assets) / "scenes").is_dir():
            raise FileNotFoundError(f"LIBERO assets folder {assets} has no scenes/: pass --assets_dir or LIBERO_ASSETS pointing at libero/libero/assets")
        libero_pkg._assets_path_cache = str(assets)
    else:
        found = libero_pkg.get_assets_path()
        if not (Path(found) / "scenes").is_dir():
            raise FileNotFoundError(
                "no LIBERO assets: pass --assets_dir DIR or set LIBERO_ASSETS=DIR (libero/libero/assets, or the test pack "
                "../shared/libero90-assets/assets), or allow hf-libero to download them"
            )
    _assets = Path(libero_pkg._assets_path_cache)
    return _assets


def libero90_task(index: int):
    from libero.libero import benchmark

    return benchmark.get_benchmark_dict()[LIBERO_90]().get_task(index)


def init_states(task) -> np.ndarray:
    """The task's fixed initial states, loaded without unpickling arbitrary objects (torch >= 2.6 safe)."""
    import torch
    from libero.libero import get_libero_path

    path = Path(get_libero_path("init_states")) / task.problem_folder / task.init_states_file
    allowed = [(np._core.multiarray._reconstruct, "numpy.core.multiarray._reconstruct"), np.ndarray,
               (np.dtype, "numpy.dtype"), np.dtypes.Float64DType]
    with torch.serialization.safe_globals(allowed):
        return np.asarray(torch.load(path, weights_only=True))


def make_env(task, resolution: int = 256, cameras: tuple[str, ...] = ("agentview", "robot0_eye_in_hand"), seed: int = 0):
    """OffScreenRenderEnv for a LIBERO task, rendering only `cameras`, seeded like OpenVLA's eval (env.seed(0))."""
    from libero.libero import get_libero_path
    from libero.libero.envs import OffScreenRenderEnv

    bddl = Path(get_libero_path("bddl_files")) / task.problem_folder / task.bddl_file
    env = OffScreenRenderEnv(bddl_file_name=str(bddl), camera_heights=resolution, camera_widths=resolution,
                             camera_names=list(cameras))
    env.seed(seed)
    return env


def start_state(env) -> dict[str, np.ndarray]:
    """The full starting state after a reset: the flattened MuJoCo state (what LIBERO's init states hold) plus the
    layout of fixtures, which LIBERO places by moving model bodies (cabinets, stoves) that the state does not hold."""
    model = env.env.sim.model
    return {"state": env.get_sim_state().copy(), "body_pos": model.body_pos.copy(), "body_quat": model.body_quat.copy()}


def restore_start(env, start: dict[str, np.ndarray]) -> dict:
    """reset(), then the saved fixture layout (if any) and state; returns the observation, as set_init_state."""
    env.reset()
    if "body_pos" in start:
        model = env.env.sim.model
        model.body_pos[:], model.body_quat[:] = start["body_pos"], start["body_quat"]
    return env.set_init_state(start["state"])


def rotate180(image: np.ndarray) -> np.ndarray:
    """LIBERO renders upside down; OpenVLA's data and eval rotate every frame by 180 degrees."""
    return np.ascontiguousarray(image[::-1, ::-1])
