"""Train a VQ action tokenizer: `accelerate launch tokenizers/train.py --mixture o+l+m [--data_root_dir data/rlds]`.

Mixtures (tokenizers/mixtures.json): o, o+l, o+l+m train progressively, each stage from the previous one's
weights; m trains on the ManiSkill3 trajectories generated here (make synth-maniskill). All options:
openvla_vq/training/train_tokenizer.py. `--resume true` continues an interrupted run exactly.
"""

import sys

import draccus

from openvla_vq.training.train_tokenizer import TokenizerTrainConfig, TokenizerTrainingError, train_tokenizer


@draccus.wrap()
def main(cfg: TokenizerTrainConfig) -> None:
    try:
        out = train_tokenizer(cfg)
    except TokenizerTrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"tokenizer written to {out}")


if __name__ == "__main__":
    main()
