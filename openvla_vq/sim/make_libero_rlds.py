"""Build a small LIBERO-format RLDS dataset in the real LIBERO-90 simulator, offline.

    python -m openvla_vq.sim.make_libero_rlds --out data/rlds --tasks 38,39,86,87,88,89 --episodes_per_task 2 \
        --assets_dir ../shared/libero90-assets/assets

What the episodes are: for each task and initial state (LIBERO's fixed init states 0, 1, ...), the env is
reset exactly as OpenVLA's evaluation does (env.seed(0), set_init_state, 10 settling steps that are not
recorded); then `ScriptedPolicy` (sim/scripted.py) moves the arm through pose-driven waypoints
(approach, grasp, lift, carry, place, release) until it finishes, the task succeeds, or `max_steps`.
Frames are rendered at 256 px from the agentview and wrist cameras and rotated 180 degrees like the public
LIBERO RLDS data; OpenVLA's no-op filter drops steps with no motion and an unchanged gripper command.
Whether each episode succeeded (LIBERO's own success check) is written to `generation_report.json` next
to the dataset: scripted motions often fail, so these episodes exercise the pipeline, they are not experts.

Resumable: each finished episode is kept as an .npz under <out>/.episodes/<name>/ and skipped on rerun;
the RLDS dataset is written (atomically, by tensorflow-datasets) once all episodes exist, in a child
process: TensorFlow and MuJoCo's EGL renderer crash when loaded into one process, in either order.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from openvla_vq.io import atomic_file, write_json

DATASET_NAME = "libero_90_scripted"
NOOP_THRESHOLD = 1e-4  # OpenVLA's regenerate_libero_dataset.py


def eef_state(obs: dict) -> np.ndarray:
    """[eef pos (3), eef axis-angle (3), gripper qpos (2)], the LIBERO RLDS `state`."""
    from robosuite.utils.transform_utils import quat2axisangle

    return np.concatenate([obs["robot0_eef_pos"], quat2axisangle(obs["robot0_eef_quat"]), obs["robot0_gripper_qpos"]])


def record_episode(env, task, init_state: np.ndarray, seed: int, max_steps: int) -> dict:
    from openvla_vq.sim.protocol import NUM_STEPS_WAIT, WAIT_ACTION
    from openvla_vq.sim.libero_env import rotate180
    from openvla_vq.sim.scripted import ScriptedPolicy

    env.reset()
    obs = env.set_init_state(init_state)
    for _ in range(NUM_STEPS_WAIT):  # settle, as in OpenVLA's eval; not recorded
        obs, _, _, _ = env.step(list(WAIT_ACTION))
    policy = ScriptedPolicy(env, np.random.default_rng(seed))
    frames = {"images": [], "wrist_images": [], "states": [], "joint_states": [], "actions": []}
    done, steps, last_gripper = False, 0, None
    while not policy.finished and not done and steps < max_steps:
        action = policy.act(obs)
        noop = np.linalg.norm(action[:6]) < NOOP_THRESHOLD and (last_gripper is None or action[6] == last_gripper)
        if not noop:
            frames["images"].append(rotate180(obs["agentview_image"]))
            frames["wrist_images"].append(rotate180(obs["robot0_eye_in_hand_image"]))
            frames["states"].append(eef_state(obs))
            frames["joint_states"].append(obs["robot0_joint_pos"])
            frames["actions"].append(action)
            last_gripper = action[6]
        obs, _, done, _ = env.step(action.tolist())
        steps += 1
    arrays = {k: np.asarray(v) for k, v in frames.items()}
    arrays["success"] = np.asarray(bool(env.env._check_success()))
    arrays["sim_steps"] = np.asarray(steps)
    return arrays


def simulate(out: Path, tasks: list[int], episodes_per_task: int, assets_dir: str | None, max_steps: int,
             name: str = DATASET_NAME) -> list[dict]:
    """Record the missing episodes (one .npz each) and return the report rows of all requested ones."""
    from openvla_vq.sim.libero_env import init_states, libero90_task, make_env, setup_libero

    setup_libero(assets_dir)
    work = out / ".episodes" / name
    work.mkdir(parents=True, exist_ok=True)
    report = []
    for task_index in tasks:
        task, env = libero90_task(task_index), None
        states = init_states(task)
        for ep in range(episodes_per_task):
            path = work / f"task{task_index:02d}_ep{ep:02d}.npz"
            if not path.is_file():
                env = env or make_env(task)
                start = time.time()
                arrays = record_episode(env, task, states[ep], seed=1000 * task_index + ep, max_steps=max_steps)
                with atomic_file(path, "wb") as f:
                    np.savez_compressed(f, instruction=task.language, **arrays)
                print(f"task {task_index} episode {ep}: {len(arrays['actions'])} steps kept of {int(arrays['sim_steps'])}, "
                      f"success={bool(arrays['success'])}, {time.time() - start:.0f}s", flush=True)
            with np.load(path) as z:
                report.append({"task_index": task_index, "instruction": str(z["instruction"]), "init_state": ep,
                               "file": path.name, "steps": int(len(z["actions"])), "sim_steps": int(z["sim_steps"]),
                               "success": bool(z["success"])})
        if env is not None:
            env.close()
    write_json(work / "report.json", {"assets": str(assets_dir), "episodes": report})
    return report


def assemble(out: Path, name: str = DATASET_NAME) -> Path:
    """Write the recorded episodes as one RLDS dataset (run without the simulator in the process)."""
    from openvla_vq.data.rlds_writer import libero_episode, write_rlds

    work = out / ".episodes" / name
    report = json.loads((work / "report.json").read_text())

    def episodes():
        for row in report["episodes"]:
            with np.load(work / row["file"]) as z:
                yield libero_episode(z["images"], z["wrist_images"], z["states"], z["joint_states"], z["actions"],
                                     str(z["instruction"]), f"libero_90/task{row['task_index']}/init{row['init_state']}")

    folder = write_rlds(out, name, episodes(), description=__doc__)
    rows = report["episodes"]
    write_json(folder / "generation_report.json", {
        "what": "scripted pose-driven motions in the LIBERO-90 simulator (see openvla_vq/sim/make_libero_rlds.py)",
        **report, "success_rate": sum(r["success"] for r in rows) / max(1, len(rows))})
    return folder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/rlds"))
    parser.add_argument("--tasks", default="38,39,86,87,88,89", help="LIBERO-90 task indices")
    parser.add_argument("--episodes_per_task", type=int, default=2)
    parser.add_argument("--assets_dir", default=None, help="LIBERO assets (default: $LIBERO_ASSETS, else hf-libero's)")
    parser.add_argument("--max_steps", type=int, default=220)
    parser.add_argument("--name", default=DATASET_NAME)
    parser.add_argument("--assemble_only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.assemble_only:
        assemble(args.out, args.name)
        return
    simulate(args.out, [int(t) for t in args.tasks.split(",")], args.episodes_per_task, args.assets_dir, args.max_steps, args.name)
    subprocess.run([sys.executable, "-m", "openvla_vq.sim.make_libero_rlds", "--out", str(args.out), "--name", args.name,
                    "--assemble_only"], check=True)
    folder = next((args.out / args.name).glob("*/generation_report.json")).parent
    report = json.loads((folder / "generation_report.json").read_text())
    print(f"wrote {folder}: {len(report['episodes'])} episodes, success rate {report['success_rate']:.2f}")


if __name__ == "__main__":
    main()
