"""Expert LIBERO-90 demonstrations in the real simulator, offline, as LIBERO-format RLDS (libero_90_no_noops layout).

    python -m openvla_vq.sim.make_libero_rlds --out data/rlds --episodes_per_task 10 --workers 2  # the 8 expert tasks

Each attempt starts from a fresh random reset of the task (env.seed(attempt seed), reset(): LIBERO samples object
placements from the BDDL regions, as its human demonstrations did), never from the 50 fixed evaluation states.
That starting state is kept (the MuJoCo state plus the fixtures' layout, which the state vector lacks); the
episode is then played as the evaluation plays an initial state (reset, restore, 10 unrecorded settling steps),
with `Expert` (sim/experts.py) acting on privileged simulator state. `--action_noise` injects noise into what is
executed (DART, Laskey et al. 2017) while the expert's own action is recorded: the demonstrations then show how to
come back to the path from nearby states, the states a learned policy's small errors lead to. Frames: agentview
and wrist at 256 px, rotated 180 degrees; actions: 7-D OSC_POSE deltas with LIBERO's gripper sign; OpenVLA's no-op
filter. Only successful attempts enter the dataset; every attempt's outcome and starting state are in `generation_report.json` and the starting states of the dataset's episodes, per task in
dataset order, in `init_states.npz` (keys task<i>), which `eval/libero90.py --init_states_file` replays.

Attempts run in `--workers` processes (tasks dealt round-robin) and resume: each finished attempt is kept as an
.npz under <out>/.episodes/<name>-<digest of the expert and recorder code>/. The RLDS dataset is written
(atomically, by tensorflow-datasets) in a child process: TensorFlow and MuJoCo's EGL renderer crash when loaded into one process, in either order.
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

DATASET_NAME = "libero_90_experts"
SEED_BASE = 100_000  # attempt k of task t resets with seed SEED_BASE + 1000 t + k
NOOP_THRESHOLD = 1e-4  # OpenVLA's regenerate_libero_dataset.py


def eef_state(obs: dict) -> np.ndarray:
    """[eef pos (3), eef axis-angle (3), gripper qpos (2)], the LIBERO RLDS `state`."""
    from robosuite.utils.transform_utils import quat2axisangle

    return np.concatenate([obs["robot0_eef_pos"], quat2axisangle(obs["robot0_eef_quat"]), obs["robot0_gripper_qpos"]])


def perturbed(action: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    """The executed action under DART noise: Gaussian, std `noise` on the position deltas and half that on the
    rotation deltas (a rotation unit turns the hand 0.5 rad, a position unit moves it 5 cm); never the gripper."""
    executed = action.copy()
    executed[:6] += rng.normal(0.0, noise, 6) * np.r_[1.0, 1.0, 1.0, 0.5, 0.5, 0.5]
    executed[:6] = np.clip(executed[:6], -1.0, 1.0)
    return executed


def check_action_noise(noise: float) -> None:
    """One-line error for a noise level the [-1, 1] action range cannot take (this script's and learn-libero's)."""
    if not 0.0 <= noise <= 1.0:
        raise SystemExit(f"error: --action_noise {noise} is outside [0, 1] (actions span [-1, 1]): pass e.g. 0.15")


def record_episode(env, start: dict, max_steps: int, noise: float = 0.0, seed: int = 0) -> dict:
    from openvla_vq.sim.experts import Expert
    from openvla_vq.sim.libero_env import restore_start, rotate180
    from openvla_vq.sim.protocol import NUM_STEPS_WAIT, WAIT_ACTION

    obs = restore_start(env, start)
    for _ in range(NUM_STEPS_WAIT):  # settle, as in OpenVLA's eval; not recorded
        obs, _, _, _ = env.step(list(WAIT_ACTION))
    expert, rng = Expert(env), np.random.default_rng(seed)
    frames = {"images": [], "wrist_images": [], "states": [], "joint_states": [], "actions": []}
    done, steps, last_gripper = False, 0, None
    while not expert.finished and not done and steps < max_steps:
        action = expert.act(obs)
        noop = np.linalg.norm(action[:6]) < NOOP_THRESHOLD and (last_gripper is None or action[6] == last_gripper)
        if not noop:
            frames["images"].append(rotate180(obs["agentview_image"]))
            frames["wrist_images"].append(rotate180(obs["robot0_eye_in_hand_image"]))
            frames["states"].append(eef_state(obs))
            frames["joint_states"].append(obs["robot0_joint_pos"])
            frames["actions"].append(action)
            last_gripper = action[6]
        executed = perturbed(action, noise, rng) if noise else action
        obs, _, done, _ = env.step(executed.tolist())
        steps += 1
    arrays = {k: np.asarray(v) for k, v in frames.items()}
    arrays["success"] = np.asarray(bool(done or env.env._check_success()))
    arrays["sim_steps"] = np.asarray(steps)
    return arrays


def expert_version() -> str:
    """A digest of what the experts' and this recorder's code do: attempts recorded by another version are not
    reused. It is taken over the syntax tree without docstrings, so comments, docstrings and layout do not count."""
    import ast
    import hashlib

    from openvla_vq.sim import experts

    digest = hashlib.sha256()
    for source in (Path(experts.__file__), Path(__file__)):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                    and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
        digest.update(ast.dump(tree).encode())
    return digest.hexdigest()[:12]


def work_dir(out: Path, name: str, noise: float = 0.0, version: str | None = None) -> Path:
    """Where the attempts of this expert code (or of `version`) at this noise level are kept."""
    return out / ".episodes" / (f"{name}-{version or expert_version()}" + (f"-noise{noise:g}" if noise else ""))


def attempt_path(work: Path, task_index: int, attempt: int) -> Path:
    return work / f"task{task_index:02d}_try{attempt:03d}.npz"


def simulate(work: Path, tasks: list[int], episodes_per_task: int, max_attempts: int, assets_dir: str | None,
             max_steps: int, noise: float = 0.0) -> None:
    """Attempt each task from random resets until it has `episodes_per_task` successes or `max_attempts` tries."""
    from openvla_vq.sim.libero_env import libero90_task, make_env, setup_libero, start_state

    setup_libero(assets_dir)
    work.mkdir(parents=True, exist_ok=True)
    for task_index in tasks:
        task, env, successes = libero90_task(task_index), None, 0
        for attempt in range(max_attempts):
            path = attempt_path(work, task_index, attempt)
            if not path.is_file():
                env = env or make_env(task)
                began, seed = time.time(), SEED_BASE + 1000 * task_index + attempt
                env.seed(seed)
                env.reset()  # samples object placements from the BDDL regions, and the fixtures' layout
                start = start_state(env)
                arrays = record_episode(env, start, max_steps, noise, seed)
                with atomic_file(path, "wb") as f:
                    np.savez_compressed(f, instruction=task.language, init_state=start["state"], seed=seed,
                                        body_pos=start["body_pos"], body_quat=start["body_quat"], **arrays)
                print(f"task {task_index} attempt {attempt}: success={bool(arrays['success'])}, {len(arrays['actions'])} "
                      f"steps kept of {int(arrays['sim_steps'])}, {time.time() - began:.0f}s", flush=True)
            with np.load(path) as z:
                successes += bool(z["success"])
            if successes >= episodes_per_task:
                break
        if env is not None:
            env.close()


def attempts_report(work: Path, tasks: list[int], episodes_per_task: int) -> dict:
    """Each task's attempts in order, up to the one that brought its `episodes_per_task`-th success."""
    rows = []
    for task_index in tasks:
        successes = 0
        for path in sorted(work.glob(f"task{task_index:02d}_try*.npz")):
            if successes >= episodes_per_task:
                break
            with np.load(path) as z:
                rows.append({"task_index": task_index, "instruction": str(z["instruction"]), "file": path.name,
                             "seed": int(z["seed"]), "success": bool(z["success"]), "steps": int(len(z["actions"])),
                             "sim_steps": int(z["sim_steps"]), "init_state": z["init_state"].tolist()})
            successes += rows[-1]["success"]
    experts = {str(t): {"attempts": sum(r["task_index"] == t for r in rows),
                        "successes": sum(r["task_index"] == t and r["success"] for r in rows)} for t in tasks}
    return {"experts": experts, "attempts": rows}


