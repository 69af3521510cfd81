"""One LIBERO environment in its own process, driven over a connection (never imports TensorFlow).

TensorFlow (used for the policy's preprocessing) and MuJoCo's EGL renderer crash when loaded into one
process, so each policy process runs its environments as `python -m openvla_vq.evaluation.env_worker FD`.
Messages (pickled over a socketpair):
    ("reset", task_index, trial, wait_steps, record) -> (images, sim_seconds, frames)
    ("step", actions [n, 7] in env units, record)   -> (images, done, steps, sim_seconds, frames)
    ("close",)
Only the cameras asked for are rendered (default: agentview, the policy's camera); `images` holds one per
camera in that order, 256 px, rotated 180 degrees; video `frames` are agentview's.

Faults: an exception inside reset/step is sent back and raised by `recv` as `EnvFault` with its text; a worker
that dies (segfault, SIGKILL, OOM) raises `EnvFault` too. The evaluation records that episode as a failure with
the error and starts a fresh worker. For tests, $OPENVLA_VQ_INJECT_FAULTS="raise@T:N,kill@T:N" makes the worker
raise (or SIGKILL itself) whenever it resets task T for trial N, on every attempt, as a deterministic fault would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from multiprocessing.connection import Connection

import numpy as np

from openvla_vq.sim.protocol import ENV_SEED, RESOLUTION, WAIT_ACTION


class EnvFault(RuntimeError):
    """An episode cannot go on: its environment raised, or its worker process died."""


def injected_faults() -> dict[tuple[int, int], str]:
    spec = os.environ.get("OPENVLA_VQ_INJECT_FAULTS", "")
    faults = {}
    for item in filter(None, spec.split(",")):
        kind, where = item.split("@")
        task, trial = where.split(":")
        faults[(int(task), int(trial))] = kind
    return faults


class EnvWorker:
    """Parent-side handle: start the process, send commands, receive replies."""

    def __init__(self, assets_dir: str | None, log=None, cameras: str = "agentview",
                 init_states_file: str | None = None) -> None:
        parent, child = socket.socketpair()
        cmd = [sys.executable, "-m", "openvla_vq.evaluation.env_worker", str(child.fileno()), assets_dir or "", cameras,
               init_states_file or ""]
        self.process = subprocess.Popen(cmd, pass_fds=(child.fileno(),), stdout=log or subprocess.DEVNULL,
                                        stderr=log or subprocess.DEVNULL)
        child.close()
        self.conn = Connection(parent.detach())

    def send(self, *message) -> None:
        self.conn.send(message)

    def recv(self):
        try:
            reply = self.conn.recv()
        except (EOFError, OSError) as e:
            code = self.process.wait(timeout=30)
            raise EnvFault(f"env worker died (exit code {code}): {type(e).__name__}") from None
        if isinstance(reply, BaseException):
            raise EnvFault(str(reply))
        return reply

    def close(self) -> None:
        try:
            self.send("close")
            self.process.wait(timeout=30)
        except Exception:
            self.process.kill()
            self.process.wait()
        self.conn.close()


def serve(conn: Connection, assets_dir: str | None, cameras: tuple[str, ...] = ("agentview",),
          init_states_file: str | None = None) -> None:
    from openvla_vq.sim.libero_env import init_states, libero90_task, make_env, restore_start, rotate180, setup_libero

    def obs_images(obs: dict) -> tuple[np.ndarray, ...]:
        return tuple(rotate180(obs[f"{camera}_image"]) for camera in cameras)

    setup_libero(assets_dir or None)
    from_file = dict(np.load(init_states_file)) if init_states_file else None
    faults = injected_faults()
    env, current, states = None, None, None
    while True:
        message = conn.recv()
        kind = message[0]
        if kind == "close":
            break
        try:
            start = time.perf_counter()
            if kind == "reset":
                _, task_index, trial, wait_steps, record = message
                fault = faults.get((task_index, trial))
                if fault == "kill":
                    os.kill(os.getpid(), signal.SIGKILL)
                elif fault == "raise":
                    raise RuntimeError(f"injected fault in reset of task {task_index} trial {trial}")
                if task_index != current:
                    if env is not None:
                        env.close()
                    task = libero90_task(task_index)
                    env, current = make_env(task, RESOLUTION, cameras=cameras, seed=ENV_SEED), task_index
                    states = init_states(task) if from_file is None else from_file[f"task{task_index}"]
                if from_file is not None and f"task{task_index}_body_pos" in from_file:  # a recorded start, layout too
                    obs = restore_start(env, {"state": states[trial], "body_pos": from_file[f"task{task_index}_body_pos"][trial],
                                              "body_quat": from_file[f"task{task_index}_body_quat"][trial]})
                else:  # LIBERO's protocol: fixtures where this env's reset put them
                    env.reset()
                    obs = env.set_init_state(states[trial])
                frames = []
                for _ in range(wait_steps):
                    obs, _, _, _ = env.step(list(WAIT_ACTION))
                    if record:
                        frames.append(rotate180(obs["agentview_image"]))
                conn.send((obs_images(obs), time.perf_counter() - start, frames))
            elif kind == "step":
                _, actions, record = message
                done, steps, frames = False, 0, []
                for action in np.asarray(actions, np.float64):
                    obs, _, done, _ = env.step(action.tolist())
                    steps += 1
                    if record:
                        frames.append(rotate180(obs["agentview_image"]))
                    if done:
                        break
                conn.send((obs_images(obs), bool(done), steps, time.perf_counter() - start, frames))
        except Exception as e:  # reported to the parent, which ends the episode as a failure with this text
            conn.send(RuntimeError(f"{type(e).__name__}: {e}"))
    if env is not None:
        env.close()


if __name__ == "__main__":
    serve(Connection(int(sys.argv[1])), sys.argv[2] if len(sys.argv) > 2 else None,
          tuple(sys.argv[3].split(",")) if len(sys.argv) > 3 else ("agentview",), sys.argv[4] if len(sys.argv) > 4 else None)
