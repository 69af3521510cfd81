"""Pretrain a VLA checkpoint's vision towers and projector on labelled simulator frames (sim/scene_frames.py).

    python -m openvla_vq.training.pretrain_vision --vla runs/learn-libero/vla --frames data/scene-frames \
        --out runs/learn-libero/vla-pretrained --steps 2000

OpenVLA starts from towers pretrained on web images (DINOv2, SigLIP); no pretrained weights reach us, and towers
trained from scratch on 10-40 demonstrations per task learn to tell those demonstrations apart, not where things
are. This stands in for that pretraining with what the simulator offers: the towers, the projector and a linear
head per task (on the flattened patch embeddings, what the language model reads) regress from each frame the
expert's waypoints relative to the hand, the finger joints and the hand's position, and classify the plan's
phase. Everything but the language model is trained in full (patch embedding and position table included, which
LoRA later leaves frozen); the result is the input checkpoint with new vision and projector weights, in the same
layout, and `pretrain_report.json` beside it: the errors on held-out placements (the last `--held_out` episodes of
each task) next to those of predicting the training mean. Frames are preprocessed as the evaluation preprocesses
an observation (JPEG round trip, lanczos resize to 224), the images fine-tuning and evaluation give the model.
Resumes from `<out>.state.pt` (saved every `--save_steps`).

Measured (reports/pick-place-probes/pretrained_vision_wrist_camera): the held-out waypoints come out within 0.6-0.7
cm, yet the fine-tuned policy does not pick and place, and a linear readout of random towers is as precise: the
positions are already in the image tokens, and it is the language model that does not read them out.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from openvla_vq.io import atomic_file, write_json
from openvla_vq.model.prismatic import PrismaticVLA
from openvla_vq.model.vision import ImageProcessor

WAYPOINT_UNIT_M = 0.05  # one unit of OSC_POSE position action: waypoint errors are learned in these units
GRIPPER_UNIT_M = 0.04  # the fingers' open joint range
HELD_OUT_EPISODES = 4  # per task, the last episodes: the report's held-out placements


class FramesError(ValueError):
    """A labelled-frames folder that cannot be used; the message names the fix. The command lines turn it into
    their one-line error, fine-tuning's preflight into a PreflightError."""


def frame_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("task*_ep*.npz"))
    if not files:
        raise FramesError(f"no labelled frames in {folder}: run python -m openvla_vq.sim.scene_frames --out {folder}")
    return files


def load_frames(folder: Path, num_images: int, held_out: int) -> dict[int, dict[str, dict[str, np.ndarray]]]:
    """{task: {"train"|"held_out": arrays}}: preprocessed uint8 images [N, n, 224, 224, 3] and labels."""
    from openvla_vq.data.preprocess import preprocess_image  # the evaluation's path from an observation (loads TensorFlow)

    files = frame_files(folder)
    by_task: dict[int, list[Path]] = {}
    for path in files:
        by_task.setdefault(int(path.name[4:6]), []).append(path)
    frames = {}
    for task, paths in by_task.items():
        if len(paths) <= held_out:
            raise FramesError(f"task {task} has {len(paths)} episodes in {folder}, not more than the {held_out} held out "
                              f"per task: generate more, or hold out fewer (--held_out; fine-tuning: --cotrain_held_out)")
        frames[task] = {}
        for split, part in (("train", paths[:len(paths) - held_out]), ("held_out", paths[len(paths) - held_out:])):
            arrays: dict[str, list] = {"images": [], "waypoints": [], "phase": [], "gripper": [], "eef": []}
            for path in part:
                with np.load(path) as z:
                    cameras = [z["images"], z["wrist_images"]][:num_images]
                    arrays["images"] += [np.stack([preprocess_image(cam[i], crop=False) for cam in cameras])
                                         for i in range(len(z["phase"]))]
                    for key in ("waypoints", "phase", "gripper", "eef"):
                        arrays[key].append(z[key])
                    num_phases = int(z["num_phases"])
                    if "instruction" not in z:
                        raise FramesError(f"{path} has no instruction (recorded before it was kept): delete "
                                          f"{folder} and rerun python -m openvla_vq.sim.scene_frames")
                    instruction = str(z["instruction"])
            frames[task][split] = {"images": np.stack(arrays["images"]),
                                   **{k: np.concatenate(v) for k, v in arrays.items() if k != "images"}}
        frames[task]["num_phases"], frames[task]["instruction"] = num_phases, instruction
    return frames


