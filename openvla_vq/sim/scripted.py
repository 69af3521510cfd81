"""Scripted LIBERO demonstrations driven by object poses read from the simulator.

For a goal `(on|in OBJECT REGION)` the controller walks through waypoints: above the object, down to its
top, close the gripper, lift, carry above the region, lower, open, retreat. For `(turnon|turnoff FIXTURE)`
it moves to the fixture's knob, closes, and sweeps sideways. Each waypoint is tracked with a proportional
controller on the end-effector position in LIBERO's OSC_POSE action space (1.0 = 5 cm per step), with a
per-phase step limit so an episode always moves on (a blocked descent still closes the gripper).
Actions use LIBERO's convention: 7-D [dx, dy, dz, droll, dpitch, dyaw, gripper], gripper -1 open / +1 close.
These are plausible, pose-conditioned motions, not expert demonstrations: many do not complete the task.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STEP_M = 0.05  # OSC_POSE output_max for position at action 1.0
PHASE_LIMIT = 35  # steps before a phase gives up and the next one starts
HOLD_STEPS = 10  # steps spent closing or opening the gripper


@dataclass
class Phase:
    name: str
    gripper: float
    target: np.ndarray | None = None  # None: hold still (gripper phases)


class ScriptedPolicy:
    def __init__(self, env, rng: np.random.Generator) -> None:
        self.env, self.e, self.rng = env, env.env, rng
        predicate, *args = self.e.parsed_problem["goal_state"][0]
        self.predicate, self.args = predicate.lower(), args
        self.noise = rng.normal(0, 0.01, size=3)  # per-episode offset: demonstrations differ slightly
        self.phases = self._plan()
        self.index, self.steps_in_phase = 0, 0

    def _body_pos(self, name: str) -> np.ndarray:
        return self.e.sim.data.body_xpos[self.e.sim.model.body_name2id(name)].copy()

    def _object_pos(self, name: str) -> np.ndarray:
        return self.e.sim.data.body_xpos[self.e.obj_body_id[name]].copy()

    def _plan(self) -> list[Phase]:
        if self.predicate in ("on", "in"):
            obj_name, region = self.args[0], self.args[1]
            obj = self.e.objects_dict[obj_name]
            p = self._object_pos(obj_name) + np.r_[self.noise[:2], 0]
            top = p[2] + obj.top_offset[2]
            goal = self.e.sim.data.get_site_xpos(region).copy() + np.r_[self.noise[:2], 0]
            carry_z = max(top, goal[2]) + 0.15
            return [Phase("approach", -1, np.r_[p[:2], top + 0.08]), Phase("descend", -1, np.r_[p[:2], top - 0.02]),
                    Phase("grasp", 1), Phase("lift", 1, np.r_[p[:2], carry_z]), Phase("carry", 1, np.r_[goal[:2], carry_z]),
                    Phase("lower", 1, np.r_[goal[:2], goal[2] + (top - p[2]) + 0.02]), Phase("release", -1),
                    Phase("retreat", -1, np.r_[goal[:2], carry_z])]
        if self.predicate in ("turnon", "turnoff"):
            knob = next(n for n in (f"{self.args[0]}_button", f"{self.args[0]}_main") if n in self.e.sim.model.body_names)
            k = self._body_pos(knob) + np.r_[self.noise[:2], 0]
            side = 1.0 if self.predicate == "turnon" else -1.0
            return [Phase("approach", -1, k + [0, -0.06 * side, 0.08]), Phase("descend", -1, k + [0, -0.06 * side, 0.01]),
                    Phase("grasp", 1), Phase("sweep", 1, k + [0, 0.06 * side, 0.01]), Phase("release", -1),
                    Phase("retreat", -1, k + [0, 0, 0.12])]
        raise ValueError(f"no script for goal predicate {self.predicate!r}")

    @property
    def finished(self) -> bool:
        return self.index >= len(self.phases)

    def act(self, obs: dict) -> np.ndarray:
        phase = self.phases[min(self.index, len(self.phases) - 1)]
        action = np.zeros(7)
        action[6] = phase.gripper
        self.steps_in_phase += 1
        if phase.target is None:
            reached = self.steps_in_phase >= HOLD_STEPS
        else:
            delta = phase.target - obs["robot0_eef_pos"]
            action[:3] = np.clip(delta / STEP_M, -1, 1)
            reached = np.linalg.norm(delta) < 0.01 or self.steps_in_phase >= PHASE_LIMIT
        if reached:
            self.index, self.steps_in_phase = self.index + 1, 0
        return action
