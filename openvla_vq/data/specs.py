"""How each RLDS dataset's steps map onto (image, instruction, 7-D EEF action): the registered dataset specs.

OpenVLA needs a per-dataset entry (openvla#332 `KeyError: 'libero_orig'`); here an unknown name fails with
the known names and how to register one.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Callable

import numpy as np


def libero_gripper(actions: np.ndarray) -> np.ndarray:
    """LIBERO's gripper command is -1 (open) .. +1 (close); OpenVLA trains on 1 = open, 0 = close."""
    out = np.array(actions, np.float32, copy=True)
    out[..., -1] = 1.0 - np.clip(out[..., -1], 0.0, 1.0)
    return out


def identity(actions: np.ndarray) -> np.ndarray:
    return np.asarray(actions, np.float32)


@dataclass(frozen=True)
class DatasetSpec:
    image_key: str | None = "image"
    wrist_image_key: str | None = "wrist_image"
    state_key: str | None = "state"
    action_transform: Callable[[np.ndarray], np.ndarray] = identity
    # EEF_POS datasets: the 6 delta dims are normalized, the absolute gripper is not
    action_normalization_mask: tuple = field(default=(True,) * 6 + (False,))


LIBERO = DatasetSpec(action_transform=libero_gripper)
ACTIONS_ONLY = DatasetSpec(image_key=None, wrist_image_key=None, state_key=None)  # tokenizer-training data
DATASET_SPECS: dict[str, DatasetSpec] = {
    **{f"libero_{suite}_no_noops": LIBERO for suite in ("90", "spatial", "object", "goal", "10")},
    "libero_90": LIBERO,
    "libero_90_experts": LIBERO,  # expert demonstrations openvla_vq.sim.make_libero_rlds renders offline
    "maniskill_synth": ACTIONS_ONLY,  # ManiSkill3 motion-planning trajectories (openvla_vq.sim.maniskill_rlds)
    "maniskill_heldout": ACTIONS_ONLY,  # the task family kept out of maniskill_synth
}


def register_dataset(name: str, spec: DatasetSpec) -> None:
    DATASET_SPECS[name] = spec


def dataset_spec(name: str) -> DatasetSpec:
    if name in DATASET_SPECS:
        return DATASET_SPECS[name]
    close = difflib.get_close_matches(name, list(DATASET_SPECS), n=1)
    hint = f" did you mean {close[0]!r}?" if close else ""
    raise KeyError(
        f"dataset {name!r} has no spec;{hint} known: {sorted(DATASET_SPECS)}; register it with "
        "openvla_vq.data.specs.register_dataset(name, DatasetSpec(image_key=..., action_transform=...))"
    )
