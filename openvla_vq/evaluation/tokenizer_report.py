"""Quality report of an action tokenizer on held-out trajectories, next to OpenVLA's binning.

    python -m openvla_vq.evaluation.tokenizer_report --tokenizer vq_m --data_root_dir data/rlds \
        --datasets maniskill_synth:val,maniskill_heldout:all,libero_90_experts:all --out reports/vq_m

Per dataset (each normalized with its own q01/q99 statistics; `name:val` = the held-out 5% of episodes,
`name:all` = a dataset the tokenizer never saw):
  * L1 and MSE per action dimension of decode(encode(chunk)) in normalized space, for the tokenizer and binning;
  * per RVQ layer: codes in use, perplexity exp(H(codes)), dead codes (never chosen);
  * overlap rate (ActionCodec §4.1, App. D): for temporally adjacent chunks A_t = a[t:t+K] and A_{t+1} = a[t+1:t+1+K]
    of one episode, the fraction of token positions p with tokens(A_t)[p] == tokens(A_{t+1})[p], averaged over all
    adjacent pairs (position-aligned, 1-step shift; binning's "chunks" are single actions);
  * encode and decode throughput (chunks/s, batch 1024).
Writes report.json and trajectories.png (a held-out episode per dataset: true vs decoded, per dimension).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from openvla_vq.action_tokenizers import ActionTokenizer, BinningActionTokenizer, load_action_tokenizer
from openvla_vq.io import save_figure, write_json


def load_chunks(data_root: Path, name: str, split: str, chunk_len: int, limit: int) -> np.ndarray:
    from openvla_vq.data.rlds_dataset import RLDSChunkDataset

    data = RLDSChunkDataset(data_root, name, chunk_len=chunk_len, split=split, train=False, load_images=False)
    chunks = [s["actions"] for _, s in zip(range(limit), data)]
    return np.stack(chunks).astype(np.float32)


def adjacent_pairs(chunks: np.ndarray) -> np.ndarray:
    """Indices i where chunk i+1 is chunk i shifted by one step in the same episode (ordered, unshuffled stream)."""
    same = np.all(np.isclose(chunks[1:, :-1], chunks[:-1, 1:], atol=1e-7), axis=(1, 2))
    return np.nonzero(same)[0]


def round_trip(tok: ActionTokenizer, chunks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(decoded actions shaped like `chunks`, ids per tokenizer chunk); binning sees each step as its own chunk."""
    k = tok.chunk_len
    x = torch.from_numpy(chunks.reshape(-1, k, chunks.shape[-1]))
    ids = torch.cat([tok.encode(b) for b in x.split(4096)])
    out = torch.cat([tok.decode(b) for b in ids.split(4096)])
    return out.numpy().reshape(chunks.shape), ids.numpy()


def code_usage(tok: ActionTokenizer, ids: np.ndarray) -> list[dict]:
    symbols = tok.ids_to_symbols(torch.from_numpy(ids)).numpy()
    size = tok.id_table.shape[1]
    layers = []
    for p in range(symbols.shape[1]):
        counts = np.bincount(symbols[:, p], minlength=size)
        prob = counts[counts > 0] / counts.sum()
        layers.append({"codes_used": int((counts > 0).sum()), "codebook_size": size, "usage": float((counts > 0).mean()),
                       "perplexity": float(np.exp(-(prob * np.log(prob)).sum())), "dead_codes": int((counts == 0).sum())})
    return layers


def overlap_rate(ids_t: np.ndarray, ids_next: np.ndarray) -> float:
    return float((ids_t == ids_next).mean()) if len(ids_t) else float("nan")


def throughput(tok: ActionTokenizer, batch: int = 1024) -> dict:
    x = torch.rand(batch, tok.chunk_len, tok.action_dim) * 2 - 1
    ids = tok.encode(x)
    start = time.perf_counter()
    tok.encode(x)
    middle = time.perf_counter()
    tok.decode(ids)
    end = time.perf_counter()
    return {"encode_chunks_per_s": batch / (middle - start), "decode_chunks_per_s": batch / (end - middle)}


