"""Generate 7-D end-effector delta trajectories with ManiSkill3's bundled motion-planning solutions.

Run by path with the ManiSkill venv's python (numpy<2, lavapipe Vulkan), see tokenizers/synth_maniskill.sh:

    .venv-maniskill/bin/python tokenizers/maniskill_generate.py --out data/maniskill --num 200 --procs 2

--num is the number of successful trajectories wanted, split evenly over the tasks and the processes.
Attempt j of task k uses seed `seed0 + j * n_tasks + k`; process p runs the attempts j = p, p + P, ... (disjoint
seeds) until it has its share, or gives up after --max_attempts_factor times its share (some tasks' planners fail
on some seeds: PlugCharger about 45% of the time). Each successful solution is saved as
<out>/episodes/<task>/<seed>.npz, each failed seed as <seed>.failed (both atomically), so a rerun resumes and a
larger --num extends an existing set.

Conversion, matching the LIBERO/OXE convention of 7-D delta end-effector actions:
  * frame: the robot base frame (x forward, y left, z up), from the Panda's kinematic model;
  * the solutions command joint targets (pd_joint_pos); the commanded EE pose is FK(target joints) and the
    current one FK(measured joints). xyz = p_target - p_current in metres; euler = roll, pitch, yaw (radians,
    extrinsic xyz) of R_target R_current^T, the rotation to apply in the base frame;
  * gripper: 1 = open, 0 = closed (the solutions' +1 open / -1 closed mapped by (g + 1) / 2), as OpenVLA's data.
`--check N` additionally records N trajectories per task with ManiSkill's RecordEpisode and replays them with its
own converter to pd_ee_delta_pose; the per-dimension agreement with this conversion is printed and saved.
ManiSkill's pd_ee_delta_pose rotation has the opposite sign: a +rotation command turns the TCP negatively about
the base axes (measured), so its rotation dims are negated before comparing.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

TASKS = ["PickCube-v1", "PushCube-v1", "PullCube-v1", "StackCube-v1", "LiftPegUpright-v1", "PlugCharger-v1"]


def rotation_matrix(quat_wxyz: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    w, x, y, z = quat_wxyz
    return Rotation.from_quat([x, y, z, w]).as_matrix()


def ee_deltas(joint_states: np.ndarray, joint_targets: np.ndarray, gripper: np.ndarray, kinematics, tcp_index: int) -> np.ndarray:
    """[T, 7] actions: base-frame xyz delta (m), euler of R_target R_current^T (rad), gripper 1 open / 0 closed."""
    from scipy.spatial.transform import Rotation

    out = np.zeros((len(joint_states), 7), np.float32)
    for t, (q, target) in enumerate(zip(joint_states, joint_targets)):
        poses = []
        for arm in (q[:7], target):
            full = q.copy()
            full[:7] = arm
            kinematics.compute_forward_kinematics(full)
            pose = kinematics.get_link_pose(tcp_index)
            poses.append((np.asarray(pose.p), rotation_matrix(np.asarray(pose.q))))
        (p0, r0), (p1, r1) = poses
        out[t, :3] = p1 - p0
        out[t, 3:6] = Rotation.from_matrix(r1 @ r0.T).as_euler("xyz")
        out[t, 6] = (gripper[t] + 1.0) / 2.0
    return out


def make_env(task: str, record_dir: str | None = None):
    import gymnasium as gym
    import mani_skill.envs  # noqa: F401  (registers the tasks)

    env = gym.make(task, obs_mode="none", control_mode="pd_joint_pos", render_mode=None, sim_backend="cpu")
    if record_dir:
        from mani_skill.utils.wrappers.record import RecordEpisode

        env = RecordEpisode(env, output_dir=record_dir, trajectory_name="check", save_video=False, save_on_reset=False,
                            record_reward=False, source_type="motionplanning", source_desc="openvla-vq conversion check")
    return env


class Recorder:
    """Wraps the env handed to a solution: notes the measured joints before, and the command of, every step."""

    def __init__(self, env) -> None:
        self.env, self.joints, self.commands = env, [], []

    def __getattr__(self, name):
        return getattr(self.env, name)

    def step(self, action):
        self.joints.append(self.env.unwrapped.agent.robot.get_qpos().cpu().numpy()[0].copy())
        self.commands.append(np.asarray(action, np.float64).reshape(-1).copy())
        return self.env.step(action)


def solve(task: str, env, seed: int):
    from mani_skill.examples.motionplanning.panda.run import MP_SOLUTIONS

    recorder = Recorder(env)
    try:
        result = MP_SOLUTIONS[task](recorder, seed=seed, debug=False, vis=False)
    except Exception:
        return None, recorder
    if result == -1 or not bool(result[-1]["success"].item()):
        return None, recorder
    return result, recorder


def convert(env, recorder: Recorder) -> np.ndarray:
    agent = env.unwrapped.agent
    kinematics = agent.robot.create_pinocchio_model()
    tcp = [link.name for link in agent.robot.get_links()].index(agent.tcp.name)
    commands = np.stack(recorder.commands)
    return ee_deltas(np.stack(recorder.joints), commands[:, :7], commands[:, 7], kinematics, tcp)


def share(total: int, parts: int, index: int) -> int:
    """Part `index` of `total` split into `parts` near-equal integers."""
    return total // parts + (1 if index < total % parts else 0)


def worker(args, proc: int) -> dict:
    counts = {}
    for k, task in enumerate(args.tasks):
        wanted = share(share(args.num, len(args.tasks), k), args.procs, proc)
        folder = Path(args.out) / "episodes" / task
        folder.mkdir(parents=True, exist_ok=True)
        saved = failed = 0
        env = None
        for j in range(proc, args.procs * args.max_attempts_factor * max(wanted, 1), args.procs):
            if saved == wanted:
                break
            seed = args.seed0 + j * len(args.tasks) + k
            path, marker = folder / f"{seed:06d}.npz", folder / f"{seed:06d}.failed"
            if path.is_file() or marker.is_file():
                saved, failed = saved + path.is_file(), failed + marker.is_file()
                continue
            if env is None:
                env = make_env(task)
            result, recorder = solve(task, env, seed)
            fd, tmp = tempfile.mkstemp(dir=folder)
            with os.fdopen(fd, "wb") as f:
                if result is not None:
                    np.savez_compressed(f, actions=convert(env, recorder), task=task, seed=seed)
            os.replace(tmp, path if result is not None else marker)
            saved, failed = saved + (result is not None), failed + (result is None)
        if env is not None:
            env.close()
        counts[task] = {"wanted": wanted, "saved": saved, "failed_plans": failed}
    return counts


def replay_check(args) -> dict:
    """Our FK conversion vs ManiSkill's replay_trajectory to pd_ee_delta_pose, on --check trajectories per task."""
    report = {}
    for task in args.tasks:
        with tempfile.TemporaryDirectory() as tmp:
            env = make_env(task, record_dir=tmp)
            ours = []
            for seed in range(10_000, 10_000 + 4 * args.check):
                result, recorder = solve(task, env, seed)
                if result is None:
                    env.flush_trajectory(save=False)
                    continue
                ours.append(convert(env, recorder))
                env.flush_trajectory()
                if len(ours) == args.check:
                    break
            env.close()
            h5 = str(Path(tmp) / "check.h5")
            subprocess.run([sys.executable, "-m", "mani_skill.trajectory.replay_trajectory", "--traj-path", h5,
                            "-c", "pd_ee_delta_pose", "-o", "none", "--save-traj", "-b", "cpu"],
                           check=True, capture_output=True)
            import h5py

            converted = next(Path(tmp).glob("check.none.pd_ee_delta_pose*.h5"))
            with h5py.File(converted) as f:
                theirs = [np.asarray(f[f"traj_{i}"]["actions"]) for i in range(len(ours))]
        # ManiSkill's pd_ee_delta_pose actions are normalized by its limits (0.1 m, 0.1 rad) and use +1 open / -1 closed
        a = np.concatenate([o[: len(t)] for o, t in zip(ours, theirs)])
        b = np.concatenate([t[: len(o)] for o, t in zip(ours, theirs)])
        b = np.concatenate([b[:, :3] * 0.1, -b[:, 3:6] * 0.1, (b[:, 6:7] + 1) / 2], axis=1)
        corr = [float(np.corrcoef(a[:, d], b[:, d])[0, 1]) if a[:, d].std() > 1e-9 and b[:, d].std() > 1e-9 else None
                for d in range(7)]
        report[task] = {"trajectories": len(ours), "steps": int(len(a)), "pearson_per_dim": corr,
                        "mean_abs_diff_xyz_m": float(np.abs(a[:, :3] - b[:, :3]).mean()),
                        "gripper_agreement": float(((a[:, 6] > 0.5) == (b[:, 6] > 0.5)).mean())}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="data/maniskill")
    parser.add_argument("--num", type=int, default=200, help="successful trajectories wanted, split evenly over the tasks")
    parser.add_argument("--max_attempts_factor", type=int, default=4, help="attempts per task at most, times its share")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--seed0", type=int, default=0)
    parser.add_argument("--check", type=int, default=0, help="trajectories per task to compare with ManiSkill's replay")
    args = parser.parse_args()
    args.tasks = args.tasks.split(",")
    with mp.get_context("spawn").Pool(args.procs) as pool:
        per_proc = pool.starmap(worker, [(args, p) for p in range(args.procs)])
    summary = {task: {k: sum(c[task][k] for c in per_proc) for k in ("wanted", "saved", "failed_plans")}
               for task in args.tasks}
    summary["total"] = {k: sum(summary[t][k] for t in args.tasks) for k in ("wanted", "saved", "failed_plans")}
    if args.check:
        summary["replay_check"] = replay_check(args)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "generation_report.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
