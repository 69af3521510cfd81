"""Pretrain a whole VLA checkpoint to answer, in action-token bins, where the expert's waypoints are from the hand.

    python -m openvla_vq.training.pretrain_vla --vla runs/learn-libero/vla --frames data/scene-frames \
        --out runs/learn-libero/vla-pretrained --steps 2000

OpenVLA fine-tunes a language model that Prismatic's VLM training had already taught to read positions from image
tokens; ours meets image tokens for the first time in fine-tuning, on 10 placements per task, and a linear readout
shows the positions are in those tokens (reports/pick-place-probes/pretrained_vision_wrist_camera). This stage
stands in for the VLM stage with what the simulator offers: on the labelled scene frames (sim/scene_frames.py:
other placements than the demonstrations', DART-noised paths), every weight of the model (towers, projector,
language model, output layer) learns to answer

    <s> In: Where are the waypoints to {instruction}, from the hand?\\nOut: ▁ <phase> <fingers> <x y z per waypoint> </s>

through the prompt-and-label path actions take (model/prompt.py), each value in OpenVLA's 256 bins over [-1, 1]:
the plan's phase spread over the range, the fingers' opening over their range, and each waypoint minus the hand
per `WAYPOINT_RANGE_M`. The answers use the binning action ids, so the output rows fine-tuning reads are trained
too. Writes the checkpoint in the input's layout and `pretrain_report.json` beside it (teacher-forced, on held-out
placements: waypoint error in cm next to predicting the training mean, phase accuracy). Resumes from
`<out>.state.pt`.

Measured (reports/pick-place-probes/pretrained_vla_wrist_camera): the held-out waypoints come out within 0.4-0.5 cm;
fine-tuned on 10 demonstrations per task, the policy picks and places in 2 of 38 episodes (0 before), and it no
longer answers the question: the fine-tune overwrites the readout. Co-trained on the question (`finetune/lora.py
--cotrain_frames`, `load_answers` and `Answers.draw` below) it keeps answering (0.35 / 0.30 cm) and still picks and
places in only 1 of 14 episodes (reports/pick-place-probes/cotrained_vla_wrist_camera).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from openvla_vq.action_tokenizers.binning import BinningActionTokenizer, BinningConfig
from openvla_vq.data.collator import ActionChunkCollator
from openvla_vq.model.prismatic import IGNORE_INDEX, PrismaticVLA
from openvla_vq.model.text_tokenizer import load_text_tokenizer
from openvla_vq.model.vision import ImageProcessor
from openvla_vq.training.pretrain_vision import (
    GRIPPER_UNIT_M,
    command_line,
    load_frames,
    save_checkpoint,
    train_steps,
)

QUESTION = "In: Where are the waypoints to {instruction}, from the hand?\nOut:"
WAYPOINT_RANGE_M = 0.3  # waypoints lie within 27 cm of the hand in every frame recorded (tasks 47, 56): 2.3 mm bins


def answer_values(split: dict[str, np.ndarray], index: np.ndarray, num_phases: int) -> np.ndarray:
    """[B, 2 + 3K] in [-1, 1]: phase, fingers' opening, then each waypoint minus the hand."""
    phase = 2.0 * split["phase"][index] / (num_phases - 1) - 1.0
    fingers = 2.0 * split["gripper"][index, 0] / GRIPPER_UNIT_M - 1.0
    waypoints = split["waypoints"][index].reshape(len(index), -1) / WAYPOINT_RANGE_M
    return np.clip(np.concatenate([phase[:, None], fingers[:, None], waypoints], axis=1), -1.0, 1.0)


class Answers:
    """Per task, the answer's binning tokenizer and collator; batches of question, answer and images."""

    def __init__(self, frames: dict, text_tokenizer, processor: ImageProcessor, base_vocab_size: int,
                 pad_token_id: int, max_length: int) -> None:
        self.frames = frames
        self.tokenizers = {task: BinningActionTokenizer(BinningConfig(action_dim=2 + 3 * f["train"]["waypoints"].shape[1]))
                           .for_vocab(base_vocab_size) for task, f in frames.items()}
        self.collators = {task: ActionChunkCollator(text_tokenizer, tokenizer, processor, pad_token_id, max_length,
                                                    QUESTION) for task, tokenizer in self.tokenizers.items()}

    def batch(self, task: int, split: str, index: np.ndarray) -> dict[str, torch.Tensor]:
        """The training data path's collator, on samples whose "actions" are the answer (one chunk of 2 + 3K values)."""
        data = self.frames[task][split]
        values = answer_values(data, index, self.frames[task]["num_phases"])
        samples = [{"actions": answer[None], "instruction": self.frames[task]["instruction"],
                    **dict(zip(("image", "wrist_image"), images))} for answer, images in zip(values, data["images"][index])]
        return self.collators[task](samples)

    def draw(self, step: int, rng: np.random.Generator, batch_size: int) -> dict[str, torch.Tensor]:
        """A training batch of `batch_size` frames drawn with `rng`; tasks take turns by `step`, so that one batch's
        questions share a length."""
        tasks = sorted(self.frames)
        task = tasks[step % len(tasks)]
        return self.batch(task, "train", rng.integers(0, len(self.frames[task]["train"]["phase"]), batch_size))