def assemble(out: Path, tasks: list[int], episodes_per_task: int, name: str = DATASET_NAME, noise: float = 0.0) -> Path:
    """Write the successful attempts as one RLDS dataset (run without the simulator in the process)."""
    from openvla_vq.data.rlds_writer import libero_episode, write_rlds

    work = work_dir(out, name, noise)
    report = attempts_report(work, tasks, episodes_per_task)
    kept = [row for row in report["attempts"] if row["success"]]
    if not kept:
        raise SystemExit(f"error: no successful expert attempt for tasks {tasks}: nothing to write")

    def episodes():
        for row in kept:
            with np.load(work / row["file"]) as z:
                yield libero_episode(z["images"], z["wrist_images"], z["states"], z["joint_states"], z["actions"],
                                     str(z["instruction"]), f"libero_90/task{row['task_index']}/seed{row['seed']}")

    folder = write_rlds(out, name, episodes(), description=__doc__, overwrite=True)  # the attempts may have changed
    starts = {}
    for t in tasks:  # per task, in dataset order: states, and the fixture layouts the states do not hold
        attempts = [np.load(work / r["file"]) for r in kept if r["task_index"] == t]
        for key, field in (("", "init_state"), ("_body_pos", "body_pos"), ("_body_quat", "body_quat")):
            if attempts:
                starts[f"task{t}{key}"] = np.stack([z[field] for z in attempts])
    with atomic_file(folder / "init_states.npz", "wb") as f:
        np.savez(f, **starts)
    write_json(folder / "generation_report.json", {
        "what": "expert demonstrations from random resets in the LIBERO-90 simulator (openvla_vq/sim/make_libero_rlds.py); "
                "only successful attempts are in the dataset, in this order; init_states.npz holds their starting states",
        "expert_version": expert_version(), "action_noise": noise, **report, "dataset_episodes": [r["file"] for r in kept]})
    return folder


