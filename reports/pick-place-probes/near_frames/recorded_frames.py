"""How well does a fine-tuned policy fit each demonstration's recorded frames, the held-out one included?

    python reports/pick-place-probes/near_frames/recorded_frames.py CHECKPOINT DATA_ROOT [TASK] [DEMOS]

For each of the task's first DEMOS (default 10) successful demonstrations, asks the checkpoint for the action on every
recorded frame (both cameras, the evaluation's preprocessing) and prints how many miss the demonstrated action by the
replay criterion (an arm dimension off by more than 0.1, or the gripper's sign), and the first few such steps.
`near_frames.py` does this for the first three only, next to rendered near frames; fine-tuning's OpenVLA split
holds out the dataset's last 5% of episodes, so with 10 or 20 demonstrations of one task the last one is a placement
the policy never read: its row measures generalisation, the others the fit. No simulator needed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from near_frames import demonstrations, misses, predict


def main(checkpoint: Path, data_root: Path, task: int, count: int) -> None:
    from openvla_vq.policy import load_policy

    policy, _ = load_policy(checkpoint)
    print(f"{checkpoint}\ntask {task}: per demonstration, recorded frames whose predicted action misses the "
          f"demonstrated one (arm > 0.1 or gripper sign)\ndemo | steps | misses | first misses")
    for i, file in enumerate(demonstrations(data_root, task, count)):
        demo = np.load(file)
        missed = misses(predict(policy, demo["images"], demo["wrist_images"], str(demo["instruction"])), demo["actions"])
        print(f"{i} | {len(missed)} | {missed.sum()} | {np.flatnonzero(missed)[:8].tolist()}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 47,
         int(sys.argv[4]) if len(sys.argv) > 4 else 10)
