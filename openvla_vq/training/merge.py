"""Merge a run's LoRA adapter into its base VLA, once, into a standalone OpenVLA-layout folder.

    python -m openvla_vq.training.merge runs/<run>/checkpoints/step_00005000 --out merged/ [--device cpu] [--dtype bf16]

Unlike OpenVLA's finetune.py (which reloads and merges the 7B base on every rank at every save,
openvla#277), this runs once, in one process, on the device you choose. The output holds config.json +
safetensors, the text tokenizer, dataset_statistics.json and the action tokenizer reference (action_tokenizer.json).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch


def merged_model(checkpoint: Path, run_config: dict, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """The run's base VLA (run_config["vla_path"]) with the checkpoint's LoRA adapter merged in."""
    from peft import PeftModel

    from openvla_vq.model import PrismaticVLA

    base = PrismaticVLA.from_pretrained(run_config["vla_path"], dtype=dtype, device=device)
    return PeftModel.from_pretrained(base, str(checkpoint / "adapter")).merge_and_unload()


def merge(checkpoint: Path, out: Path, device: str = "cpu", dtype: torch.dtype = torch.float32) -> Path:
    from openvla_vq.io import atomic_dir
    from openvla_vq.model.text_tokenizer import load_text_tokenizer

    run_config = json.loads((checkpoint / "run_config.json").read_text())
    merged_model(checkpoint, run_config, dtype, device).save_pretrained(out)
    with atomic_dir(out.parent / f".{out.name}.extras") as tmp:  # then moved in beside the weights
        load_text_tokenizer(run_config["vla_path"]).save_pretrained(str(tmp))
        for name in ("dataset_statistics.json", "action_tokenizer.json"):
            shutil.copy(checkpoint / name, tmp / name)
        for item in tmp.iterdir():
            item.replace(out / item.name)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="runs/<run>/checkpoints/step_N")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    args = parser.parse_args(argv)
    merge(args.checkpoint, args.out, args.device, torch.bfloat16 if args.dtype == "bf16" else torch.float32)
    print(f"merged {args.checkpoint} -> {args.out}")


if __name__ == "__main__":
    main()
