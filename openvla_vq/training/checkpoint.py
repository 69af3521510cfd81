"""Run checkpoints, written atomically: LoRA adapter, tokenizer reference, statistics, full training state.

runs/<run>/checkpoints/step_<N>/
    adapter/                  PEFT adapter (adapter_config.json + adapter_model.safetensors)
    tokenizer.json            {"name", "fingerprint"} of the action tokenizer
    dataset_statistics.json   {dataset_name: statistics}, for un-normalizing predictions
    training_state.pt         optimizer, lr schedule, step, RNG states, data position (weights_only-loadable)
    run_config.json           the FinetuneConfig that produced it
runs/<run>/latest             name of the newest complete checkpoint
"""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import numpy as np
import torch

from openvla_vq.io import atomic_dir, atomic_file, write_json


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
            "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2])}}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((3, tuple(state["python"]), None))
    np.random.set_state(("MT19937", state["numpy"]["keys"].numpy().astype(np.uint32), state["numpy"]["pos"], 0, 0.0))


def save_checkpoint(run_dir: Path, step: int, peft_model, optimizer, scheduler, data_position: int, config,
                    tokenizer_ref: dict, statistics: dict, extra: dict | None = None) -> Path:
    folder = run_dir / "checkpoints" / f"step_{step:08d}"
    with atomic_dir(folder) as tmp:
        peft_model.save_pretrained(str(tmp / "adapter"))
        write_json(tmp / "tokenizer.json", tokenizer_ref)
        write_json(tmp / "dataset_statistics.json", statistics)
        write_json(tmp / "run_config.json", json.loads(json.dumps(dataclasses.asdict(config), default=str)))
        torch.save({"step": step, "data_position": data_position, "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": rng_state(), **(extra or {})}, tmp / "training_state.pt")
    with atomic_file(run_dir / "latest") as f:
        f.write(folder.name + "\n")
    return folder


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / "latest"
    if not pointer.is_file():
        return None
    folder = run_dir / "checkpoints" / pointer.read_text().strip()
    return folder if folder.is_dir() else None


def load_training_state(folder: Path) -> dict:
    return torch.load(folder / "training_state.pt", weights_only=True)