class FrameHeads(nn.Module):
    """Per task, a linear map from the flattened patch embeddings to [waypoints (3K), fingers (2), hand (3), phase logits]."""

    def __init__(self, features: int, layout: dict[int, tuple[int, int]]) -> None:
        super().__init__()
        self.layout = layout  # task -> (waypoints K, phases)
        self.heads = nn.ModuleDict({str(t): nn.Linear(features, 3 * k + 5 + phases) for t, (k, phases) in layout.items()})

    def forward(self, task: int, patches: torch.Tensor) -> dict[str, torch.Tensor]:
        k, _ = self.layout[task]
        out = self.heads[str(task)](patches.flatten(1))
        return {"waypoints": out[:, :3 * k].view(-1, k, 3), "gripper": out[:, 3 * k:3 * k + 2],
                "eef": out[:, 3 * k + 2:3 * k + 5], "phase": out[:, 3 * k + 5:]}


def targets(split: dict[str, np.ndarray], index: np.ndarray, eef_mean: np.ndarray) -> dict[str, torch.Tensor]:
    """Labels in learning units: waypoints and hand position per 5 cm, fingers per their range."""
    return {"waypoints": torch.from_numpy(split["waypoints"][index] / WAYPOINT_UNIT_M).float(),
            "gripper": torch.from_numpy(split["gripper"][index] / GRIPPER_UNIT_M).float(),
            "eef": torch.from_numpy((split["eef"][index] - eef_mean) / WAYPOINT_UNIT_M).float(),
            "phase": torch.from_numpy(split["phase"][index]).long()}


