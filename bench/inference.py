"""Action prediction throughput, binning vs VQ on the same backbone, in one run.

    python bench/inference.py                       # tiny random VLA (Llama-2 vocabulary) on CPU
    python bench/inference.py --size 7b --device cuda --dtype bf16   # 7B-shaped random VLA (GPU)

Queries/s counts predict_action calls' samples; actions/s multiplies by the actions per query (K):
binning emits 7 tokens for 1 action, VQ 4 tokens for 5 actions, BEAST 21 for 5, FAST a variable number (measured,
end marker included) for 5. Both use constrained greedy decoding with
a KV cache; the VQ decoder's cost is included, for the paper-size network (113M parameters) and a small one, and
its share of a query's latency is printed ("decode share").
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from openvla_vq.action_tokenizers import (BinningActionTokenizer, BinningConfig, VQActionTokenizer, VQConfig,
                                         load_action_tokenizer)
from openvla_vq.model import PrismaticVLA, VLAConfig, tiny_config
from openvla_vq.model.tiny import train_text_tokenizer
from openvla_vq.policy import VLAPolicy


def build(size: str, device: str, dtype: torch.dtype, workdir: str):
    """A random VLA with Llama-2's 32000-id vocabulary (so the LM head costs what OpenVLA's does) and a prompt tokenizer.

    The Llama tokenizer cannot be downloaded; a small local one supplies the prompt ids (all < 32000), and only
    their count affects speed.
    """
    from transformers import AutoTokenizer

    torch.manual_seed(0)
    config = tiny_config(32000) if size == "tiny" else VLAConfig()
    with torch.device(device):
        model = PrismaticVLA(config).to(dtype)
    return model, AutoTokenizer.from_pretrained(str(train_text_tokenizer(f"{workdir}/tok", 1600)))


def decode_seconds(tokenizer, ids: torch.Tensor, repeats: int, device: str) -> float:
    """Median time of the decode step inside predict_action (ids -> normalized actions), the VQ decoder's cost."""
    times = []
    for _ in range(repeats + 1):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        tokenizer.decode(ids.cpu())
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=["tiny", "7b"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    with tempfile.TemporaryDirectory() as workdir:
        model, text_tok = build(args.size, args.device, dtype, workdir)
        vocab = model.config.base_vocab_size
        torch.manual_seed(0)
        small = dict(block_out_channels=[32, 64, 64, 128], layers_per_block=2, latent_dim=64)
        tokenizers = {"binning": BinningActionTokenizer(BinningConfig(vocab_size=vocab)),
                      "vq-small": VQActionTokenizer(VQConfig(vocab_size=vocab, **small)).to(args.device),
                      "vq-paper": VQActionTokenizer(VQConfig(vocab_size=vocab)).to(args.device),
                      "fast_m": load_action_tokenizer("fast_m").for_vocab(vocab),  # variable length: measured ids/query
                      "beast": load_action_tokenizer("beast").for_vocab(vocab)}
        for name, tok in tokenizers.items():
            if hasattr(tok, "model"):
                print(f"{name}: VQ-VAE with {sum(p.numel() for p in tok.model.parameters()):,} parameters")
        print(f"model={args.size} device={args.device} dtype={args.dtype} threads={torch.get_num_threads()} "
              f"params={sum(p.numel() for p in model.parameters()):,}")
        print(f"{'tokenizer':9s} {'batch':>5s} {'tokens/query':>12s} {'latency ms':>10s} {'queries/s':>10s} {'actions/s':>10s} "
              f"{'decode share':>12s}")
        results = {}
        for name, tok in tokenizers.items():
            policy = VLAPolicy(model, text_tok, tok)
            for b in args.batch:
                images = [np.random.default_rng(i).integers(0, 255, (224, 224, 3), dtype=np.uint8) for i in range(b)]
                texts = ["put the black bowl on the plate"] * b
                policy.predict_action(images, texts)  # warm-up
                times = []
                for _ in range(args.repeats):
                    if args.device.startswith("cuda"):
                        torch.cuda.synchronize()
                    t = time.perf_counter()
                    policy.predict_action(images, texts)
                    if args.device.startswith("cuda"):
                        torch.cuda.synchronize()
                    times.append(time.perf_counter() - t)
                s = float(np.median(times))
                results[name, b] = b * tok.chunk_len / s
                share = decode_seconds(tok, policy.predict_ids(images, texts), args.repeats, args.device) / s
                print(f"{name:9s} {b:5d} {policy.ids_per_chunk:12.1f} {1000 * s:10.1f} {b / s:10.1f} {b * tok.chunk_len / s:10.1f} "
                      f"{share:12.1%}")
        for b in args.batch:
            for other in ("vq-small", "vq-paper", "fast_m", "beast"):
                print(f"ratio {other}/binning in actions/s at batch {b}: {results[other, b] / results['binning', b]:.2f}x")


if __name__ == "__main__":
    main()
