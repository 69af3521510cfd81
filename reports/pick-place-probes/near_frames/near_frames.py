"""Does a fine-tuned policy give its demonstrations' actions on frames a hair off them?

    python reports/pick-place-probes/near_frames/near_frames.py CHECKPOINT DATA_ROOT [TASK] [DEMOS]

A perfect memoriser of a demonstration executes its actions through binning (q01/q99, 256 bins). Replayed so from
the demonstration's own start, the simulator (deterministic: the recorded actions reproduce every frame exactly)
renders frames that differ from the recorded ones by well under one pixel level. This script renders those
"near" frames (both cameras), then asks the run's checkpoint for the first action on every recorded frame and on
every near frame, and prints per demonstration how often the predicted action misses the demonstrated one by the
replay criterion (an arm dimension off by more than 0.1, or the gripper's sign), with the recorded frame and with
the near one. The sim part runs in a child process (MuJoCo and TensorFlow cannot share one). Demonstrations
recorded with DART noise (`--action_noise`) executed other actions than the recorded ones: their binned replay is
not near them, and only the recorded-frame columns apply.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

TOLERANCE = 0.1  # evaluation/learning_report.py's REPLAY_TOLERANCE


def demonstrations(data_root: Path, task: int, count: int) -> list[Path]:
    from openvla_vq.sim.make_libero_rlds import work_dir

    report = json.loads((data_root / "libero_90_experts" / "1.0.0" / "generation_report.json").read_text())
    work = work_dir(data_root, "libero_90_experts", report.get("action_noise", 0.0), report["expert_version"])
    return [work / r["file"] for r in report["attempts"] if r["success"] and r["task_index"] == task][:count]


def render_near(files: list[Path], stats: dict, out: Path) -> None:
    """(child process) The binned replay of each demonstration; its frames, rotated like the recorded ones."""
    import torch

    from openvla_vq.action_tokenizers.binning import BinningActionTokenizer
    from openvla_vq.data.normalization import normalize_actions, unnormalize_actions
    from openvla_vq.sim.libero_env import libero90_task, make_env, restore_start, rotate180, setup_libero
    from openvla_vq.sim.protocol import ENV_SEED, NUM_STEPS_WAIT, RESOLUTION, WAIT_ACTION

    setup_libero()
    tokenizer, env, arrays = BinningActionTokenizer(), None, {}
    for i, file in enumerate(files):
        demo = dict(np.load(file))
        env = env or make_env(libero90_task(int(file.name[4:6])), RESOLUTION, seed=ENV_SEED)
        binned = tokenizer.decode(tokenizer.encode(torch.tensor(normalize_actions(demo["actions"], stats))[:, None]))
        executed = unnormalize_actions(binned[:, 0].numpy(), stats)
        executed[:, 6] = demo["actions"][:, 6]
        obs = restore_start(env, {"state": demo["init_state"], "body_pos": demo["body_pos"], "body_quat": demo["body_quat"]})
        for _ in range(NUM_STEPS_WAIT):
            obs, _, _, _ = env.step(list(WAIT_ACTION))
        images, wrist, hand_off, done = [], [], [], False
        for t, action in enumerate(executed):
            images.append(rotate180(obs["agentview_image"]))
            wrist.append(rotate180(obs["robot0_eye_in_hand_image"]))
            hand_off.append(np.linalg.norm(obs["robot0_eef_pos"] - demo["states"][t][:3]))
            obs, _, done, _ = env.step(action.tolist())
        arrays[f"images{i}"], arrays[f"wrist{i}"] = np.stack(images), np.stack(wrist)
        print(f"binned replay of demonstration {i}: success {bool(done or env.env._check_success())}, "
              f"largest binning error {np.abs(executed[:, :6] - demo['actions'][:, :6]).max():.4f}, "
              f"hand at most {1e3 * max(hand_off):.2f} mm off the recorded path")
    np.savez(out, **arrays)


def misses(predicted: np.ndarray, demo: np.ndarray) -> np.ndarray:
    return (np.abs(predicted[:, :6] - demo[:, :6]).max(1) > TOLERANCE) | (np.sign(predicted[:, 6]) != np.sign(demo[:, 6]))


def predict(policy, agentview: np.ndarray, wrist: np.ndarray, instruction: str) -> np.ndarray:
    """The policy's first action (the environment's gripper sign) per pair of frames, preprocessed as in evaluation."""
    from openvla_vq.data.preprocess import preprocess_image
    from openvla_vq.sim.protocol import gripper_to_env

    out = []
    for start in range(0, len(agentview), 16):
        inputs = [tuple(preprocess_image(im, crop=False) for im in cams)[:policy.num_images]
                  for cams in zip(agentview[start:start + 16], wrist[start:start + 16])]
        out.append(gripper_to_env(policy.predict_action(inputs, [instruction] * len(inputs)))[:, 0])
    return np.concatenate(out)


def main(checkpoint: Path, data_root: Path, task: int, count: int) -> None:
    from openvla_vq.policy import load_policy

    policy, _ = load_policy(checkpoint)
    files = demonstrations(data_root, task, count)
    near_file = checkpoint.parents[1] / f"near_frames_task{task}.npz"  # in the run folder: every checkpoint's
    if not near_file.is_file():
        subprocess.run([sys.executable, __file__, "--render", json.dumps([str(f) for f in files]),
                        json.dumps(policy.action_stats), str(near_file)],
                       check=True)
    near = np.load(near_file)
    instruction = str(np.load(files[0])["instruction"])

    generation = json.loads((data_root / "libero_90_experts" / "1.0.0" / "generation_report.json").read_text())
    noise = generation.get("action_noise", 0.0)
    if noise:
        print(f"note: recorded with --action_noise {noise}: the near frames are not near the recorded ones (see the docstring)")
    print(f"{checkpoint}\ntask {task}: per demonstration, steps whose predicted action misses the demonstrated one "
          f"(arm > {TOLERANCE} or gripper sign), and the first such step")
    print("demo | steps | recorded frames: misses, first | near frames: misses, first | mean |near - recorded| prediction, arm")
    for i, file in enumerate(files):
        demo = np.load(file)
        on_recorded = predict(policy, demo["images"], demo["wrist_images"], instruction)
        on_near = predict(policy, near[f"images{i}"], near[f"wrist{i}"], instruction)
        a, b = misses(on_recorded, demo["actions"]), misses(on_near, demo["actions"])
        first = lambda m: int(np.flatnonzero(m)[0]) if m.any() else "-"
        pixel = np.abs(near[f"images{i}"].astype(int) - demo["images"].astype(int)).mean()
        print(f"{i} | {len(a)} | {a.sum()}, {first(a)} | {b.sum()}, {first(b)} | "
              f"{np.abs(on_near[:, :6] - on_recorded[:, :6]).mean():.4f} (frames differ by {pixel:.3f} levels)")
        for name, predicted in (("recorded", on_recorded), ("near", on_near)):
            error = np.abs(predicted[:10, :6] - demo["actions"][:10, :6]).max(1)
            print(f"    first 10 steps, largest arm error, {name} frames: " + " ".join(f"{e:.2f}" for e in error))


if __name__ == "__main__":
    if sys.argv[1] == "--render":
        render_near([Path(f) for f in json.loads(sys.argv[2])], json.loads(sys.argv[3]), Path(sys.argv[4]))
    else:
        main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else 47,
             int(sys.argv[4]) if len(sys.argv) > 4 else 3)
