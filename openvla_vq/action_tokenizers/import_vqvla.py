"""Import the authors' released VQ-VLA tokenizer (`all_data_vq.pth`) into our VQ implementation.

    python -m openvla_vq.action_tokenizers.import_vqvla all_data_vq.pth --out tokenizers/vq_o+l+m

Accepts a full training checkpoint ({"model", "step", "args", "optimizer", "scaler"}), a
{"model": state_dict} dict, or a bare state dict, with or without the `vqvae.` key prefix. The file is
read with `weights_only=True` (no arbitrary code is unpickled); only `argparse.Namespace`, which the
authors store under "args", is allowed in addition. The 374 tensors map one-to-one, by name, onto the
"vq-vla" preset of our network (see vq_network.py), so nothing is renamed or reshaped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from openvla_vq.action_tokenizers.base import ActionTokenizerError
from openvla_vq.action_tokenizers.vq import VQActionTokenizer, VQConfig
from openvla_vq.io import check_state_dict

PREFIX = "vqvae."


class CheckpointImportError(ActionTokenizerError):
    pass


def read_checkpoint(path: str | Path) -> object:
    """torch.load with weights_only=True, allowing only argparse.Namespace besides tensors and containers."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointImportError(f"{path}: no such file; download all_data_vq.pth from the VQ-VLA release first")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch.load raises many types on garbage (UnpicklingError, IndexError, BadZipFile, ...)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointImportError(f"{path}: not a loadable torch checkpoint ({first[:200]})") from None


def extract_state_dict(obj: object) -> dict[str, torch.Tensor]:
    """The model tensors of any accepted checkpoint form, with the `vqvae.` prefix removed."""
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointImportError(
            "checkpoint holds no state dict: expected a dict of tensors, or one under the key 'model'"
        )
    return {k.removeprefix(PREFIX): v for k, v in obj.items()}


def convert_state_dict(state: dict[str, torch.Tensor], name: str = "vq_o+l+m") -> VQActionTokenizer:
    """Load an authors' state dict into the "vq-vla" preset; every key, shape and `initted` flag is checked."""
    tok = VQActionTokenizer(VQConfig.preset_config("vq-vla"), name=name)
    check_state_dict(tok.model, state, "checkpoint does not match the VQ-VLA tokenizer layout", CheckpointImportError)
    not_init = [k for k in state if k.endswith("_codebook.initted") and not bool((state[k] == 1).all())]
    if not_init:
        raise CheckpointImportError(
            f"checkpoint codebooks were never initialised ({not_init[0]} is 0): this is not a trained tokenizer"
        )
    tok.model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    return tok


def import_vqvla(checkpoint: str | Path, out: str | Path, name: str = "vq_o+l+m") -> VQActionTokenizer:
    tok = convert_state_dict(extract_state_dict(read_checkpoint(checkpoint)), name=name)
    tok.save(out)
    return tok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="the authors' all_data_vq.pth (or any checkpoint of that network)")
    parser.add_argument("--out", default="tokenizers/vq_o+l+m", help="tokenizer folder to write (default: %(default)s)")
    parser.add_argument("--name", default="vq_o+l+m", help="name recorded in the folder (default: %(default)s)")
    args = parser.parse_args(argv)
    try:
        tok = import_vqvla(args.checkpoint, args.out, args.name)
    except ActionTokenizerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    n = sum(v.numel() for v in tok.model.state_dict().values())
    print(f"imported {len(tok.model.state_dict())} tensors ({n:,} values) -> {args.out} as {tok!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
