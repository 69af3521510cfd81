"""Convert ManiSkill3 trajectories (tokenizers/maniskill_generate.py) into action-only RLDS datasets.

    python -m openvla_vq.sim.maniskill_rlds --episodes data/maniskill --out data/rlds --heldout PlugCharger-v1

Writes `maniskill_synth` (every task but the held-out family) and `maniskill_heldout` (that family only), so a
tokenizer trained on the first can be measured on a trajectory source it never saw. Steps hold the 7-D action
(base-frame xyz metres, euler radians, gripper 1 open / 0 closed) and the task name as language_instruction.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np

from openvla_vq.data.rlds_writer import write_rlds
from openvla_vq.data.tf_env import tfds

VERSION = "1.0.0"


def action_features():
    return tfds.features.FeaturesDict({
        "steps": tfds.features.Dataset({
            "action": tfds.features.Tensor(shape=(7,), dtype=np.float32),
            "language_instruction": tfds.features.Text(),
            "is_first": np.bool_, "is_last": np.bool_, "is_terminal": np.bool_,
            "reward": np.float32, "discount": np.float32,
        }),
        "episode_metadata": {"file_path": tfds.features.Text()},
    })


def action_episode(actions: np.ndarray, instruction: str, file_path: str) -> dict:
    n = len(actions)
    return {"steps": [{"action": actions[t].astype(np.float32), "language_instruction": instruction,
                       "is_first": t == 0, "is_last": t == n - 1, "is_terminal": t == n - 1,
                       "reward": float(t == n - 1), "discount": 1.0} for t in range(n)],
            "episode_metadata": {"file_path": file_path}}


def convert(episodes: Path, out: Path, heldout: str) -> dict[str, Path]:
    # ordered by seed, which interleaves the task families (seed = j * n_tasks + task index), so the last 5% of
    # episodes (the reader's `val` split) hold every family rather than the alphabetically last one
    files = sorted(episodes.glob("episodes/*/*.npz"), key=lambda f: (int(f.stem), f.parent.name))
    if not files:
        raise FileNotFoundError(f"no trajectories under {episodes}/episodes: run tokenizers/synth_maniskill.sh first")

    def load(selected):
        for path in selected:
            with np.load(path) as z:
                yield action_episode(z["actions"], str(z["task"]), f"{path.parent.name}/{path.name}")

    groups = {"maniskill_synth": [f for f in files if f.parent.name != heldout],
              "maniskill_heldout": [f for f in files if f.parent.name == heldout]}
    written = {}
    for name, selected in groups.items():
        if selected:
            drop_if_stale(out / name / VERSION, len(selected))
            written[name] = write_rlds(out, name, load(selected), features=action_features(), version=VERSION,
                                       description=__doc__)
    return written


def drop_if_stale(folder: Path, episodes: int) -> None:
    """tfds keeps an existing dataset as is; one built from a different number of trajectories is removed first."""
    if (folder / "dataset_info.json").is_file():
        if tfds.builder_from_directory(str(folder)).info.splits["train"].num_examples != episodes:
            shutil.rmtree(folder)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=Path, default=Path("data/maniskill"))
    parser.add_argument("--out", type=Path, default=Path("data/rlds"))
    parser.add_argument("--heldout", default="PlugCharger-v1")
    args = parser.parse_args(argv)
    for name, folder in convert(args.episodes, args.out, args.heldout).items():
        print(f"{name}: {folder}")


if __name__ == "__main__":
    main()