def load_answers(frames_folder: Path, model: PrismaticVLA, text_tokenizer, held_out: int) -> Answers:
    """The questions and answers on `frames_folder`'s frames for `model`, the last `held_out` episodes per task apart."""
    config = model.config
    return Answers(load_frames(frames_folder, config.num_images_in_input, held_out), text_tokenizer,
                   ImageProcessor(model.vision_backbone), config.base_vocab_size, config.pad_token_id,
                   config.llm_max_length)


def forward(model: PrismaticVLA, batch: dict[str, torch.Tensor]):
    return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"],
                 pixel_values=batch["pixel_values"], logits_to_keep=model.supervised_tail(batch["labels"]))


@torch.no_grad()
def held_out_errors(model: PrismaticVLA, answers: Answers, batch_size: int) -> dict[str, dict[str, float]]:
    """Per task, on the held-out placements, teacher-forced: mean |waypoint error| (cm) of the greedy bins, phase
    accuracy, and what predicting the training mean / most frequent phase achieves."""
    model.eval()
    report = {}
    for task, splits in answers.frames.items():
        split, train, tokenizer = splits["held_out"], splits["train"], answers.tokenizers[task]
        predicted = []
        for start in range(0, len(split["phase"]), batch_size):
            batch = answers.batch(task, "held_out", np.arange(start, min(start + batch_size, len(split["phase"]))))
            out = forward(model, batch)
            keep = out.logits.shape[1]
            target = batch["labels"][:, -keep:][:, 1:]  # the label each kept position predicts
            answer = out.logits[:, :-1][target != IGNORE_INDEX].view(len(target), -1, out.logits.shape[-1])[:, :-1]
            bins = tokenizer.allowed_ids(0)  # every value shares OpenVLA's one bin range; EOS dropped above
            ids = bins[answer[..., bins].argmax(-1)]
            predicted.append(tokenizer.decode(ids)[:, 0].numpy())
        predicted = np.concatenate(predicted)
        waypoints = predicted[:, 2:].reshape(split["waypoints"].shape) * WAYPOINT_RANGE_M
        phase = np.rint((predicted[:, 0] + 1.0) / 2.0 * (splits["num_phases"] - 1))
        report[str(task)] = {
            "waypoint_error_cm": round(float(np.abs(waypoints - split["waypoints"]).mean() * 100), 2),
            "waypoint_error_cm_training_mean": round(float(np.abs(split["waypoints"] - train["waypoints"].mean(0)).mean() * 100), 2),
            "phase_accuracy": round(float((phase == split["phase"]).mean()), 3),
            "phase_accuracy_most_frequent": round(float((split["phase"] == np.bincount(train["phase"]).argmax()).mean()), 3),
            "frames": int(len(split["phase"]))}
    model.train()
    return report


def pretrain(vla: Path, frames_folder: Path, out: Path, steps: int, batch_size: int, learning_rate: float,
             held_out: int, save_steps: int, log_steps: int = 50, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = PrismaticVLA.from_pretrained(vla)
    model.requires_grad_(True)  # the whole model, as Prismatic's VLM stage trains its language model
    answers = load_answers(frames_folder, model, load_text_tokenizer(vla), held_out)
    tasks = sorted(answers.frames)

    def batch_loss(step: int, rng: np.random.Generator) -> torch.Tensor:
        return forward(model, answers.draw(step, rng, batch_size)).loss

    state_file = out.with_name(out.name + ".state.pt")
    curve = train_steps({"model": model}, batch_loss, state_file, steps, learning_rate, save_steps, log_steps, seed,
                        "pretrain_vla")
    report = {"vla": str(vla), "frames": str(frames_folder), "steps": steps, "batch_size": batch_size,
              "learning_rate": learning_rate, "question": QUESTION, "waypoint_range_m": WAYPOINT_RANGE_M,
              "training_frames": {str(t): int(len(answers.frames[t]["train"]["phase"])) for t in tasks},
              "held_out": held_out_errors(model, answers, batch_size), "curve": curve}
    save_checkpoint(model, vla, out, report, state_file)
    return report


def main(argv: list[str] | None = None) -> None:
    command_line(__doc__, pretrain, 16, argv)


if __name__ == "__main__":
    main()
