"""LoRA fine-tuning loop: RLDS -> normalization -> chunks -> action tokenizer -> VLA -> loss, under accelerate.

One process or many (DDP; FSDP via an accelerate config). Everything that can be wrong with the inputs is
checked before the first step (`preflight`). Checkpoints hold the adapter and the full training state, so
`--resume true` continues bitwise-identically on CPU. Merging the adapter into a full model is a separate
command (training/merge.py), run once, never on every rank.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator, PartialState
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin, set_seed
from peft import set_peft_model_state_dict
from safetensors.torch import load_file
from tqdm import tqdm

from openvla_vq.action_tokenizers import ActionTokenizer, ActionTokenizerError, load_action_tokenizer
from openvla_vq.data.collator import ActionChunkCollator
from openvla_vq.data.rlds_dataset import RLDSChunkDataset, dataset_statistics, find_builder
from openvla_vq.data.specs import dataset_spec
from openvla_vq.io import CheckpointError, check_safetensors, write_json
from openvla_vq.model import ImageProcessor, PrismaticVLA, VLAConfig
from openvla_vq.model.prismatic import check_weight_files
from openvla_vq.model.text_tokenizer import check_tokenizer_fits_model, load_text_tokenizer
from openvla_vq.training.checkpoint import latest_checkpoint, load_training_state, save_checkpoint, set_rng_state
from openvla_vq.training.config import FinetuneConfig
from openvla_vq.training.lora import add_lora
from openvla_vq.training.metrics import action_metrics
from openvla_vq.training.pretrain_vision import FramesError, frame_files
from openvla_vq.training.pretrain_vla import load_answers


def lr_multiplier(cfg: FinetuneConfig, step: int) -> float:
    """The learning rate at optimizer step `step` (0-based) as a fraction of --learning_rate: a linear ramp over
    --warmup_steps (from 1/warmup_steps), then constant or a half cosine reaching 0 at --max_steps."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return 1.0
    done = (min(step, cfg.max_steps) - cfg.warmup_steps) / (cfg.max_steps - cfg.warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * done))


class PreflightError(RuntimeError):
    """A problem with the inputs, found before any training step (one-line message)."""


@dataclass
class Inputs:
    tokenizer: ActionTokenizer
    text_tokenizer: object
    model_config: VLAConfig
    statistics: dict
    run_dir: Path
    resume_from: Path | None


def preflight(cfg: FinetuneConfig) -> Inputs:
    """Tokenizer, model folder, vocabulary fit, dataset, statistics, chunk length and resume state, in that order."""
    if cfg.lr_schedule not in ("constant", "cosine"):
        raise PreflightError(f"--lr_schedule {cfg.lr_schedule!r}: pass constant (OpenVLA's) or cosine")
    if not 0 <= cfg.warmup_steps < cfg.max_steps:
        raise PreflightError(f"--warmup_steps {cfg.warmup_steps}: pass 0 (none, OpenVLA's) up to --max_steps - 1 "
                             f"({cfg.max_steps - 1})")
    if cfg.max_grad_norm < 0:
        raise PreflightError(f"--max_grad_norm {cfg.max_grad_norm}: pass 0 (no clipping, OpenVLA's) or a positive norm")
    if cfg.train_split not in ("train", "all"):
        raise PreflightError(f"--train_split {cfg.train_split!r}: pass train (OpenVLA's first 95% of episodes) or all")
    try:
        tokenizer = load_action_tokenizer(cfg.tokenizer)
    except ActionTokenizerError as e:
        raise PreflightError(str(e)) from None
    vla = Path(cfg.vla_path)
    if not (vla / "config.json").is_file():
        raise PreflightError(f"vla_path {cfg.vla_path!r} is not a checkpoint folder with config.json: download it first "
                             f"(e.g. `hf download openvla/openvla-7b --local-dir openvla-7b`) and pass --vla_path DIR")
    try:
        model_config = VLAConfig.from_folder(vla)
        check_weight_files(vla)
        tokenizer = tokenizer.for_vocab(model_config.base_vocab_size)
        text_tokenizer = load_text_tokenizer(vla)
        check_tokenizer_fits_model(tokenizer, model_config, text_tokenizer.all_special_ids)
        builder = find_builder(cfg.data_root_dir, cfg.dataset_name)
        spec = dataset_spec(cfg.dataset_name)
    except (ActionTokenizerError, FileNotFoundError, KeyError, ValueError) as e:
        raise PreflightError(str(e).strip("'\"")) from None
    statistics = dataset_statistics(builder, cfg.dataset_name, spec)
    dims = len(statistics["action"]["q01"])
    if dims != tokenizer.action_dim:
        raise PreflightError(f"{cfg.dataset_name} has {dims}-D actions but tokenizer {tokenizer.name!r} expects {tokenizer.action_dim}-D")
    longest = statistics.get("max_trajectory_length")
    if longest is not None and tokenizer.chunk_len > longest:
        raise PreflightError(f"tokenizer {tokenizer.name!r} needs {tokenizer.chunk_len}-step chunks but the longest episode "
                             f"of {cfg.dataset_name} has {longest} steps")
    if cfg.cotrain_frames is not None:
        if cfg.cotrain_batch_size < 1 or cfg.cotrain_held_out < 1:
            raise PreflightError(f"--cotrain_batch_size {cfg.cotrain_batch_size}, --cotrain_held_out "
                                 f"{cfg.cotrain_held_out}: each must be at least 1")
        try:
            frame_files(Path(cfg.cotrain_frames))
        except FramesError as e:  # its message names the recorder to run
            raise PreflightError(f"--cotrain_frames: {e}") from None
    run_dir = cfg.run_root_dir / cfg.run_name()
    resume_from = latest_checkpoint(run_dir)
    if cfg.resume and resume_from is None:
        raise PreflightError(f"--resume: no checkpoint in {run_dir}; start without --resume")
    if not cfg.resume and resume_from is not None:
        raise PreflightError(f"{run_dir} already has checkpoints: pass --resume true to continue it, or a new --run_id")
    if resume_from is not None:
        if not (resume_from / "dataset_statistics.json").is_file():
            raise PreflightError(f"{resume_from} has no dataset_statistics.json; the checkpoint is incomplete")
        try:
            check_safetensors(resume_from / "adapter" / "adapter_model.safetensors")
        except CheckpointError as e:
            raise PreflightError(f"{e} (resume from an earlier checkpoint: point {run_dir / 'latest'} at it)") from None
        saved = json.loads((resume_from / "action_tokenizer.json").read_text())
        if saved["fingerprint"] != tokenizer.fingerprint():
            raise PreflightError(f"{resume_from} was trained with tokenizer {saved['name']!r} (different weights); "
                                 f"resume with the same --tokenizer")
    return Inputs(tokenizer, text_tokenizer, model_config, statistics, run_dir, resume_from if cfg.resume else None)


