"""Resident memory of the fine-tuning data stream over a long run: it must level off once the shuffle buffer is full.

    python bench/data_memory.py [--samples 20000] [--buffers 100000,20000,2000] [--episodes 200 --steps 100]

The stream is finetune's with its default tokenizer: RLDSChunkDataset (binning, shuffle buffer, JPEG decode, resize, OpenVLA augmentation)
-> DataLoader -> ActionChunkCollator (binning ids, Llama-2 prompt, 224 px tensors), batch 16. Each buffer size runs
in a fresh process on a LIBERO-layout dataset of 256 px JPEG frames (two cameras), so the curves are independent.
Prints RSS every --every samples side by side, the growth over the second half of the run, and the fill cost.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LLAMA2 = REPO.parent / "shared" / "llama2-tokenizer"


def measure(root: str, buffer: int, samples: int, every: int, batch_size: int) -> dict:
    """One curve, in this process: RSS (MiB) after each `every` samples."""
    import psutil
    import torch

    from openvla_vq import load_action_tokenizer
    from openvla_vq.data.collator import ActionChunkCollator
    from openvla_vq.data.rlds_dataset import RLDSChunkDataset
    from openvla_vq.model import ImageProcessor
    from openvla_vq.model.text_tokenizer import load_text_tokenizer

    process = psutil.Process()
    rss = lambda: process.memory_info().rss / 2**20  # noqa: E731
    start_rss = rss()
    text = load_text_tokenizer(LLAMA2)
    dino_siglip = [((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]
    tokenizer = load_action_tokenizer("binning").for_vocab(32000)
    collator = ActionChunkCollator(text, tokenizer, ImageProcessor(stats=dino_siglip), 32000, 2048)
    dataset = RLDSChunkDataset(root, "libero_90_no_noops", chunk_len=tokenizer.chunk_len, train=True, image_aug=True,
                               shuffle_buffer_size=buffer)
    batches = iter(torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collator, num_workers=0))
    began = time.perf_counter()
    next(batches)  # the shuffle buffer fills before the first sample comes out
    fill_s, curve, seen = time.perf_counter() - began, [], batch_size
    while seen < samples:
        next(batches)
        seen += batch_size
        if seen % every < batch_size:
            curve.append([seen, round(rss(), 1)])
    return {"buffer": buffer, "start_rss_mib": round(start_rss, 1), "fill_s": round(fill_s, 1), "curve": curve,
            "samples_per_s": round((samples - batch_size) / (time.perf_counter() - began - fill_s), 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=20_000)
    parser.add_argument("--every", type=int, default=2_000)
    parser.add_argument("--buffers", default="100000,20000,2000", help="shuffle buffer sizes (finetune's default first)")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--json", type=Path, help="also write the curves here")
    parser.add_argument("--_one", nargs=2, help=argparse.SUPPRESS)  # internal: root, buffer -> one curve as JSON
    args = parser.parse_args()
    if args._one:
        print(json.dumps(measure(args._one[0], int(args._one[1]), args.samples, args.every, args.batch_size)))
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from data_pipeline import make_dataset

    with tempfile.TemporaryDirectory() as root:
        make_dataset(root, args.episodes, args.steps)
        records = sum(f.stat().st_size for f in Path(root).rglob("*.tfrecord*"))
        jpeg_kib = records / (2 * args.episodes * args.steps) / 1024  # two cameras; states and actions are small
        curves = []
        for buffer in [int(b) for b in args.buffers.split(",")]:
            done = subprocess.run([sys.executable, __file__, "--_one", root, str(buffer), "--samples", str(args.samples),
                                   "--every", str(args.every), "--batch_size", str(args.batch_size)],
                                  capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"error: the buffer {buffer:,} run failed: {done.stderr.strip().splitlines()[-1]}")
            curves.append(json.loads(done.stdout.strip().splitlines()[-1]))
    frames = args.episodes * args.steps
    print(f"RSS (MiB) of the fine-tuning data stream, {frames:,}-frame dataset, batch {args.batch_size}, OpenVLA augmentation")
    print(f"{'samples':>8s} " + " ".join(f"{'buffer ' + format(c['buffer'], ','):>15s}" for c in curves))
    for row in range(len(curves[0]["curve"])):
        print(f"{curves[0]['curve'][row][0]:8,d} " + " ".join(f"{c['curve'][row][1]:15.0f}" for c in curves))
    half = len(curves[0]["curve"]) // 2
    growth = [c["curve"][-1][1] - c["curve"][half][1] for c in curves]
    print(f"{'2nd half':>8s} " + " ".join(f"{g:+15.0f}" for g in growth) + "   (MiB gained over the second half: ~0 = levelled off)")
    print(f"{'fill s':>8s} " + " ".join(f"{c['fill_s']:15.1f}" for c in curves) + "   (seconds before the first batch)")
    print(f"{'samples/s':>8s} " + " ".join(f"{c['samples_per_s']:15.1f}" for c in curves))
    base = curves[0]["curve"][-1][1]
    print(f"{'vs first':>8s} " + " ".join(f"{c['curve'][-1][1] / base:15.2f}" for c in curves) + "   (final RSS ratio)")
    # what one buffered frame costs: the RSS difference between the largest and smallest buffer, per frame
    level = lambda c: sum(v for _, v in c["curve"][half:]) / len(c["curve"][half:])  # noqa: E731
    big, small = max(curves, key=lambda c: c["buffer"]), min(curves, key=lambda c: c["buffer"])
    per_frame_kib = (level(big) - level(small)) * 1024 / (big["buffer"] - small["buffer"])
    print(f"one buffered frame costs {per_frame_kib:.1f} KiB of RSS (second-half levels); the dataset's JPEGs average "
          f"{jpeg_kib:.1f} KiB per camera image: the buffer holds encoded primary-camera frames plus their action chunk")
    if args.json:
        from openvla_vq.io import write_json

        write_json(args.json, {"frames": frames, "batch_size": args.batch_size, "curves": curves})


if __name__ == "__main__":
    main()
