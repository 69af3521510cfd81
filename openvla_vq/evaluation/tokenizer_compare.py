"""Every registered action tokenizer that has weights, on the same held-out trajectories (`make tokenizer-compare`).

Per tokenizer:
  * reconstruction: L1 and MSE per action dimension of decode(encode(chunk)) in normalized action space, over the
    held-out chunks of each dataset (each tokenizer reads its own chunk length from the same trajectories);
  * tokens per action: ids per chunk (a variable-length tokenizer's end marker included, as the model emits it)
    divided by the chunk length: mean, p95, max;
  * adjacent-chunk overlap: for chunks starting one step apart in the same episode, the share of ids they have in
    common (multiset intersection over the longer sequence): how stable the tokens are as the window slides;
  * encode / decode throughput in chunks/s at batch 1,024 (CPU);
  * undecodable rate: a random tiny VLA with the Llama-2 vocabulary generates `generations` id sequences for
    random images and instructions, once through the tokenizer's decoding constraint and once over the whole
    vocabulary (stopping at the end marker or at the maximum length); the share of rows decode() rejects.
Writes results.json and compare.png.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from openvla_vq.action_tokenizers import ActionTokenizer, ActionTokenizerError, DecodingConstraint, load_action_tokenizer
from openvla_vq.action_tokenizers.registry import TokenizerWeightsNotFoundError, registered_names
from openvla_vq.io import save_figure, write_json

HELD_OUT = [("maniskill_heldout", "all"), ("maniskill_synth", "val"), ("libero_90_experts", "val")]
LLAMA2 = Path(__file__).resolve().parents[3] / "shared" / "llama2-tokenizer"


class Unconstrained(DecodingConstraint):
    """Any id of the vocabulary; a row finishes at the end marker (variable length) or after max_length ids."""

    def __init__(self, vocab_size: int, max_length: int, end_id: int | None) -> None:
        self.vocab_size, self.max_length, self.end_id = vocab_size, max_length, end_id

    def start(self, batch: int, device: torch.device | str) -> torch.Tensor:
        return torch.zeros(batch, dtype=torch.long, device=device)

    def allowed(self, state: torch.Tensor) -> torch.Tensor:
        return torch.ones(len(state), self.vocab_size, dtype=torch.bool, device=state.device)

    def advance(self, state: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        done = (state < 0) | ((ids == self.end_id) if self.end_id is not None else torch.zeros_like(ids, dtype=torch.bool))
        return torch.where(done, -1, state + 1)

    def finished(self, state: torch.Tensor) -> torch.Tensor:
        return (state < 0) | (state >= self.max_length)


def chunks_with_adjacency(data_root: Path, chunk_len: int, limit: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Held-out chunks [N, K, D], a mask of chunks that follow the previous one by one step, and the datasets read."""
    from openvla_vq.data.rlds_dataset import find_builder, read_action_chunks

    blocks, follows, used = [], [], []
    for name, split in HELD_OUT:
        try:
            find_builder(data_root, name)
        except FileNotFoundError:
            continue
        used.append(f"{name}:{split}")
        block = read_action_chunks(data_root, name, chunk_len, limit, split=split)
        # within an episode, chunk t+1 is chunk t shifted by one step (the reader does not mark episodes)
        shifted = np.all(block[:-1, 1:] == block[1:, :-1], axis=(1, 2)) if chunk_len > 1 else np.zeros(len(block) - 1, bool)
        follows.append(np.concatenate([[False], shifted]))
        blocks.append(block)
    if not blocks:
        raise FileNotFoundError(f"none of the held-out datasets {[n for n, _ in HELD_OUT]} is under {data_root}: "
                                f"make synth-maniskill and make libero-data first")
    return np.concatenate(blocks), np.concatenate(follows), used


def overlap(a: list[int], b: list[int]) -> float:
    return sum((Counter(a) & Counter(b)).values()) / max(len(a), len(b))


def throughput(fn, batch: torch.Tensor, repeats: int = 3) -> float:
    fn(batch)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(batch)
    return repeats * len(batch) / (time.perf_counter() - start)


