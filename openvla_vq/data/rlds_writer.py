"""Write episodes as an RLDS dataset in the `libero_*_no_noops` layout (tensorflow-datasets on disk).

Layout (as in the public LIBERO RLDS conversions OpenVLA trains on): per step
observation/{image, wrist_image: 256x256x3 JPEG, already rotated 180 degrees; state: float32[8] =
EEF pos (3) + EEF axis-angle (3) + gripper qpos (2); joint_state: float32[7]}, action: float32[7]
(LIBERO's delta EEF + gripper in [-1 open, +1 close]), language_instruction, is_first/is_last/is_terminal,
reward, discount; episode_metadata/file_path. tfds writes into an `incomplete.*` folder and renames it
when done, so a dataset is never half-written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from openvla_vq.data.tf_env import tfds


def libero_features(image_size: int = 256):
    image = tfds.features.Image(shape=(image_size, image_size, 3), encoding_format="jpeg")
    return tfds.features.FeaturesDict({
        "steps": tfds.features.Dataset({
            "observation": {
                "image": image,
                "wrist_image": image,
                "state": tfds.features.Tensor(shape=(8,), dtype=np.float32),
                "joint_state": tfds.features.Tensor(shape=(7,), dtype=np.float32),
            },
            "action": tfds.features.Tensor(shape=(7,), dtype=np.float32),
            "language_instruction": tfds.features.Text(),
            "is_first": np.bool_, "is_last": np.bool_, "is_terminal": np.bool_,
            "reward": np.float32, "discount": np.float32,
        }),
        "episode_metadata": {"file_path": tfds.features.Text()},
    })


def write_rlds(root: str | Path, name: str, episodes: Iterable[dict], features=None, version: str = "1.0.0",
               description: str = "", overwrite: bool = False) -> Path:
    """Write `episodes` (dicts matching `features`) to root/name/version; returns that folder.

    tfds keeps a dataset that already exists as it is (and `episodes` is never read); `overwrite` deletes it first,
    with everything else in its folder, so a dataset rebuilt from other episodes is never the old one."""

    class _Builder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        VERSION = tfds.core.Version(version)

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=features or libero_features(), description=description,
                                         disable_shuffling=True)  # keep episodes in the order they were generated

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i, episode in enumerate(episodes):
                yield f"episode_{i:06d}", episode

    _Builder.name = name
    builder = _Builder(data_dir=str(root))
    modes = tfds.download.GenerateMode
    mode = modes.FORCE_REDOWNLOAD if overwrite else modes.REUSE_DATASET_IF_EXISTS
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(verify_ssl=False, download_mode=mode))
    return Path(builder.data_dir)


def libero_episode(images: np.ndarray, wrist_images: np.ndarray, states: np.ndarray, joint_states: np.ndarray,
                   actions: np.ndarray, instruction: str, file_path: str) -> dict:
    """One episode dict in the libero layout from per-step arrays (images already rotated 180 degrees)."""
    n = len(actions)
    steps = [{
        "observation": {"image": images[t], "wrist_image": wrist_images[t], "state": states[t].astype(np.float32),
                        "joint_state": joint_states[t].astype(np.float32)},
        "action": actions[t].astype(np.float32), "language_instruction": instruction,
        "is_first": t == 0, "is_last": t == n - 1, "is_terminal": t == n - 1,
        "reward": float(t == n - 1), "discount": 1.0,
    } for t in range(n)]
    return {"steps": steps, "episode_metadata": {"file_path": file_path}}