def evaluate(tok: ActionTokenizer, binning: ActionTokenizer, chunks: np.ndarray) -> dict:
    result = {"chunks": int(len(chunks))}
    pairs = adjacent_pairs(chunks)
    for label, t in (("tokenizer", tok), ("binning", binning)):
        decoded, ids = round_trip(t, chunks)
        err = decoded - chunks
        entry = {"l1_per_dim": np.abs(err).mean(axis=(0, 1)).tolist(), "mse_per_dim": (err ** 2).mean(axis=(0, 1)).tolist(),
                 "l1": float(np.abs(err).mean()), "mse": float((err ** 2).mean())}
        if t.chunk_len == chunks.shape[1]:  # one tokenizer chunk per data chunk
            entry["overlap_rate"] = overlap_rate(ids[pairs], ids[pairs + 1])
            entry["layers"] = code_usage(t, ids)
        else:  # binning: the first actions of adjacent chunks, i.e. consecutive actions of one episode
            first = ids.reshape(len(chunks), chunks.shape[1], -1)[:, 0]
            entry["overlap_rate"] = overlap_rate(first[pairs], first[pairs + 1])
        result[label] = entry
        if t is tok:
            result["decoded_first_episode"] = decoded[: _first_episode_length(chunks, pairs), 0].tolist()
    return result


def _first_episode_length(chunks: np.ndarray, pairs: np.ndarray) -> int:
    """Chunks 0..n-1 form the first episode: pairs starts 0, 1, 2, ... until the first boundary."""
    breaks = np.nonzero(pairs != np.arange(len(pairs)))[0]
    return int(breaks[0] if len(breaks) else len(pairs)) + 1


def plot(path: Path, curves: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
    fig, axes = plt.subplots(len(curves), 7, figsize=(17, 2.2 * len(curves)), squeeze=False)
    for row, (dataset, (true, decoded)) in enumerate(curves.items()):
        for d in range(7):
            ax = axes[row, d]
            ax.plot(true[:, d], color="black", lw=1, label="true")
            ax.plot(decoded[:, d], color="tab:orange", lw=1, ls="--", label="decoded")
            ax.set_title(f"{dataset}: {names[d]}", fontsize=7)
            ax.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=6)
    save_figure(fig, path, dpi=90)


def report(tokenizer: str, data_root: Path, datasets: list[str], out: Path, limit: int = 20_000) -> dict:
    tok = load_action_tokenizer(tokenizer)
    binning = BinningActionTokenizer()
    results, curves = {"tokenizer": tok.name, "fingerprint": tok.fingerprint(), "speed": throughput(tok),
                       "binning_speed": throughput(binning), "datasets": {}}, {}
    for item in datasets:
        name, _, split = item.partition(":")
        chunks = load_chunks(data_root, name, split or "val", tok.chunk_len, limit)
        entry = evaluate(tok, binning, chunks)
        n = len(entry["decoded_first_episode"])
        curves[item] = (chunks[:n, 0], np.asarray(entry.pop("decoded_first_episode")))
        results["datasets"][item] = entry
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "report.json", results)
    plot(out / "trajectories.png", curves)
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--data_root_dir", type=Path, default=Path("data/rlds"))
    parser.add_argument("--datasets", default="maniskill_synth:val,maniskill_heldout:all")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=20_000, help="chunks per dataset at most")
    args = parser.parse_args(argv)
    r = report(args.tokenizer, args.data_root_dir, args.datasets.split(","), args.out, args.limit)
    print(f"{'dataset':32s} {'L1 vq':>8s} {'L1 bins':>8s} {'MSE vq':>9s} {'OR vq':>6s} {'OR bins':>7s} {'layer-1 codes used':>19s}")
    for name, d in r["datasets"].items():
        first = d["tokenizer"]["layers"][0]
        print(f"{name:32s} {d['tokenizer']['l1']:8.4f} {d['binning']['l1']:8.4f} {d['tokenizer']['mse']:9.5f} "
              f"{d['tokenizer']['overlap_rate']:6.3f} {d['binning']['overlap_rate']:7.3f} {first['codes_used']:>12d}/{first['codebook_size']}")
    print(f"speed: {r['speed']}  binning: {r['binning_speed']}")


if __name__ == "__main__":
    main()
