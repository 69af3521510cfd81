"""OpenVLA's LIBERO evaluation protocol (run_libero_eval.py), as constants and small pure functions."""

from __future__ import annotations

import math

import numpy as np

SUITE = "libero_90"
NUM_TASKS = 90
TRIALS_PER_TASK = 50
MAX_STEPS = 400  # libero_90 (the longest demonstration has 373 steps)
NUM_STEPS_WAIT = 10  # objects settle; the policy is not queried
WAIT_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)
RESOLUTION = 256
ENV_SEED = 0
SEED = 7


def gripper_to_env(actions: np.ndarray) -> np.ndarray:
    """Model gripper in [0, 1] with 1 = open -> LIBERO's -1 open / +1 close: 2g - 1, sign, invert (OpenVLA)."""
    out = np.array(actions, np.float32, copy=True)
    out[..., -1] = -np.sign(2.0 * out[..., -1] - 1.0)
    return out


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion (well-behaved at 0 and n successes)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
