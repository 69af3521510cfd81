"""The fine-tuning configuration: OpenVLA's FinetuneConfig fields and defaults, plus the action tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class FinetuneConfig:
    # model and data (OpenVLA's names)
    vla_path: str = "openvla/openvla-7b"  # an OpenVLA checkpoint folder (hub ids must be downloaded first)
    data_root_dir: Path = Path("datasets/rlds")  # holds <dataset_name>/<version>/
    dataset_name: str = "libero_90_no_noops"
    run_root_dir: Path = Path("runs")
    tokenizer: str = "binning"  # a registered action tokenizer name (vq_o, vq_o+l, vq_o+l+m, ...) or a folder
    # optimisation (OpenVLA: AdamW, constant lr, no clipping, no weight decay)
    batch_size: int = 16
    max_steps: int = 200_000
    save_steps: int = 5_000
    learning_rate: float = 5e-4
    lr_schedule: str = "constant"  # OpenVLA's; "cosine" decays to 0 at max_steps (training from scratch converges)
    warmup_steps: int = 0  # OpenVLA's: none; > 0 ramps the rate up linearly over these first steps, then the schedule
    max_grad_norm: float = 0.0  # OpenVLA's: 0, no clipping; > 0 clips the global gradient norm before each update
    grad_accumulation_steps: int = 1
    image_aug: bool = True
    shuffle_buffer_size: int = 100_000
    # "train": the first 95% of episodes, as OpenVLA's RLDS loader takes from a dataset without a validation split;
    # "all": every episode (make learn-libero's small runs, whose held-out measure is other starting states)
    train_split: str = "train"
    # LoRA
    lora_rank: int = 32
    lora_dropout: float = 0.0
    # modules trained in full next to LoRA (PEFT modules_to_save), comma-separated: "lm_head" when the backbone
    # is trained from scratch (make learn-libero); empty for OpenVLA's LoRA
    train_modules: str = ""
    # co-training (RT-2 keeps its web data beside the robot data): each step also asks pretrain_vla.py's waypoint
    # question on this many labelled scene frames (sim/scene_frames.py) from `cotrain_frames`, the loss added to the
    # actions'; the last `cotrain_held_out` episodes per task are never asked (the pretraining's held-out placements)
    cotrain_frames: Path | None = None
    cotrain_batch_size: int = 8
    cotrain_held_out: int = 4
    gradient_checkpointing: bool = False  # trades compute for memory on the 7B model
    # bookkeeping
    log_steps: int = 10
    seed: int = 7
    run_id: str | None = None  # default: derived from model, data, tokenizer and hyper-parameters
    resume: bool = False  # continue the run in run_root_dir/run_id from its latest checkpoint
    wandb_project: str | None = None  # log to Weights & Biases too (entity from your wandb login)
    max_length: int = 2048

    def run_name(self) -> str:
        if self.run_id:
            return self.run_id
        base = Path(self.vla_path).name
        tok = Path(self.tokenizer).name
        return (f"{base}+{self.dataset_name}+{tok}+b{self.batch_size * self.grad_accumulation_steps}"
                f"+lr-{self.learning_rate}+lora-r{self.lora_rank}+dropout-{self.lora_dropout}"
                + ("--image_aug" if self.image_aug else "")
                + (f"--cotrain-{self.cotrain_batch_size}" if self.cotrain_frames is not None else ""))