def _params_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted((n, p) for n, p in model.named_parameters() if p.requires_grad):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def make_accelerator(cfg: FinetuneConfig, run_dir: Path) -> Accelerator:
    """bf16 on GPU, float32 on CPU. Without a GPU, launched processes form a gloo group; an FSDP launch
    (`accelerate launch --config_file finetune/accelerate_fsdp*.yaml`) keeps its FSDP settings there too."""
    cuda = torch.cuda.is_available()
    log_with = ["tensorboard"] + (["wandb"] if cfg.wandb_project else [])
    accelerator = Accelerator(cpu=not cuda, gradient_accumulation_steps=cfg.grad_accumulation_steps,
                              mixed_precision="bf16" if cuda else "no", log_with=log_with, project_dir=str(run_dir))
    fsdp_launch = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if fsdp_launch and accelerator.distributed_type == DistributedType.MULTI_CPU:
        # accelerate (1.15) switches FSDP on only for accelerator devices, but torch's FSDP shards over gloo on
        # CPU processes: the plugin, read from the same FSDP_* variables the launcher set, is switched on here, in
        # the process-wide state as well (accelerate re-reads it). torch's FSDP wants the device its CPU handle
        # reports, "cpu", where accelerate says "cpu:0".
        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()
        for state in (accelerator.state, PartialState()):
            state.distributed_type, state.device = DistributedType.FSDP, torch.device("cpu")
    return accelerator


