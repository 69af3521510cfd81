"""OpenVLA's LIBERO evaluation protocol (run_libero_eval.py) as constants, shared by data generation and evaluation."""

from __future__ import annotations

import numpy as np

SUITE = "libero_90"
NUM_TASKS = 90
TRIALS_PER_TASK = 50
MAX_STEPS = 400  # libero_90 (the longest demonstration has 373 steps)
NUM_STEPS_WAIT = 10  # objects settle; the policy is not queried
WAIT_ACTION = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0)
RESOLUTION = 256
ENV_SEED = 0
# the cameras a policy reads, in the order its images enter the model: third-person (OpenVLA), then the wrist
# (OpenVLA-OFT's second image); both rotated 180 degrees like the RLDS data's image / wrist_image
POLICY_CAMERAS = ("agentview", "robot0_eye_in_hand")
SEED = 7
# The MuJoCo of the published LIBERO numbers. Newer versions render darker floors and cost up to 20 points on
# LIBERO-Object (LIBERO #88, PR #140; openvla #282, #335); setup.py pins it for evaluation and data generation.
MUJOCO_VERSION = "3.3.2"


def gripper_to_env(actions: np.ndarray) -> np.ndarray:
    """Model gripper in [0, 1] with 1 = open -> LIBERO's -1 open / +1 close: 2g - 1, sign, invert (OpenVLA)."""
    out = np.array(actions, np.float32, copy=True)
    out[..., -1] = -np.sign(2.0 * out[..., -1] - 1.0)
    return out


def mujoco_version_warning() -> str | None:
    """One line when the installed MuJoCo is not the one of the published numbers, else None."""
    import importlib.metadata

    try:
        installed = importlib.metadata.version("mujoco")
    except importlib.metadata.PackageNotFoundError:
        return None
    if installed == MUJOCO_VERSION:
        return None
    return (f"warning: MuJoCo {installed} is installed; published LIBERO numbers used {MUJOCO_VERSION} (newer versions render "
            f"darker floors and move success rates, LIBERO #88): pip install mujoco=={MUJOCO_VERSION} to compare")