def reconstruction(tok: ActionTokenizer, chunks: np.ndarray, follows: np.ndarray) -> dict:
    ids = torch.cat([tok.encode(torch.from_numpy(chunks[i:i + 4096])) for i in range(0, len(chunks), 4096)])
    recon = torch.cat([tok.decode(ids[i:i + 4096]) for i in range(0, len(ids), 4096)]).numpy()
    error = recon - chunks
    rows = tok.token_rows(ids)
    per_action = np.array([len(r) for r in rows]) / tok.chunk_len
    if tok.chunk_len == 1:  # single-action chunks: neighbours are consecutive rows of one episode (ends rarely matter)
        pairs = [(rows[i - 1], rows[i]) for i in range(1, len(rows))]
    else:
        pairs = [(rows[i - 1], rows[i]) for i in np.flatnonzero(follows)]
    batch = torch.from_numpy(chunks[np.arange(1024) % len(chunks)])
    batch_ids = tok.encode(batch)
    return {"chunks": len(chunks), "l1": float(np.abs(error).mean()), "mse": float((error ** 2).mean()),
            "l1_per_dim": np.abs(error).mean((0, 1)).round(5).tolist(), "mse_per_dim": (error ** 2).mean((0, 1)).round(6).tolist(),
            "tokens_per_action": {"mean": float(per_action.mean()), "p95": float(np.percentile(per_action, 95)),
                                  "max": float(per_action.max())},
            "adjacent_overlap": float(np.mean([overlap(a, b) for a, b in pairs])) if pairs else None,
            "encode_chunks_per_s": throughput(tok.encode, batch), "decode_chunks_per_s": throughput(tok.decode, batch_ids)}


def random_vla():
    from openvla_vq.model import PrismaticVLA, tiny_config
    from openvla_vq.model.text_tokenizer import load_text_tokenizer

    torch.manual_seed(0)
    return PrismaticVLA(tiny_config(32000)).eval(), load_text_tokenizer(LLAMA2)


def undecodable_rates(tok: ActionTokenizer, model, text_tokenizer, generations: int, batch_size: int = 100) -> dict:
    """Share of generated rows decode() rejects, with the tokenizer's constraint and over the whole vocabulary."""
    from openvla_vq.model import ImageProcessor
    from openvla_vq.model.prompt import prompt_ids

    vocab = model.config.text_config["vocab_size"]
    tok = tok.for_vocab(model.config.base_vocab_size)
    processor = ImageProcessor(model.vision_backbone)
    verbs = ["pick up", "put", "open", "close", "turn on", "push", "stack", "move"]
    objects = ["the black bowl", "the drawer", "the stove", "the mug", "the ketchup", "the basket", "the plate", "the cube"]
    rates = {}
    for name, constraint in (("constrained", tok.decoding_constraint(vocab)),
                             ("unconstrained", Unconstrained(vocab, tok.max_tokens + (tok.end_id is not None), tok.end_id))):
        failures, rng = 0, np.random.default_rng(0)
        for start in range(0, generations, batch_size):
            n = min(batch_size, generations - start)
            images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(n)]
            prompts = [prompt_ids(text_tokenizer, f"{verbs[rng.integers(8)]} {objects[rng.integers(8)]}") for _ in range(n)]
            ids = model.generate_constrained(torch.stack([processor.to_tensor(im) for im in images]), prompts, constraint)
            if tok.end_id is not None and ids.shape[1] < tok.tokens_per_chunk:  # rows that stopped early: pad as encode() does
                ids = torch.cat([ids, ids.new_full((n, tok.tokens_per_chunk - ids.shape[1]), tok.end_id)], dim=1)
            failures += int((~tok.decodable(ids)).sum())
        rates[name] = {"generations": generations, "undecodable": failures, "rate": failures / generations}
    return rates


