"""LoRA fine-tuning step throughput and peak memory, binning and VQ label layouts, in one run.

    python bench/finetune.py                                  # tiny config, CPU, fp32
    python bench/finetune.py --size 7b --device cuda --batch 16 --gradient_checkpointing both   # OpenVLA-7B shape, bf16

Synthetic batches of the real shapes (224 px, OpenVLA prompt, T+1 action labels) go through the model with
LoRA (r=32) and AdamW, as finetune/lora.py does (logits only where the loss reads them; next to it, binning with
logits at every position, as OpenVLA computes them); the data pipeline is measured separately (bench/data_pipeline.py).
OpenVLA documents about 72 GB at batch 16 for the 7B; the goal here is <= 48 GB.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from openvla_vq.model import PrismaticVLA, VLAConfig, tiny_config
from openvla_vq.model.prismatic import IGNORE_INDEX
from openvla_vq.training.lora import add_lora

PROMPT_TOKENS = 24  # "In: What action should the robot take to put the black bowl on the plate?\nOut: " in Llama pieces


def batch(size: int, tokens_per_chunk: int, vocab: int, device: str) -> dict:
    n = PROMPT_TOKENS + tokens_per_chunk + 1
    ids = torch.randint(3, vocab - 1100, (size, n), device=device)
    ids[:, 0] = 1
    ids[:, PROMPT_TOKENS:-1] = torch.randint(vocab - 1024, vocab, (size, tokens_per_chunk), device=device)
    ids[:, -1] = 2
    labels = ids.clone()
    labels[:, :PROMPT_TOKENS] = IGNORE_INDEX
    return {"input_ids": ids, "labels": labels, "attention_mask": torch.ones_like(ids),
            "pixel_values": torch.randn(size, 6, 224, 224, device=device)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=["tiny", "7b"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--gradient_checkpointing", choices=["off", "on", "both"], default="off",
                        help="both: the same model without, then with it (one load of the 7B), side by side")
    args = parser.parse_args()
    cuda = args.device.startswith("cuda")
    dtype = torch.bfloat16 if cuda else torch.float32
    torch.manual_seed(0)
    with torch.device(args.device):
        model = PrismaticVLA(tiny_config() if args.size == "tiny" else VLAConfig()).to(dtype)
    vocab = model.config.base_vocab_size
    model = add_lora(model, 32, 0.0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    settings = {"off": [False], "on": [True], "both": [False, True]}[args.gradient_checkpointing]
    print(f"model={args.size} device={args.device} dtype={dtype} batch={args.batch} threads={torch.get_num_threads()} "
          f"params={sum(p.numel() for p in model.parameters()):,} trainable={trainable:,}")
    print(f"{'labels':22s} {'grad ckpt':>9s} {'step s':>8s} {'samples/s':>10s} {'peak memory GB':>15s}")
    rows = {}
    for checkpointing in settings:
        llm = model.base_model.model.language_model
        llm.activation_checkpointing_enable() if checkpointing else llm.activation_checkpointing_disable()
        for name, tokens, tail in [("binning (7+1 tokens)", 7, True), ("vq (4+1 tokens)", 4, True),
                                   ("binning, all logits", 7, False)]:
            data = batch(args.batch, tokens, vocab, args.device)
            # as finetune does: only the positions the loss reads get logits ("all logits": every patch position too)
            keep = model.base_model.model.supervised_tail(data["labels"]) if tail else 0
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            times = []
            for step in range(args.steps + 1):
                start = time.perf_counter()
                with torch.autocast(args.device.split(":")[0], dtype=dtype, enabled=cuda):
                    loss = model(**data, logits_to_keep=keep).loss
                loss.backward()
                optimizer.step()
                optimizer.zero_grad()
                if cuda:
                    torch.cuda.synchronize()
                if step:  # the first step includes one-time allocations
                    times.append(time.perf_counter() - start)
            seconds = sum(times) / len(times)
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
            rows[name, checkpointing] = (seconds, peak)
            print(f"{name:22s} {'on' if checkpointing else 'off':>9s} {seconds:8.3f} {args.batch / seconds:10.1f} {peak:15.2f}")
    for checkpointing in settings:
        t_tail, t_all = rows["binning (7+1 tokens)", checkpointing][0], rows["binning, all logits", checkpointing][0]
        print(f"logits on the supervised tail only, binning: step time {t_tail / t_all:.2f}x of all logits")
    if len(settings) == 2:
        for name in ("binning (7+1 tokens)", "vq (4+1 tokens)"):
            (t0, m0), (t1, m1) = rows[name, False], rows[name, True]
            print(f"gradient checkpointing, {name}: step time {t1 / t0:.2f}x, peak memory {m1 / m0:.2f}x")
    print("peak memory: CUDA max allocated on GPU; process max RSS on CPU (a high-water mark: it never goes down)")


if __name__ == "__main__":
    main()
