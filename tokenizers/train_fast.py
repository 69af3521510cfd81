"""Train a FAST tokenizer (DCT + BPE) on RLDS actions: `python tokenizers/train_fast.py --mixture ml --name fast_m`.

All options: openvla_vq/training/train_fast.py. `make train-tokenizer-fast-m` builds the shipped fast_m.
"""

import sys

import draccus

from openvla_vq.training.train_fast import FastTrainConfig, train_fast
from openvla_vq.training.train_tokenizer import TokenizerTrainingError


@draccus.wrap()
def main(cfg: FastTrainConfig) -> None:
    try:
        out = train_fast(cfg)
    except TokenizerTrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"tokenizer written to {out}")


if __name__ == "__main__":
    main()
