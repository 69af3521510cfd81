"""Fine-tuning data throughput on CPU: our RLDS pipeline next to a plain tf.data baseline, same data, one run.

    python bench/data_pipeline.py [--episodes 20] [--steps 100] [--samples 3000]

Writes a LIBERO-layout RLDS dataset of random 256 px JPEG frames (two cameras) to a temp folder, then times:
  * baseline: tf.data over the frames, decode both JPEGs, bilinear resize to 224, batch 32;
  * ours: RLDSChunkDataset (K=5 chunks, primary image only, lanczos resize 224, OpenVLA augmentation,
    shuffle buffer, normalization) feeding python samples, without and with augmentation.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from openvla_vq.data.rlds_dataset import RLDSChunkDataset, find_builder
from openvla_vq.data.rlds_writer import libero_episode, write_rlds
from openvla_vq.data.tf_env import tf


def make_dataset(root: str, episodes: int, steps: int) -> None:
    def gen():
        for i in range(episodes):
            rng = np.random.default_rng(i)
            base = rng.integers(0, 255, (steps, 32, 32, 3), dtype=np.uint8)
            # 8 px blocks: 17 KB JPEGs, as the 256 px frames rendered by make libero-data (16.7 KB on average)
            images = np.repeat(np.repeat(base, 8, axis=1), 8, axis=2)
            yield libero_episode(images, images[:, ::-1], rng.normal(size=(steps, 8)), rng.normal(size=(steps, 7)),
                                 rng.normal(size=(steps, 7)), "put the bowl on the plate", f"ep{i}")
    write_rlds(root, "libero_90_no_noops", gen())


def baseline(root: str, samples: int) -> float:
    builder = find_builder(root, "libero_90_no_noops")
    frames = builder.as_dataset(split="train").flat_map(lambda e: e["steps"]).repeat()

    def decode(step):
        obs = step["observation"]
        return [tf.image.resize(obs[k], (224, 224)) for k in ("image", "wrist_image")]

    ds = frames.map(decode, num_parallel_calls=tf.data.AUTOTUNE).batch(32).prefetch(tf.data.AUTOTUNE)
    it = iter(ds)
    next(it)
    start, n = time.perf_counter(), 0
    while n < samples:
        next(it)
        n += 32
    return n / (time.perf_counter() - start)


def ours(root: str, samples: int, image_aug: bool) -> float:
    ds = RLDSChunkDataset(root, "libero_90_no_noops", chunk_len=5, train=True, image_aug=image_aug, shuffle_buffer_size=2000)
    it = iter(ds)
    for _ in range(2000):  # fill the shuffle buffer before timing
        next(it)
    start = time.perf_counter()
    for _ in range(samples):
        next(it)
    return samples / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=20)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--samples", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        make_dataset(root, args.episodes, args.steps)
        rows = {"baseline tf.data (decode 2 cams + resize + batch)": baseline(root, args.samples),
                "ours, no augmentation": ours(root, args.samples, image_aug=False),
                "ours, OpenVLA augmentation": ours(root, args.samples, image_aug=True)}
    print(f"{'pipeline':52s} {'samples/s':>10s} {'vs baseline':>12s}")
    base = next(iter(rows.values()))
    for name, rate in rows.items():
        print(f"{name:52s} {rate:10.1f} {rate / base:11.2f}x")


if __name__ == "__main__":
    main()
