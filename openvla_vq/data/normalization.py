"""OpenVLA's BOUNDS_Q99 action normalization and its inverse (one implementation for data and inference).

normalize:   x' = clip(2 (x - q01) / (q99 - q01 + 1e-8) - 1, -1, 1) on dims where mask is True;
             other dims (the gripper) pass through; dims with min == max become 0.
unnormalize: x = 0.5 (x' + 1) (q99 - q01) + q01 on masked dims, others unchanged.
Statistics follow dataset_statistics.json: {"action": {"q01", "q99", "min", "max", "mask", ...}, ...}.
"""

from __future__ import annotations

import numpy as np


def _stats(stats: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    action = stats.get("action", stats)
    q01, q99 = np.asarray(action["q01"], np.float32), np.asarray(action["q99"], np.float32)
    mask = np.asarray(action.get("mask", [True] * len(q01)), bool)
    return q01, q99, mask


def normalize_actions(actions: np.ndarray, stats: dict) -> np.ndarray:
    q01, q99, mask = _stats(stats)
    x = np.asarray(actions, np.float32)
    out = np.where(mask, np.clip(2 * (x - q01) / (q99 - q01 + 1e-8) - 1, -1, 1), x)
    action = stats.get("action", stats)
    if "min" in action and "max" in action:
        out = np.where(np.asarray(action["min"]) == np.asarray(action["max"]), 0.0, out)
    return out.astype(np.float32)


def unnormalize_actions(actions: np.ndarray, stats: dict) -> np.ndarray:
    q01, q99, mask = _stats(stats)
    x = np.asarray(actions, np.float32)
    return np.where(mask, 0.5 * (x + 1) * (q99 - q01) + q01, x).astype(np.float32)
