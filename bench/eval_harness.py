"""Env steps/s of the evaluation harness next to a naive OpenVLA-style loop, same machine, one run.

    python bench/eval_harness.py --assets_dir ../shared/libero90-assets/assets [--episodes 4] [--steps 200]

Both run the same tiny random policy (binning, one action per query) through eval/libero90's code on LIBERO-90
task 86 of the asset pack:
  * naive (OpenVLA's run_libero_eval.py layout): one env, both cameras rendered (agentview + wrist), batch-1 queries;
  * harness: agentview only (the policy's camera), `--envs` environments with their queries batched.
Steps/s = policy-driven env steps / wall time of the whole evaluation (env start-up included).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from openvla_vq.evaluation.libero90 import EvalConfig, run_eval
from openvla_vq.evaluation.records import read_records
from openvla_vq.model.tiny import write_tiny_checkpoint


def timed(cfg: EvalConfig) -> float:
    start = time.perf_counter()
    run_eval(cfg)
    steps = sum(r["steps"] for r in read_records(Path(cfg.out_dir) / "episodes"))
    return steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets_dir", default=None)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--envs", type=int, default=2)
    parser.add_argument("--task", default="86")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_tiny_checkpoint(Path(tmp) / "tiny")
        common = dict(checkpoint=str(folder), tokenizer="binning", tasks=args.task, trials=args.episodes, max_steps=args.steps,
                      videos_per_task=0, assets_dir=args.assets_dir, center_crop=False)
        naive = timed(EvalConfig(**common, envs_per_process=1, cameras="agentview,robot0_eye_in_hand", out_dir=Path(tmp) / "naive"))
        harness = timed(EvalConfig(**common, envs_per_process=args.envs, out_dir=Path(tmp) / "harness"))
    print(f"{'loop':58s} {'env steps/s':>12s}")
    print(f"{'naive: 1 env, agentview + wrist rendered, batch-1 policy':58s} {naive:12.2f}")
    print(f"{f'harness: {args.envs} envs, agentview only, batched policy':58s} {harness:12.2f}")
    print(f"ratio harness/naive: {harness / naive:.2f}x")


if __name__ == "__main__":
    main()