def finetune(cfg: FinetuneConfig) -> Path:
    """Train; returns the run directory. Raises PreflightError before any step when inputs are wrong."""
    inputs = preflight(cfg)
    cuda = torch.cuda.is_available()
    accelerator = make_accelerator(cfg, inputs.run_dir)
    set_seed(cfg.seed)
    tokenizer = inputs.tokenizer.to(accelerator.device)
    text_tokenizer = inputs.text_tokenizer
    model = PrismaticVLA.from_pretrained(cfg.vla_path, dtype=torch.bfloat16 if cuda else torch.float32)
    wrist_images = model.config.num_images_in_input > 1  # the model reads the wrist camera too (OpenVLA-OFT)
    if cfg.gradient_checkpointing:
        model.language_model.activation_checkpointing_enable()
    collator = ActionChunkCollator(text_tokenizer, tokenizer, ImageProcessor(model.vision_backbone),
                                   model.config.pad_token_id, cfg.max_length)
    try:
        questions = None if cfg.cotrain_frames is None else \
            load_answers(Path(cfg.cotrain_frames), model, text_tokenizer, cfg.cotrain_held_out)
    except FramesError as e:  # too few episodes for --cotrain_held_out, or frames recorded without the instruction
        raise PreflightError(f"--cotrain_frames: {e}") from None
    model = add_lora(model, cfg.lora_rank, cfg.lora_dropout, tuple(filter(None, cfg.train_modules.split(","))))
    constraint = tokenizer.decoding_constraint(model.config.text_config["vocab_size"])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_multiplier(cfg, step))

    step, data_position = 0, 0
    if inputs.resume_from is not None:
        set_peft_model_state_dict(model, load_file(str(inputs.resume_from / "adapter" / "adapter_model.safetensors")))
        state = load_training_state(inputs.resume_from)
        if state["optimizer"] is not None:
            optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        step, data_position = state["step"], state["data_position"]
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if inputs.resume_from is not None and state["optimizer"] is None:  # FSDP: sharded optimizer state
        from accelerate.utils.fsdp_utils import load_fsdp_optimizer

        load_fsdp_optimizer(accelerator.state.fsdp_plugin, accelerator, optimizer, model, str(inputs.resume_from))

    dataset = RLDSChunkDataset(cfg.data_root_dir, cfg.dataset_name, chunk_len=tokenizer.chunk_len, split=cfg.train_split,
                               train=True, image_aug=cfg.image_aug, shuffle_buffer_size=cfg.shuffle_buffer_size,
                               seed=cfg.seed,
                               process_index=accelerator.process_index, num_processes=accelerator.num_processes,
                               start_index=data_position, wrist_images=wrist_images)
    batches = iter(torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, collate_fn=collator, num_workers=0))
    statistics = {cfg.dataset_name: inputs.statistics}
    tokenizer_ref = {"name": tokenizer.name, "spec": cfg.tokenizer, "fingerprint": tokenizer.fingerprint()}
    if accelerator.is_main_process:
        accelerator.init_trackers(cfg.wandb_project or "openvla-vq", config=json.loads(json.dumps(vars(cfg), default=str)))
        write_json(inputs.run_dir / "dataset_statistics.json", statistics)

    unwrapped = accelerator.unwrap_model(model)
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not accelerator.is_main_process, desc="finetune")
    window_start, window_samples = time.perf_counter(), 0
    while step < cfg.max_steps:
        for _ in range(cfg.grad_accumulation_steps):
            batch = next(batches)
            data_position += cfg.batch_size
            window_samples += cfg.batch_size * accelerator.num_processes
            keep = unwrapped.base_model.model.supervised_tail(batch["labels"])
            with accelerator.accumulate(model), accelerator.autocast():
                out = model(input_ids=batch["input_ids"].to(accelerator.device), labels=batch["labels"].to(accelerator.device),
                            attention_mask=batch["attention_mask"].to(accelerator.device),
                            pixel_values=batch["pixel_values"].to(accelerator.device), logits_to_keep=keep)
                loss = out.loss
                if questions is not None:  # drawn from the data position: a resumed run asks what it would have asked
                    draw = np.random.default_rng((cfg.seed, data_position, accelerator.process_index))
                    asked = questions.draw(step, draw, cfg.cotrain_batch_size)
                    asked = {k: asked[k].to(accelerator.device) for k in ("input_ids", "attention_mask", "labels", "pixel_values")}
                    question_loss = model(**asked, logits_to_keep=unwrapped.base_model.model.supervised_tail(asked["labels"])).loss
                    loss = loss + question_loss
                accelerator.backward(loss)
                if cfg.max_grad_norm > 0 and accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
        step += 1
        bar.update(1)
        if step % cfg.log_steps == 0 or step == cfg.max_steps:
            labels = unwrapped.base_model.model.expand_labels(batch["labels"])[:, -keep:]
            metrics = action_metrics(out.logits.detach(), labels.to(out.logits.device),
                                     text_tokenizer.eos_token_id, tokenizer, constraint, batch["actions"])
            metrics["train_loss"] = out.loss.item()
            if questions is not None:
                metrics["question_loss"] = question_loss.item()
            if cfg.max_grad_norm > 0:
                metrics["grad_norm"] = float(grad_norm)  # before clipping
            metrics["samples_per_s"] = window_samples / (time.perf_counter() - window_start)
            window_start, window_samples = time.perf_counter(), 0
            accelerator.log(metrics, step=step)
            bar.set_postfix(loss=f"{metrics['train_loss']:.3f}", acc=f"{metrics['action_accuracy']:.2f}", l1=f"{metrics['l1_loss']:.3f}")
        if step % cfg.save_steps == 0 or step == cfg.max_steps:
            # DDP keeps full replicas: check that every rank holds the same trainable weights (FSDP shards differ by design)
            digests = accelerator.gather_for_metrics([_params_digest(unwrapped)], use_gather_object=True)
            if accelerator.distributed_type != DistributedType.FSDP and len(set(digests)) != 1:
                raise RuntimeError(f"ranks disagree on the trainable parameters at step {step}: {digests}")
            save_checkpoint(accelerator, inputs.run_dir, step, model, optimizer, scheduler, data_position, cfg, tokenizer_ref,
                            statistics, extra={"rank_digests": list(digests), "num_processes": accelerator.num_processes})
    bar.close()
    accelerator.end_training()
    return inputs.run_dir
