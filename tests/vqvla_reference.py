"""Rebuild the VQ-VLA golden-vector fixtures of ../shared/reference/vqvla-checkpoint (torch + the TSV only).

The recipe is the one documented in golden/README.md §1-2: one seeded generator, keys visited in TSV
order, each drawing rule applied to the whole shape in one call.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch

SHARED = Path(os.environ.get("OPENVLA_VQ_SHARED", Path(__file__).resolve().parents[2] / "shared"))
CHECKPOINT_REF = SHARED / "reference" / "vqvla-checkpoint"
TSV = CHECKPOINT_REF / "state_dict.tsv"
GOLDEN = CHECKPOINT_REF / "golden" / "golden.json"


def read_tsv() -> list[tuple[str, list[int]]]:
    rows = TSV.read_text().splitlines()[1:]
    return [(key, json.loads(shape)) for key, shape, _dtype, _kind in (r.split("\t") for r in rows)]


def reference_time_emb() -> torch.Tensor:
    freqs = 2 ** torch.linspace(0, 8, 10)
    phi = (torch.arange(5, dtype=torch.float32) / 5 * 2 * math.pi).unsqueeze(1)  # float32 ops, as the authors
    a = phi * freqs
    return torch.cat([torch.sin(a), torch.sin(a + math.pi / 2), phi], dim=1).view(1, 5, 21, 1)


def _rule(key: str) -> tuple[float, float] | str:
    """(scale, offset) for drawn tensors, or the name of a non-drawing rule."""
    k = key.removeprefix("vqvae.")
    if k in ("xyz_emb", "euler_emb", "gripper_emb"):
        return (0.5, 0.0)
    if k == "time_emb":
        return "time_emb"
    if k.endswith(".conv.weight") or k.endswith(".conv.bias") or k.startswith("decoder.projection."):
        return (0.02, 0.0)
    if k.endswith(("norm1.weight", "norm2.weight", "conv_norm_out.weight")):
        return (0.1, 1.0)
    if k.endswith(("norm1.bias", "norm2.bias", "conv_norm_out.bias")):
        return (0.1, 0.0)
    if k.endswith("_codebook.embed"):
        return (0.3, 0.0)
    if k.endswith("_codebook.embed_avg"):
        return "copy_embed"
    if k.endswith(("_codebook.cluster_size", "_codebook.initted")):
        return "ones"
    raise AssertionError(f"no recipe rule for {key}")


def synthetic_state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1234)
    sd: dict[str, torch.Tensor] = {}
    for key, shape in read_tsv():
        rule = _rule(key)
        if rule == "time_emb":
            sd[key] = reference_time_emb()
        elif rule == "ones":
            sd[key] = torch.ones(shape)
        elif rule == "copy_embed":
            sd[key] = None  # filled once the layer's embed is drawn (it comes later in TSV order)
        else:
            scale, offset = rule
            t = torch.randn(shape, generator=g, dtype=torch.float32) * scale
            sd[key] = t + offset if offset else t
    for key in sd:
        if sd[key] is None:
            sd[key] = sd[key.replace("embed_avg", "embed")].clone()
    return sd


def state_dict_sha256(sd: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key, _ in read_tsv():
        h.update(sd[key].contiguous().numpy().astype("<f4").tobytes())
    return h.hexdigest()


def golden() -> dict:
    return json.loads(GOLDEN.read_text())


def golden_tensor(value, dtype=torch.float32) -> torch.Tensor:
    return torch.tensor(value, dtype=dtype)
