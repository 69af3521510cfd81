"""Run checkpoints, complete or absent: LoRA adapter, tokenizer reference, statistics, full training state.

runs/<run>/checkpoints/step_<N>/
    adapter/                  PEFT adapter (adapter_config.json + adapter_model.safetensors)
    action_tokenizer.json     {"name", "spec", "fingerprint"} of the action tokenizer
    dataset_statistics.json   {dataset_name: statistics}, for un-normalizing predictions
    training_state.pt         optimizer, lr schedule, step, RNG states, data position (weights_only-loadable)
    optimizer_0*              FSDP only: the sharded optimizer state, written by accelerate
    run_config.json           the FinetuneConfig that produced it
runs/<run>/latest             name of the newest complete checkpoint
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch

from openvla_vq.io import atomic_file, write_json


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])}}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"]["keys"].numpy().astype(np.uint32), state["numpy"]["pos"], 0, 0.0))


def save_checkpoint(accelerator, run_dir: Path, step: int, model, optimizer, scheduler, data_position: int, config,
                    tokenizer_ref: dict, statistics: dict, extra: dict | None = None) -> Path:
    """Collective: every rank calls it. Files go to a staging folder that is renamed when complete."""
    from accelerate.utils import DistributedType
    from accelerate.utils.fsdp_utils import save_fsdp_optimizer

    folder = run_dir / "checkpoints" / f"step_{step:08d}"
    staging = folder.parent / f".{folder.name}.incomplete"
    if accelerator.is_main_process:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    accelerator.wait_for_everyone()
    fsdp = accelerator.distributed_type == DistributedType.FSDP
    full_state = gathered_state_dict(model) if fsdp else accelerator.get_state_dict(model)
    if fsdp:
        save_fsdp_optimizer(accelerator.state.fsdp_plugin, accelerator, optimizer, model, str(staging))
    if accelerator.is_main_process:
        accelerator.unwrap_model(model).save_pretrained(str(staging / "adapter"), state_dict=full_state)
        write_json(staging / "action_tokenizer.json", tokenizer_ref)
        write_json(staging / "dataset_statistics.json", statistics)
        write_json(staging / "run_config.json", json.loads(json.dumps(dataclasses.asdict(config), default=str)))
        torch.save({"step": step, "data_position": data_position, "scheduler": scheduler.state_dict(), "rng": rng_state(),
                    "optimizer": None if fsdp else optimizer.state_dict(), **(extra or {})}, staging / "training_state.pt")
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
        mark_latest(run_dir, folder)
    accelerator.wait_for_everyone()
    return folder


def gathered_state_dict(model) -> dict:
    """Collective: the full state dict of an FSDP model on rank 0 (empty elsewhere). As accelerate's
    get_state_dict, but offloading to CPU only from a GPU: on CPU processes the offload copy crashes torch (2.13)."""
    from torch.distributed.fsdp import FullStateDictConfig, FullyShardedDataParallel, StateDictType

    config = FullStateDictConfig(offload_to_cpu=torch.cuda.is_available(), rank0_only=True)
    with FullyShardedDataParallel.state_dict_type(model, StateDictType.FULL_STATE_DICT, config):
        return model.state_dict()


def mark_latest(run_dir: Path, folder: Path) -> None:
    """Point runs/<run>/latest at a complete checkpoint folder (written after the folder is in place)."""
    with atomic_file(run_dir / "latest") as f:
        f.write(folder.name + "\n")


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / "latest"
    if not pointer.is_file():
        return None
    folder = run_dir / "checkpoints" / pointer.read_text().strip()
    return folder if folder.is_dir() else None


def load_training_state(folder: Path) -> dict:
    return torch.load(folder / "training_state.pt", weights_only=True)
