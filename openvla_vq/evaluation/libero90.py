"""LIBERO-90 evaluation: (task, trial) pairs sharded over accelerate processes, several envs per process with
their policy queries batched into one forward pass, append-only episode records, and a report at the end.

Per episode (OpenVLA's protocol, protocol.py): env.seed(0), set_init_state(trial), 10 wait steps, then up to
max_steps actions; the states are LIBERO's 50 fixed ones per task, or those of --init_states_file (e.g. the
starting states of training demonstrations). Each query returns a chunk of K actions (K = 1 for binning, 5 for
VQ-VLA) that is executed open loop, `actions_per_query` of them (default: all K), or, with --temporal_ensemble,
queried every step and averaged over the chunks that predict the step (ACT, ensemble.py). Observations: agentview
(and the wrist camera for two-image models), 256 px, rotated 180 degrees, JPEG round trip, lanczos to 224, centre
crop if the checkpoint was trained with augmentation.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from openvla_vq.evaluation.ensemble import ACT_WEIGHT_DECAY, TemporalEnsemble
from openvla_vq.evaluation.records import EpisodeLog, read_records
from openvla_vq.io import atomic_file
from openvla_vq.sim import protocol


@dataclass
class EvalConfig:
    checkpoint: str = "runs/latest"  # runs/<run>/checkpoints/step_N, a merged folder, or an OpenVLA folder
    tokenizer: str | None = None  # default: the one recorded in the checkpoint
    tasks: str = "all"  # "all" or comma-separated LIBERO-90 task indices, e.g. "38,39,86"
    trials: int = protocol.TRIALS_PER_TASK
    # .npz of starting states, key task<i> -> (n, state) (e.g. a dataset's init_states.npz: its training
    # demonstrations' starts); default LIBERO's 50 fixed init states per task (the protocol)
    init_states_file: str | None = None
    max_steps: int = protocol.MAX_STEPS
    num_steps_wait: int = protocol.NUM_STEPS_WAIT
    actions_per_query: int | None = None  # open-loop actions per query; default the tokenizer's chunk length
    # ACT's temporal ensembling: query every step, execute the weighted mean of every chunk's prediction for it
    temporal_ensemble: bool = False
    ensemble_weight_decay: float = ACT_WEIGHT_DECAY  # ACT's m: weights exp(-m * i), i = 0 for the oldest prediction
    center_crop: bool | None = None  # default: whether the checkpoint was trained with image augmentation
    envs_per_process: int = 1
    # rendered cameras besides those the policy reads (agentview, and the wrist for two-image models): more only
    # costs time
    cameras: str = "agentview"
    videos_per_task: int = 1  # MP4s of the first N trials of each task
    save_actions: bool = False  # the executed actions of every episode, actions/task<i>_trial<n>.npy (env space)
    # the image each episode's first query gave the model (after preprocessing), inputs/task<i>_trial<n>.png: from a
    # training demonstration's start it must be that demonstration's first training image, pixel for pixel
    save_first_inputs: bool = False
    assets_dir: str | None = None  # default $LIBERO_ASSETS, else hf-libero's own
    out_dir: Path = Path("eval_runs/latest")
    unnorm_key: str | None = None
    seed: int = protocol.SEED
    device: str | None = None  # default cuda if available
    bf16: bool = True  # on GPU


@dataclass
class Episode:
    task: int
    trial: int
    instruction: str
    images: tuple = ()  # the latest observation, one image per rendered camera
    steps: int = 0
    queries: int = 0
    policy_s: float = 0.0
    sim_s: float = 0.0
    done: bool = False
    frames: list = field(default_factory=list)
    actions: list = field(default_factory=list)
    first_input: np.ndarray | None = None
    ensemble: TemporalEnsemble | None = None


class EvalInputError(ValueError):
    """Bad evaluation input, reported as one line before any environment or model is built."""


def task_list(spec: str) -> list[int]:
    if str(spec) == "all":
        return list(range(protocol.NUM_TASKS))
    try:
        tasks = [int(t) for t in str(spec).split(",")]
    except ValueError:
        raise EvalInputError(f"--tasks {spec!r}: pass 'all' or comma-separated LIBERO-90 task indices, e.g. 38,39,86") from None
    outside = [t for t in tasks if not 0 <= t < protocol.NUM_TASKS]
    if outside:
        raise EvalInputError(f"--tasks {outside}: LIBERO-90 task indices run from 0 to {protocol.NUM_TASKS - 1}")
    return tasks


def check_inputs(cfg: EvalConfig) -> None:
    """One-line errors for what would otherwise fail deep inside a run: checkpoint, tasks, trials."""
    folder = Path(cfg.checkpoint)
    if not folder.is_dir():
        raise EvalInputError(f"--checkpoint {folder} does not exist: pass runs/<run>/checkpoints/step_N, a merged folder or an "
                             f"OpenVLA folder")
    if not (folder / "config.json").is_file() and not (folder / "adapter").is_dir():
        raise EvalInputError(f"--checkpoint {folder} is not a checkpoint (no config.json, no adapter/): pass "
                             f"runs/<run>/checkpoints/step_N, a merged folder or an OpenVLA folder")
    tasks = task_list(cfg.tasks)
    if cfg.init_states_file:
        path = Path(cfg.init_states_file)
        if not path.is_file():
            raise EvalInputError(f"--init_states_file {path} does not exist: pass an .npz with keys task<i> (e.g. a "
                                 f"generated dataset's init_states.npz)")
        with np.load(path) as states:
            counts = {t: len(states[f"task{t}"]) if f"task{t}" in states else 0 for t in tasks}
        short = {t: n for t, n in counts.items() if n < cfg.trials}
        if short:
            raise EvalInputError(f"--init_states_file {path} has fewer than --trials {cfg.trials} states for tasks "
                                 f"{short} (task: states): lower --trials or pass --tasks with enough states")
    if cfg.temporal_ensemble and cfg.actions_per_query not in (None, 1):
        raise EvalInputError(f"--temporal_ensemble queries every step: drop --actions_per_query {cfg.actions_per_query} "
                             f"(or pass 1)")
    if not cfg.init_states_file and not 1 <= cfg.trials <= protocol.TRIALS_PER_TASK:
        raise EvalInputError(f"--trials {cfg.trials}: each LIBERO-90 task has {protocol.TRIALS_PER_TASK} fixed initial states; "
                             f"pass 1 to {protocol.TRIALS_PER_TASK}")


def run_eval(cfg: EvalConfig) -> Path:
    import torch
    from accelerate import PartialState
    from accelerate.utils import set_seed

    from openvla_vq.evaluation.env_worker import EnvFault, EnvWorker
    from openvla_vq.data.preprocess import preprocess_image
    from openvla_vq.evaluation.report import save_video, write_report
    from openvla_vq.policy import load_policy
    from openvla_vq.sim.libero_env import libero90_task, setup_libero

    check_inputs(cfg)
    state = PartialState(cpu=not torch.cuda.is_available())
    warning = protocol.mujoco_version_warning()
    if warning and state.is_main_process:
        print(warning, file=sys.stderr)
    out = Path(cfg.out_dir)
    setup_libero(cfg.assets_dir)  # fails early, in every process, when no assets can be found
    set_seed(cfg.seed)
    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") and cfg.bf16 else torch.float32
    policy, info = load_policy(cfg.checkpoint, cfg.tokenizer, device, dtype, cfg.unnorm_key)
    crop = info["image_aug"] if cfg.center_crop is None else cfg.center_crop
    policy_cameras = protocol.POLICY_CAMERAS[:policy.num_images]
    cameras = ",".join(dict.fromkeys(policy_cameras + tuple(filter(None, cfg.cameras.split(",")))))
    chunk_len = policy.action_tokenizer.chunk_len
    per_query = 1 if cfg.temporal_ensemble else min(cfg.actions_per_query or chunk_len, chunk_len)

    wanted = [(t, n) for t in task_list(cfg.tasks) for n in range(cfg.trials)]
    finished = {(r["task"], r["trial"]) for r in read_records(out / "episodes")}
    mine = [pair for pair in wanted if pair not in finished][state.process_index::state.num_processes]
    instructions = {t: libero90_task(t).language for t in {t for t, _ in mine}}
    log = EpisodeLog(out / "episodes", state.process_index)
    worker_log = open(out / f"env_workers.rank{state.process_index}.log", "ab")

    def new_worker() -> EnvWorker:
        return EnvWorker(cfg.assets_dir, worker_log, cameras, cfg.init_states_file)

    def finish(slot: int, error: str | None = None) -> None:
        ep = active.pop(slot)
        if cfg.save_actions:
            (out / "actions").mkdir(parents=True, exist_ok=True)
            with atomic_file(out / "actions" / f"task{ep.task:02d}_trial{ep.trial:02d}.npy", "wb") as f:
                np.save(f, np.asarray(ep.actions, np.float32).reshape(-1, 7))
        if cfg.save_first_inputs and ep.first_input is not None:
            import imageio.v3 as iio

            with atomic_file(out / "inputs" / f"task{ep.task:02d}_trial{ep.trial:02d}.png", "wb") as f:
                iio.imwrite(f, ep.first_input, extension=".png")
        if ep.frames:
            save_video(out / "videos" / f"task{ep.task:02d}_trial{ep.trial:02d}_{'success' if ep.done else 'failure'}.mp4", ep.frames)
        record = {"task": ep.task, "trial": ep.trial, "instruction": ep.instruction, "success": ep.done and error is None,
                  "steps": ep.steps, "queries": ep.queries, "policy_s": round(ep.policy_s, 4), "sim_s": round(ep.sim_s, 4),
                  "rank": state.process_index}
        if error is not None:  # OpenVLA counts an exception as a failed episode and goes on; we also say why
            record["error"] = error
            print(f"task {ep.task} trial {ep.trial}: episode ended by an environment fault: {error}", file=sys.stderr)
        log.append(record)

    def receive(slot: int):
        """The worker's reply, or None after ending the episode as a failure and replacing the worker."""
        try:
            return workers[slot].recv()
        except EnvFault as fault:
            workers[slot].close()
            workers[slot] = new_worker()
            finish(slot, str(fault))
            return None

    workers = [new_worker() for _ in range(min(cfg.envs_per_process, max(1, len(mine))))]
    active: dict[int, Episode] = {}
    queue = list(mine)
    try:
        while queue or active:
            fresh = []
            for slot in range(len(workers)):  # start new episodes in free slots; workers reset in parallel
                if slot not in active and queue:
                    task, trial = queue.pop(0)
                    active[slot] = Episode(task, trial, instructions[task], ensemble=TemporalEnsemble(
                        chunk_len, cfg.ensemble_weight_decay) if cfg.temporal_ensemble else None)
                    workers[slot].send("reset", task, trial, cfg.num_steps_wait, trial < cfg.videos_per_task)
                    fresh.append(slot)
            for slot in fresh:
                reply = receive(slot)
                if reply is not None:
                    active[slot].images, active[slot].sim_s, active[slot].frames = reply
            if not active:
                continue
            slots = sorted(active)
            start = time.perf_counter()
            # per episode the model's input images, camera by camera
            inputs = [tuple(preprocess_image(im, crop=crop) for im in active[s].images[:len(policy_cameras)])
                      for s in slots]
            chunks = policy.predict_action(inputs, [active[s].instruction for s in slots])
            if cfg.temporal_ensemble:
                chunks = np.stack([active[s].ensemble.step(chunk) for s, chunk in zip(slots, chunks)])[:, None]
            actions = protocol.gripper_to_env(chunks)
            share = (time.perf_counter() - start) / len(slots)
            for i, slot in enumerate(slots):
                ep = active[slot]
                if ep.queries == 0:
                    ep.first_input = inputs[i][0]
                ep.policy_s, ep.queries = ep.policy_s + share, ep.queries + 1
                n = min(per_query, cfg.max_steps - ep.steps)
                workers[slot].send("step", actions[i, :n], ep.trial < cfg.videos_per_task)
                ep.actions.extend(actions[i, :n])
            for slot in slots:
                reply = receive(slot)
                if reply is None:
                    continue
                ep = active[slot]
                ep.images, ep.done, steps, sim_s, frames = reply
                ep.steps, ep.sim_s = ep.steps + steps, ep.sim_s + sim_s
                ep.frames.extend(frames)
                if ep.done or ep.steps >= cfg.max_steps:
                    finish(slot)
    finally:
        for worker in workers:
            worker.close()
        log.close()
        worker_log.close()
    state.wait_for_everyone()
    if state.is_main_process:
        write_report(out, cfg, wanted, policy, info, crop, per_query)
    state.wait_for_everyone()
    return out
