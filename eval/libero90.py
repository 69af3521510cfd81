"""LIBERO-90 evaluation with OpenVLA's protocol (see openvla_vq/evaluation/libero90.py).

    accelerate launch eval/libero90.py --checkpoint runs/<run>/checkpoints/step_N --out_dir eval_runs/vq
    make eval-libero90 CHECKPOINT=... [TASKS=38,39] [TRIALS=50] [PROCS=2]

Rerunning the same command continues an interrupted evaluation.
"""

import sys

import draccus

from openvla_vq.action_tokenizers import ActionTokenizerError
from openvla_vq.evaluation.libero90 import EvalConfig, EvalInputError, run_eval
from openvla_vq.io import CheckpointError


@draccus.wrap()
def main(cfg: EvalConfig) -> None:
    try:
        out = run_eval(cfg)
    except (EvalInputError, CheckpointError, ActionTokenizerError, FileNotFoundError) as e:  # bad input: one line
        sys.exit(f"error: {e}")
    print(f"results: {out / 'results.json'}")


if __name__ == "__main__":
    main()