def compare(data_root: Path, out: Path, generations: int, limit: int) -> dict:
    model, text_tokenizer = random_vla()
    results, skipped, held_out = {}, {}, {}
    for name in registered_names():
        try:
            tok = load_action_tokenizer(name)
        except TokenizerWeightsNotFoundError:
            skipped[name] = "weights not available here"
            continue
        done = out / "per_tokenizer" / f"{name}.json"  # a rerun resumes: finished tokenizers are not measured again
        key = {"fingerprint": tok.fingerprint(), "generations": generations, "max_chunks": limit}
        if done.is_file() and json.loads(done.read_text()).get("key") == key:
            results[name] = json.loads(done.read_text())["result"]
            continue
        if tok.chunk_len not in held_out:  # each chunk length is read once, whichever tokenizers share it
            held_out[tok.chunk_len] = chunks_with_adjacency(data_root, tok.chunk_len, limit)
        chunks, follows, used = held_out[tok.chunk_len]
        print(f"[compare] {name}: {len(chunks)} held-out chunks of {tok.chunk_len} from {used}", flush=True)
        results[name] = {"type": tok.type_name, "chunk_len": tok.chunk_len, "max_ids_per_chunk": tok.tokens_per_chunk,
                         "datasets": used, **reconstruction(tok, chunks, follows),
                         "generation": undecodable_rates(tok, model, text_tokenizer, generations)}
        write_json(done, {"key": key, "result": results[name]})
    report = {"held_out": [f"{n}:{s}" for n, s in HELD_OUT], "tokenizers": results, "skipped": skipped,
              "random_model": "tiny PrismaticVLA (seed 0), Llama-2 vocabulary (32,000 + <PAD>), greedy decoding"}
    write_json(out / "results.json", report)
    plot(results, out / "compare.png")
    return report


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    dims = ["x", "y", "z", "roll", "pitch", "yaw", "grip"]
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        axes[0].bar(np.arange(7) + i * width, results[name]["l1_per_dim"], width, label=name)
    axes[0].set(xticks=np.arange(7) + 0.4 - width / 2, xticklabels=dims, yscale="log", title="held-out L1 per dimension (normalized)")
    axes[0].legend(fontsize=8)
    axes[1].bar(names, [results[n]["tokens_per_action"]["mean"] for n in names], yerr=None)
    axes[1].scatter(names, [results[n]["tokens_per_action"]["p95"] for n in names], color="k", marker="_", s=300, label="p95")
    axes[1].set(title="ids per action (mean; p95)")
    axes[1].legend(fontsize=8)
    x = np.arange(len(names))
    for j, kind in enumerate(("constrained", "unconstrained")):
        axes[2].bar(x + j * 0.4, [results[n]["generation"][kind]["rate"] for n in names], 0.4, label=kind)
    axes[2].set(xticks=x + 0.2, xticklabels=names, ylim=(0, 1.05), title="undecodable generations, random VLA")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_root_dir", type=Path, default=Path("data/rlds"))
    parser.add_argument("--out", type=Path, default=Path("reports/tokenizer-compare"))
    parser.add_argument("--generations", type=int, default=1000)
    parser.add_argument("--max_chunks", type=int, default=20_000, help="per held-out dataset")
    args = parser.parse_args(argv)
    try:
        report = compare(args.data_root_dir, args.out, args.generations, args.max_chunks)
    except (FileNotFoundError, ActionTokenizerError) as e:
        raise SystemExit(f"error: {e}") from None
    header = f"{'tokenizer':10s} {'L1':>8s} {'MSE':>9s} {'ids/action':>10s} {'p95':>5s} {'max':>5s} {'overlap':>8s} " \
             f"{'enc/s':>9s} {'dec/s':>9s} {'undecodable: constrained':>25s} {'unconstrained':>14s}"
    print(header)
    for name, r in report["tokenizers"].items():
        t, g = r["tokens_per_action"], r["generation"]
        ov = f"{r['adjacent_overlap']:.3f}" if r["adjacent_overlap"] is not None else "-"
        print(f"{name:10s} {r['l1']:8.4f} {r['mse']:9.6f} {t['mean']:10.2f} {t['p95']:5.1f} {t['max']:5.1f} {ov:>8s} "
              f"{r['encode_chunks_per_s']:9,.0f} {r['decode_chunks_per_s']:9,.0f} {g['constrained']['rate']:25.3f} "
              f"{g['unconstrained']['rate']:14.3f}")


if __name__ == "__main__":
    main()
