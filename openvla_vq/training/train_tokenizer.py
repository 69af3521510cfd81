"""Train a VQ action tokenizer on RLDS action chunks, progressively over the stages of a mixture.

Each stage samples its datasets by weight (each normalized with its own q01/q99 statistics, gripper left as
is), chunks K=5 future actions with end-of-episode padding, and continues from the previous stage's weights.
AdamW (betas 0.9/0.95, weight decay), cosine decay to min_learning_rate over all stages, gradient clipping,
bf16 autocast on GPU. Checkpoints hold the weights and the full training state (optimizer, schedule, stage,
position in the stage's data stream, RNG), so `--resume true` ends with the same weights as an uninterrupted
run. The result is a tokenizer folder the registry loads, with every dataset's statistics in its config.json.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm import tqdm

from openvla_vq.action_tokenizers import VQActionTokenizer, VQConfig
from openvla_vq.action_tokenizers.registry import tokenizers_dir
from openvla_vq.data.rlds_dataset import RLDSChunkDataset
from openvla_vq.io import CheckpointError, atomic_dir, load_safetensors
from openvla_vq.training.checkpoint import latest_checkpoint, load_training_state, mark_latest, rng_state, set_rng_state


@dataclass
class TokenizerTrainConfig:
    mixture: str = "o+l+m"  # a key of tokenizers/mixtures.json: o, o+l, o+l+m, m
    data_root_dir: Path = Path("data/rlds")
    name: str | None = None  # default vq_<mixture>
    out: Path | None = None  # default tokenizers/<name>/, where the registry looks
    run_root_dir: Path = Path("runs/tokenizers")
    # architecture (the paper's sizes by default)
    chunk_len: int = 5
    block_out_channels: list = field(default_factory=lambda: [128, 256, 256, 512])
    layers_per_block: int = 4
    norm_groups: int = 32
    latent_dim: int = 128
    num_quantizers: int = 4
    codebook_size: int = 256
    codebook_update: str = "loss"  # "loss" (paper Eq. 1) or "ema" (the authors' code)
    ema_decay: float = 0.99
    dead_code_threshold: float = 0.05
    # optimisation
    steps_per_stage: int = 100_000
    batch_size: int = 1024
    learning_rate: float = 1e-4
    min_learning_rate: float = 1e-5
    weight_decay: float = 2e-4
    grad_clip: float = 1.0
    shuffle_buffer_size: int = 200_000
    save_steps: int = 1000
    log_steps: int = 100
    seed: int = 42
    resume: bool = False
    init_from: str | None = None  # a tokenizer (registry name or folder) to continue from, e.g. vq_m for "m+l"

    @property
    def tokenizer_name(self) -> str:
        return self.name or f"vq_{self.mixture}"


class TokenizerTrainingError(RuntimeError):
    """A problem with the run's inputs (one-line message)."""


def stack_actions(samples: list[dict]) -> torch.Tensor:
    return torch.from_numpy(np.stack([s["actions"] for s in samples]))


def mixture_stages(mixture: str) -> list[dict]:
    table = json.loads((tokenizers_dir() / "mixtures.json").read_text())
    if mixture not in table or mixture.startswith("_"):
        raise TokenizerTrainingError(f"unknown mixture {mixture!r}; known: {sorted(k for k in table if not k.startswith('_'))} (tokenizers/mixtures.json)")
    return table[mixture]["stages"]


def check_stages(data_root: Path, mixture: str, stages: list[dict]) -> None:
    """Every dataset of every stage exists and has a spec, before the first step."""
    from openvla_vq.data.rlds_dataset import find_builder
    from openvla_vq.data.specs import dataset_spec

    for stage in stages:
        for name, _ in stage["datasets"]:
            try:
                find_builder(data_root, name)
                dataset_spec(name)
            except (FileNotFoundError, KeyError) as e:
                raise TokenizerTrainingError(f"stage {stage['name']} of mixture {mixture}: {str(e).strip(chr(34))}") from None


def _checkpoint(run_dir: Path, step: int, tokenizer: VQActionTokenizer, optimizer, scheduler, stage: int, position: int) -> None:
    folder = run_dir / "checkpoints" / f"step_{step:08d}"
    with atomic_dir(folder) as tmp:
        tokenizer.save(tmp / "tokenizer")
        torch.save({"step": step, "stage": stage, "position": position, "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": rng_state()}, tmp / "training_state.pt")
    mark_latest(run_dir, folder)