def losses(pred: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> torch.Tensor:
    fn = nn.functional
    return (fn.smooth_l1_loss(pred["waypoints"], target["waypoints"]) + fn.smooth_l1_loss(pred["gripper"], target["gripper"])
            + fn.smooth_l1_loss(pred["eef"], target["eef"]) + fn.cross_entropy(pred["phase"], target["phase"]))


def encode(model: PrismaticVLA, processor: ImageProcessor, images: np.ndarray) -> torch.Tensor:
    """uint8 [B, n, 224, 224, 3] -> projected patch embeddings [B, P, H], the language model's image tokens."""
    return model.project_patches(processor([tuple(sample) for sample in images]))


@torch.no_grad()
def held_out_errors(model: PrismaticVLA, heads: FrameHeads, processor: ImageProcessor, frames: dict,
                    eef_mean: dict[int, np.ndarray], batch_size: int) -> dict[str, dict[str, float]]:
    """Per task, on the held-out placements: mean |waypoint error| (cm), phase accuracy, and the same for
    predicting the training mean / most frequent phase (what a model that does not read the image achieves)."""
    model.eval()
    report = {}
    for task, splits in frames.items():
        split, train = splits["held_out"], splits["train"]
        errors, correct = [], []
        for start in range(0, len(split["phase"]), batch_size):
            index = np.arange(start, min(start + batch_size, len(split["phase"])))
            pred = heads(task, encode(model, processor, split["images"][index]))
            target = targets(split, index, eef_mean[task])
            errors.append((pred["waypoints"] - target["waypoints"]).abs().mean((1, 2)) * WAYPOINT_UNIT_M * 100)
            correct.append(pred["phase"].argmax(-1) == target["phase"])
        mean_waypoints = train["waypoints"].mean(0)
        report[str(task)] = {
            "waypoint_error_cm": round(float(torch.cat(errors).mean()), 2),
            "waypoint_error_cm_training_mean": round(float(np.abs(split["waypoints"] - mean_waypoints).mean() * 100), 2),
            "phase_accuracy": round(float(torch.cat(correct).float().mean()), 3),
            "phase_accuracy_most_frequent": round(float((split["phase"] == np.bincount(train["phase"]).argmax()).mean()), 3),
            "frames": int(len(split["phase"]))}
    model.train()
    return report


def warmup_cosine(optimizer: torch.optim.Optimizer, steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over the first 10% of steps (at most 100), times a cosine decay to 0 over all of them."""
    warmup = min(100, steps // 10)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / max(1, warmup))
                                             * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))


def train_steps(modules: dict[str, nn.Module], batch_loss: Callable[[int, np.random.Generator], torch.Tensor],
                state_file: Path, steps: int, learning_rate: float, save_steps: int, log_steps: int, seed: int,
                prefix: str) -> list[dict]:
    """AdamW (warm-up x cosine, gradients clipped at norm 1) on the trainable parameters of `modules`, one
    `batch_loss(step, rng)` per step; everything is saved to `state_file` every `save_steps` steps, and a rerun
    resumes from it. Returns the loss curve (every `log_steps`)."""
    rng = np.random.default_rng(seed)
    params = [p for module in modules.values() for p in module.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    schedule = warmup_cosine(optimizer, steps)
    step, curve = 0, []
    if state_file.is_file():
        state = torch.load(state_file, weights_only=False)
        for name, module in modules.items():
            module.load_state_dict(state[name])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        step, curve, rng = state["step"], state["curve"], state["rng"]
        print(f"[{prefix}] resumed at step {step}", flush=True)
    for module in modules.values():
        module.train()
    began = time.perf_counter()
    while step < steps:
        loss = batch_loss(step, rng)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        step += 1
        if step % log_steps == 0:
            curve.append({"step": step, "loss": round(loss.item(), 4)})
            print(f"[{prefix}] step {step}/{steps} loss {loss.item():.4f} ({(time.perf_counter() - began) / 60:.1f} min)",
                  flush=True)
        if step % save_steps == 0 or step == steps:
            with atomic_file(state_file, "wb") as f:
                torch.save({**{name: module.state_dict() for name, module in modules.items()},
                            "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(), "step": step,
                            "curve": curve, "rng": rng}, f)
    return curve


def pretrain(vla: Path, frames_folder: Path, out: Path, steps: int, batch_size: int, learning_rate: float,
             held_out: int, save_steps: int, log_steps: int = 50, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = PrismaticVLA.from_pretrained(vla)
    model.language_model.requires_grad_(False)
    processor = ImageProcessor(model.vision_backbone)
    frames = load_frames(frames_folder, model.config.num_images_in_input, held_out)
    tasks = sorted(frames)
    eef_mean = {t: frames[t]["train"]["eef"].mean(0) for t in tasks}
    features = model.num_patches * model.language_model.config.hidden_size
    heads = FrameHeads(features, {t: (frames[t]["train"]["waypoints"].shape[1], frames[t]["num_phases"]) for t in tasks})

    def batch_loss(step: int, rng: np.random.Generator) -> torch.Tensor:
        task = tasks[step % len(tasks)]  # tasks take turns, one per batch (each has its own head)
        split = frames[task]["train"]
        index = rng.integers(0, len(split["phase"]), batch_size)
        return losses(heads(task, encode(model, processor, split["images"][index])), targets(split, index, eef_mean[task]))

    state_file = out.with_name(out.name + ".state.pt")
    curve = train_steps({"model": model, "heads": heads}, batch_loss, state_file, steps, learning_rate, save_steps,
                        log_steps, seed, "pretrain")
    report = {"vla": str(vla), "frames": str(frames_folder), "steps": steps, "batch_size": batch_size,
              "learning_rate": learning_rate, "training_frames": {str(t): int(len(frames[t]["train"]["phase"])) for t in tasks},
              "held_out": held_out_errors(model, heads, processor, frames, eef_mean, batch_size),
              "curve": curve}
    save_checkpoint(model, vla, out, report, state_file)
    return report


def save_checkpoint(model: PrismaticVLA, vla: Path, out: Path, report: dict, state_file: Path) -> None:
    """The pretrained model in the input checkpoint's layout, its text tokenizer copied, the report beside it; the
    resume state goes last, so a crash before it leaves a rerun to finish the folder."""
    model.save_pretrained(out)
    for extra in sorted(vla.iterdir()):  # the text tokenizer and anything else the checkpoint carries
        if extra.is_file() and not (out / extra.name).exists():
            shutil.copy(extra, out / extra.name)
    write_json(out / "pretrain_report.json", report)
    state_file.unlink()


def command_line(doc: str, pretrain_fn: Callable[..., dict], batch_size: int, argv: list[str] | None) -> None:
    """The command line both pretrainings share: parse, refuse bad inputs in one line, pretrain, print the report."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--vla", type=Path, required=True, help="a VLA checkpoint folder (OpenVLA layout)")
    parser.add_argument("--frames", type=Path, default=Path("data/scene-frames"), help="sim/scene_frames.py's output")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch_size", type=int, default=batch_size)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--held_out", type=int, default=HELD_OUT_EPISODES, help="episodes per task kept out of training, for the report")
    parser.add_argument("--save_steps", type=int, default=500)
    args = parser.parse_args(argv)
    if not (args.vla / "config.json").is_file():
        raise SystemExit(f"error: {args.vla} is not a VLA checkpoint (no config.json): pass --vla <checkpoint folder>")
    if args.steps < 1 or args.held_out < 1 or args.batch_size < 1:
        raise SystemExit(f"error: --steps {args.steps}, --held_out {args.held_out}, --batch_size {args.batch_size}: "
                         "each must be at least 1")
    try:
        frame_files(args.frames)  # before the model loads
        report = pretrain_fn(args.vla, args.frames, args.out, args.steps, args.batch_size, args.learning_rate,
                             args.held_out, args.save_steps)
    except FramesError as e:
        raise SystemExit(f"error: {e}") from None
    print(json.dumps(report["held_out"], indent=1))
    print(f"wrote {args.out}")


def main(argv: list[str] | None = None) -> None:
    command_line(__doc__, pretrain, 32, argv)


if __name__ == "__main__":
    main()
