"""Evaluation outputs: results.json, per-task CSV, success bar plot (Wilson 95% intervals), MP4 rollouts."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import importlib.metadata
import json
import math
from pathlib import Path

import numpy as np

from openvla_vq.evaluation.records import read_records
from openvla_vq.io import atomic_file, save_figure, write_json
from openvla_vq.sim import protocol

PACKAGES = ("openvla-vq", "torch", "transformers", "timm", "peft", "accelerate", "tensorflow-cpu", "hf-libero",
            "robosuite", "mujoco")


def save_video(path: Path, frames: list[np.ndarray], fps: int = 30) -> None:
    import imageio.v2 as imageio

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.mp4")
    imageio.mimwrite(tmp, frames, fps=fps, codec="libx264", quality=7, macro_block_size=1)
    tmp.replace(path)


def checkpoint_hash(folder: Path) -> str:
    """sha256 over the checkpoint's weights and configs (file names and bytes, in sorted order)."""
    h = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and p.suffix in (".json", ".safetensors")):
        h.update(str(path.relative_to(folder)).encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 24), b""):
                h.update(block)
    return h.hexdigest()


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion (well-behaved at 0 and n successes)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def summarize(records: list[dict]) -> dict:
    n, k = len(records), sum(r["success"] for r in records)
    low, high = wilson_interval(k, n)
    policy_s = sum(r["policy_s"] for r in records)
    return {"episodes": n, "successes": k, "success_rate": k / n if n else 0.0, "wilson95": [low, high],
            "errors": sum(1 for r in records if r.get("error")),  # failures caused by an environment fault, not the policy
            "actions_per_s": sum(r["steps"] for r in records) / policy_s if policy_s else 0.0,
            "queries_per_s": sum(r["queries"] for r in records) / policy_s if policy_s else 0.0}


def write_report(out: Path, cfg, wanted: list[tuple[int, int]], policy, info: dict, crop: bool, per_query: int) -> dict:
    wanted_set = set(wanted)
    records = {(r["task"], r["trial"]): r for r in read_records(out / "episodes") if (r["task"], r["trial"]) in wanted_set}
    rows = list(records.values())
    tok = policy.action_tokenizer
    per_task = {}
    for task in sorted({t for t, _ in wanted}):
        per_task[task] = {"instruction": next((r["instruction"] for r in rows if r["task"] == task), ""),
                          **summarize([r for r in rows if r["task"] == task])}
    results = {
        "suite": protocol.SUITE, "checkpoint": str(cfg.checkpoint), "checkpoint_sha256": checkpoint_hash(Path(cfg.checkpoint)),
        "tokenizer": {"name": tok.name, "spec": info["tokenizer"], "chunk_len": tok.chunk_len, "tokens_per_chunk": policy.ids_per_chunk,
                      "tokens_per_action": policy.ids_per_chunk / tok.chunk_len, "max_tokens_per_chunk": tok.tokens_per_chunk,
                      "fingerprint": tok.fingerprint()},
        "protocol": {"trials_per_task": cfg.trials, "init_states": cfg.init_states_file or "LIBERO fixed init states",
                     "max_steps": cfg.max_steps, "num_steps_wait": cfg.num_steps_wait,
                     "wait_action": list(protocol.WAIT_ACTION), "env_seed": protocol.ENV_SEED, "seed": cfg.seed,
                     "resolution": protocol.RESOLUTION, "rotate_180": True, "jpeg_round_trip": True, "resize": "lanczos3 224",
                     "center_crop": crop, "actions_per_query": per_query,
                     "temporal_ensemble_m": cfg.ensemble_weight_decay if cfg.temporal_ensemble else None,
                     "gripper": "2g-1, sign, invert",
                     "cameras": list(protocol.POLICY_CAMERAS[:policy.num_images])},
        "config": json.loads(json.dumps(dataclasses.asdict(cfg), default=str)),
        "packages": {p: _version(p) for p in PACKAGES},
        "mujoco": {"installed": _version("mujoco"), "published_libero_numbers": protocol.MUJOCO_VERSION},
        "missing_episodes": len(wanted_set) - len(records),
        "overall": summarize(rows), "tasks": {str(t): v for t, v in per_task.items()},
    }
    write_json(out / "results.json", results)
    with atomic_file(out / "tasks.csv") as f:
        writer = csv.writer(f)
        writer.writerow(["task", "instruction", "episodes", "successes", "success_rate", "wilson95_low", "wilson95_high"])
        for task, s in per_task.items():
            writer.writerow([task, s["instruction"], s["episodes"], s["successes"], f"{s['success_rate']:.4f}",
                             f"{s['wilson95'][0]:.4f}", f"{s['wilson95'][1]:.4f}"])
    plot_success(out / "success.png", {f"task {t}": s for t, s in per_task.items()} | {"overall": results["overall"]},
                 title=f"LIBERO-90 success, {tok.name} ({results['overall']['episodes']} episodes)")
    return results


def wilson_error_bars(rates: np.ndarray, intervals: list) -> list[np.ndarray]:
    """[below, above] each rate for matplotlib's `yerr`. At 0/n and n/n the Wilson bound equals the rate up to
    rounding, which matplotlib would reject as a negative bar."""
    bounds = np.asarray(intervals, dtype=float).reshape(-1, 2)
    return [np.clip(rates - bounds[:, 0], 0, None), np.clip(bounds[:, 1] - rates, 0, None)]


def plot_success(path: Path, bars: dict[str, dict], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(bars)
    rates = np.array([bars[n]["success_rate"] for n in names])
    fig, ax = plt.subplots(figsize=(max(4, 0.5 * len(names) + 2), 3.5))
    ax.bar(range(len(names)), rates, yerr=wilson_error_bars(rates, [bars[n]["wilson95"] for n in names]), capsize=3,
           color="tab:blue")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("success rate (Wilson 95%)")
    ax.set_title(title, fontsize=9)
    save_figure(fig, path, dpi=120)


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