def train_tokenizer(cfg: TokenizerTrainConfig) -> Path:
    stages = mixture_stages(cfg.mixture)
    check_stages(cfg.data_root_dir, cfg.mixture, stages)
    run_dir = cfg.run_root_dir / cfg.tokenizer_name
    latest = latest_checkpoint(run_dir)
    if cfg.resume != (latest is not None):
        raise TokenizerTrainingError(f"{run_dir}: " + ("no checkpoint to resume" if cfg.resume else
                                             "already has checkpoints; pass --resume true or another --name"))
    cuda = torch.cuda.is_available()
    accelerator = Accelerator(cpu=not cuda, mixed_precision="bf16" if cuda else "no", log_with="tensorboard",
                              project_dir=str(run_dir))
    set_seed(cfg.seed)
    config = VQConfig(chunk_len=cfg.chunk_len, block_out_channels=list(cfg.block_out_channels), layers_per_block=cfg.layers_per_block,
                      norm_groups=cfg.norm_groups, latent_dim=cfg.latent_dim, num_quantizers=cfg.num_quantizers,
                      codebook_size=cfg.codebook_size, codebook_update=cfg.codebook_update, ema_decay=cfg.ema_decay,
                      dead_code_threshold=cfg.dead_code_threshold)
    tokenizer = VQActionTokenizer(config, name=cfg.tokenizer_name)
    if cfg.init_from and not cfg.resume:  # progressive training: start from another tokenizer's weights
        from openvla_vq.action_tokenizers import ActionTokenizerError, load_action_tokenizer

        try:
            start = load_action_tokenizer(cfg.init_from)
        except ActionTokenizerError as e:
            raise TokenizerTrainingError(f"--init_from {cfg.init_from}: {e}") from None
        try:
            tokenizer.model.load_state_dict(start.model.state_dict())
        except (AttributeError, RuntimeError):
            raise TokenizerTrainingError(f"--init_from {cfg.init_from}: not a VQ tokenizer with this run's architecture "
                                         f"(pass the same --block_out_channels/--latent_dim/... it was trained with)") from None
    net = tokenizer.model.train().requires_grad_(True)  # EMA codebooks are buffers: never trained by the optimizer
    decay = [p for n, p in net.named_parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for n, p in net.named_parameters() if p.requires_grad and p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=cfg.learning_rate, betas=(0.9, 0.95))
    total = cfg.steps_per_stage * len(stages)
    floor = cfg.min_learning_rate / cfg.learning_rate
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    step, stage_index, position = 0, 0, 0
    if cfg.resume:
        try:
            net.load_state_dict(load_safetensors(latest / "tokenizer" / "model.safetensors"))
        except CheckpointError as e:
            raise TokenizerTrainingError(f"--resume: {e}") from None
        state = load_training_state(latest)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        step, stage_index, position = state["step"], state["stage"], state["position"]
    model, optimizer, scheduler = accelerator.prepare(net, optimizer, scheduler)
    if accelerator.is_main_process:
        accelerator.init_trackers("tokenizer", config={k: str(v) for k, v in vars(cfg).items()})
    statistics: dict = {}
    bar = tqdm(total=total, initial=step, disable=not accelerator.is_main_process, desc=f"tokenizer {cfg.mixture}")
    while stage_index < len(stages):
        stage = stages[stage_index]
        data = RLDSChunkDataset(cfg.data_root_dir, [tuple(d) for d in stage["datasets"]], chunk_len=cfg.chunk_len,
                                load_images=False, train=True, shuffle_buffer_size=cfg.shuffle_buffer_size, seed=cfg.seed + stage_index,
                                process_index=accelerator.process_index, num_processes=accelerator.num_processes, start_index=position)
        statistics.update(data.statistics_by_name)
        batches = iter(torch.utils.data.DataLoader(data, batch_size=cfg.batch_size, num_workers=0,
                                                   collate_fn=stack_actions))
        end = (stage_index + 1) * cfg.steps_per_stage
        start_time = time.perf_counter()
        while step < end:
            actions = next(batches).to(accelerator.device)
            position += cfg.batch_size
            with accelerator.autocast():
                out = model(actions)
            accelerator.backward(out["loss"])
            accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            step += 1
            bar.update(1)
            if step % cfg.log_steps == 0:
                codes = out["codes"][:, 0]
                p = torch.bincount(codes, minlength=cfg.codebook_size).float() / codes.numel()
                metrics = {"recon_mse": out["recon_loss"].item(), "commit": out["commit_loss"].item(),
                           "layer0_perplexity": torch.exp(-(p[p > 0] * p[p > 0].log()).sum()).item(),
                           "lr": scheduler.get_last_lr()[0], "chunks_per_s": cfg.batch_size * cfg.log_steps / (time.perf_counter() - start_time)}
                start_time = time.perf_counter()
                accelerator.log(metrics, step=step)
                bar.set_postfix(stage=stage["name"], mse=f"{metrics['recon_mse']:.4f}", ppl=f"{metrics['layer0_perplexity']:.0f}")
            if step % cfg.save_steps == 0 or step == end:
                next_stage, next_position = (stage_index + 1, 0) if step == end else (stage_index, position)
                if accelerator.is_main_process:
                    _checkpoint(run_dir, step, tokenizer, optimizer, scheduler, next_stage, next_position)
                accelerator.wait_for_everyone()
        stage_index, position = stage_index + 1, 0
    bar.close()
    accelerator.end_training()
    out_dir = cfg.out or tokenizers_dir() / cfg.tokenizer_name
    if accelerator.is_main_process:
        tokenizer.model.eval().requires_grad_(False)
        tokenizer.save(out_dir, metadata={"mixture": cfg.mixture, "stages": stages, "steps": step,
                                          "dataset_statistics": statistics})
    return Path(out_dir)
