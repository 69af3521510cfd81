"""LoRA fine-tuning of OpenVLA with any registered action tokenizer.

    accelerate launch finetune/lora.py --tokenizer vq_o+l+m --vla_path openvla-7b --data_root_dir datasets/rlds
    accelerate launch finetune/lora.py --tokenizer binning ...              # the baseline
    accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \
        finetune/lora.py ...                                                # 2 CPU processes (gloo), no GPU needed
    accelerate launch finetune/lora.py ... --resume true                    # continue exactly where it stopped

All fields: openvla_vq/training/config.py (`--help`). Problems with the inputs stop the run before the
first step with a one-line `error:`.
"""

import sys

import draccus

from openvla_vq.training.config import FinetuneConfig
from openvla_vq.training.finetune import PreflightError, finetune


@draccus.wrap()
def main(cfg: FinetuneConfig) -> None:
    try:
        run_dir = finetune(cfg)
    except PreflightError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"run: {run_dir}")


if __name__ == "__main__":
    main()
