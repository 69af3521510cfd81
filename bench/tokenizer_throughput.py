"""Encode+decode throughput of the action tokenizers, side by side in one run.

    python bench/tokenizer_throughput.py [--batch 1024] [--repeats 3] [--device cpu|cuda]

Prints chunks/s and actions/s for encode, decode and the round trip, for binning (K=1) and the
paper-size VQ tokenizer (K=5, 113M parameters, untrained weights: speed does not depend on them),
plus the VQ/binning ratio in actions/s. Actions per second is the fair unit: a VQ chunk holds 5 actions.
"""

from __future__ import annotations

import argparse
import time

import torch

from openvla_vq import load_action_tokenizer
from openvla_vq.action_tokenizers import VQActionTokenizer, VQConfig


def best_seconds(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return min(times)


def measure(tok, batch: int, repeats: int, device: str) -> dict[str, float]:
    tok.to(device)
    actions = (torch.rand(batch, tok.chunk_len, tok.action_dim) * 2 - 1).to(device)
    ids = tok.encode(actions)
    enc = best_seconds(lambda: tok.encode(actions), repeats)
    dec = best_seconds(lambda: tok.decode(ids), repeats)
    return {"encode_chunks_s": batch / enc, "decode_chunks_s": batch / dec, "roundtrip_chunks_s": batch / (enc + dec),
            "roundtrip_actions_s": batch * tok.chunk_len / (enc + dec)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.manual_seed(0)
    toks = {"binning": load_action_tokenizer("binning"), "vq (paper size, 113M)": VQActionTokenizer(VQConfig(), name="vq")}
    print(f"device={args.device} threads={torch.get_num_threads()} batch={args.batch} (best of {args.repeats})")
    print(f"{'tokenizer':24s} {'K':>2s} {'T':>2s} {'encode chunks/s':>16s} {'decode chunks/s':>16s} {'round trip chunks/s':>20s} {'round trip actions/s':>21s}")
    rows = {}
    for name, tok in toks.items():
        r = rows[name] = measure(tok, args.batch, args.repeats, args.device)
        print(f"{name:24s} {tok.chunk_len:2d} {tok.tokens_per_chunk:2d} {r['encode_chunks_s']:16,.0f} {r['decode_chunks_s']:16,.0f} "
              f"{r['roundtrip_chunks_s']:20,.0f} {r['roundtrip_actions_s']:21,.0f}")
    b, v = rows["binning"], rows["vq (paper size, 113M)"]
    print(f"ratio vq/binning in round-trip actions/s: {v['roundtrip_actions_s'] / b['roundtrip_actions_s']:.4f}")


if __name__ == "__main__":
    main()
