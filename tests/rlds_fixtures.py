"""Small LIBERO-layout RLDS datasets written by the tests (random images, smooth scripted-looking actions)."""

from __future__ import annotations

import numpy as np

from openvla_vq.data.rlds_writer import libero_episode, write_rlds

INSTRUCTIONS = ["put the black bowl on the plate", "open the top drawer of the cabinet", "turn on the stove"]


def episode_arrays(i: int, length: int) -> dict:
    rng = np.random.default_rng(i)
    t = np.linspace(0, 1, length)[:, None]
    actions = np.concatenate([np.sin(2 * np.pi * (t + rng.uniform(size=6))) * rng.uniform(0.2, 0.9, size=6),
                              np.where(t < 0.5, -1.0, 1.0)], axis=1).astype(np.float32)  # gripper opens then closes
    images = rng.integers(0, 255, (length, 256, 256, 3), dtype=np.uint8)
    return {"actions": actions, "images": images, "wrist": images[:, ::-1], "states": rng.normal(size=(length, 8)),
            "joints": rng.normal(size=(length, 7)), "instruction": INSTRUCTIONS[i % len(INSTRUCTIONS)]}


def write_libero_like(root, name: str = "libero_90_no_noops", episodes: int = 6, length: int = 12) -> list[dict]:
    arrays = [episode_arrays(i, length + i) for i in range(episodes)]
    write_rlds(root, name, (libero_episode(a["images"], a["wrist"], a["states"], a["joints"], a["actions"],
                                           a["instruction"], f"episode_{i}") for i, a in enumerate(arrays)))
    return arrays