def main(argv: list[str] | None = None) -> None:
    from openvla_vq.sim.experts import EXPERT_TASKS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("data/rlds"))
    parser.add_argument("--tasks", default=",".join(map(str, EXPERT_TASKS)), help="LIBERO-90 task indices")
    parser.add_argument("--episodes_per_task", type=int, default=10, help="successful demonstrations wanted per task")
    parser.add_argument("--max_attempts", type=int, default=None, help="per task (default 2 x episodes_per_task + 2)")
    parser.add_argument("--workers", type=int, default=1, help="simulator processes (tasks are dealt round-robin)")
    parser.add_argument("--assets_dir", default=None, help="LIBERO assets (default: $LIBERO_ASSETS, else the LIBERO-90 pack)")
    parser.add_argument("--max_steps", type=int, default=300)
    parser.add_argument("--action_noise", type=float, default=0.0,
                        help="std of the noise added to executed arm actions (DART); the expert's action is recorded")
    parser.add_argument("--name", default=DATASET_NAME)
    parser.add_argument("--stage", choices=("all", "simulate", "assemble"), default="all", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    tasks = [int(t) for t in args.tasks.split(",")]
    check_action_noise(args.action_noise)
    work = work_dir(args.out, args.name, args.action_noise)
    max_attempts = args.max_attempts or 2 * args.episodes_per_task + 2
    if args.stage == "simulate":
        simulate(work, tasks, args.episodes_per_task, max_attempts, args.assets_dir, args.max_steps, args.action_noise)
        return
    if args.stage == "assemble":
        assemble(args.out, tasks, args.episodes_per_task, args.name, args.action_noise)
        return
    common = ["--out", str(args.out), "--name", args.name, "--episodes_per_task", str(args.episodes_per_task),
              "--max_attempts", str(max_attempts), "--max_steps", str(args.max_steps), "--action_noise", str(args.action_noise)]
    if args.assets_dir:
        common += ["--assets_dir", args.assets_dir]
    me = [sys.executable, "-m", "openvla_vq.sim.make_libero_rlds"]
    workers = [subprocess.Popen(me + common + ["--stage", "simulate", "--tasks", ",".join(map(str, tasks[i::args.workers]))])
               for i in range(min(args.workers, len(tasks)))]
    if any(w.wait() for w in workers):
        raise SystemExit("error: a simulator worker failed (see its output above); rerun to resume")
    subprocess.run(me + common + ["--stage", "assemble", "--tasks", args.tasks], check=True)
    report = json.loads((next((args.out / args.name).glob("*/generation_report.json"))).read_text())
    summary = ", ".join(f"task {t}: {v['successes']}/{v['attempts']}" for t, v in report["experts"].items())
    print(f"wrote {args.out / args.name}: {len(report['dataset_episodes'])} episodes; expert successes {summary}")


if __name__ == "__main__":
    main()
