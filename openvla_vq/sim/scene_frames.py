"""Labelled simulator frames for pretraining the VLA's vision towers (no demonstrations: nothing here is trained on
as an action).

    python -m openvla_vq.sim.scene_frames --out data/scene-frames --tasks 47,56 --episodes_per_task 40 --workers 2

The small VLA's towers are trained from scratch, and 10-40 demonstrations per task give few placements of the
objects. These frames pretrain the towers on many more (training/pretrain_vision.py) and measure what the image tokens
carry (reports/pick-place-probes/pretrained_vision_wrist_camera: random towers already carry the waypoints to about
half a centimetre, linearly; pretraining them did not make pick-and-place act). Here the experts
(sim/experts.py) play episodes from other random resets than the demonstrations' (seeds from `SEED_BASE`), with DART
noise on every executed action so that the hand also visits the states around their paths, and every `--every`-th
frame is kept with what the simulator knows there:
  - `waypoints` [T, K, 3]: each of the expert's K planned waypoints (above the object, at the grasp, above the goal,
    ...; fixed per task, computed from the scene's layout) minus the hand's position: where things are, relative
    to the hand;
  - `phase` [T]: the plan's phase (approach, descend, grasp, ...); `gripper` [T, 2]: the finger joints;
    `eef` [T, 3]: the hand's position; `instruction`: the task's.
Frames are those the demonstrations record (agentview and wrist, 256 px, rotated 180 degrees). Episodes run in
`--workers` processes and resume (one .npz per episode, written atomically); failed episodes are kept, since the
labels do not depend on success.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from openvla_vq.io import atomic_file

SEED_BASE = 500_000  # episode k of task t resets with seed SEED_BASE + 1000 t + k (the demonstrations use 100_000 +)


def episode_path(out: Path, task_index: int, episode: int) -> Path:
    return out / f"task{task_index:02d}_ep{episode:03d}.npz"


def record_frames(env, start: dict, max_steps: int, noise: float, seed: int, every: int) -> dict[str, np.ndarray]:
    """Play the expert from `start` with executed-action noise; keep every `every`-th frame and its labels."""
    from openvla_vq.sim.experts import Expert
    from openvla_vq.sim.libero_env import restore_start, rotate180
    from openvla_vq.sim.make_libero_rlds import perturbed
    from openvla_vq.sim.protocol import NUM_STEPS_WAIT, WAIT_ACTION

    obs = restore_start(env, start)
    for _ in range(NUM_STEPS_WAIT):
        obs, _, _, _ = env.step(list(WAIT_ACTION))
    expert, rng = Expert(env), np.random.default_rng(seed)
    waypoints = np.stack([p.target for p in expert.phases if p.target is not None])
    kept: dict[str, list] = {"images": [], "wrist_images": [], "waypoints": [], "phase": [], "gripper": [], "eef": []}
    done, step = False, 0
    while not expert.finished and not done and step < max_steps:
        if step % every == 0:
            kept["images"].append(rotate180(obs["agentview_image"]))
            kept["wrist_images"].append(rotate180(obs["robot0_eye_in_hand_image"]))
            kept["waypoints"].append(waypoints - obs["robot0_eef_pos"])
            kept["phase"].append(expert.index)
            kept["gripper"].append(obs["robot0_gripper_qpos"])
            kept["eef"].append(obs["robot0_eef_pos"])
        action = expert.act(obs)
        obs, _, done, _ = env.step(perturbed(action, noise, rng).tolist())
        step += 1
    arrays = {k: np.asarray(v) for k, v in kept.items()}
    arrays["phase"] = arrays["phase"].astype(np.int64)
    arrays["num_phases"] = np.asarray(len(expert.phases))
    return arrays


def simulate(out: Path, tasks: list[int], episodes_per_task: int, assets_dir: str | None, max_steps: int,
             noise: float, every: int) -> None:
    from openvla_vq.sim.libero_env import libero90_task, make_env, setup_libero, start_state

    setup_libero(assets_dir)
    out.mkdir(parents=True, exist_ok=True)
    for task_index in tasks:
        task, env = libero90_task(task_index), None
        for episode in range(episodes_per_task):
            path = episode_path(out, task_index, episode)
            if path.is_file():
                continue
            env = env or make_env(task)
            began, seed = time.time(), SEED_BASE + 1000 * task_index + episode
            env.seed(seed)
            env.reset()  # a placement sampled from the BDDL regions, as for the demonstrations
            arrays = record_frames(env, start_state(env), max_steps, noise, seed, every)
            with atomic_file(path, "wb") as f:
                np.savez_compressed(f, task_index=task_index, seed=seed, instruction=task.language, **arrays)
            print(f"task {task_index} episode {episode}: {len(arrays['images'])} frames, {time.time() - began:.0f}s",
                  flush=True)
        if env is not None:
            env.close()


def main(argv: list[str] | None = None) -> None:
    from openvla_vq.sim.make_libero_rlds import check_action_noise

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/scene-frames"))
    parser.add_argument("--tasks", default="47,56", help="LIBERO-90 task indices with an expert")
    parser.add_argument("--episodes_per_task", type=int, default=40)
    parser.add_argument("--every", type=int, default=2, help="keep every n-th frame")
    parser.add_argument("--action_noise", type=float, default=0.15, help="DART noise on the executed actions")
    parser.add_argument("--max_steps", type=int, default=300)
    parser.add_argument("--workers", type=int, default=1, help="simulator processes (tasks are dealt round-robin)")
    parser.add_argument("--assets_dir", default=None, help="LIBERO assets (default: $LIBERO_ASSETS, else the LIBERO-90 pack)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    check_action_noise(args.action_noise)
    if args.every < 1:
        raise SystemExit(f"error: --every {args.every}: pass a positive frame stride, e.g. 2")
    tasks = [int(t) for t in args.tasks.split(",")]
    if args.worker:
        simulate(args.out, tasks, args.episodes_per_task, args.assets_dir, args.max_steps, args.action_noise, args.every)
        return
    common = ["--out", str(args.out), "--episodes_per_task", str(args.episodes_per_task), "--every", str(args.every),
              "--action_noise", str(args.action_noise), "--max_steps", str(args.max_steps), "--worker"]
    if args.assets_dir:
        common += ["--assets_dir", args.assets_dir]
    me = [sys.executable, "-m", "openvla_vq.sim.scene_frames"]
    workers = [subprocess.Popen(me + common + ["--tasks", ",".join(map(str, tasks[i::args.workers]))])
               for i in range(min(args.workers, len(tasks)))]
    if any(w.wait() for w in workers):
        raise SystemExit("error: a simulator worker failed (see its output above); rerun to resume")
    frames = sum(len(np.load(p)["phase"]) for p in sorted(args.out.glob("task*_ep*.npz")))
    print(f"wrote {args.out}: {frames} labelled frames")


if __name__ == "__main__":
    main()
