"""`make demo`: the `make learn-libero` path at demo size, offline on CPU (about 20 minutes on 2 cores).

Three expert tasks from three scenes, one demonstration each, a tiny VLA trained from scratch through
finetune/lora.py with `binning` and with `vq_m`, both evaluated through eval/libero90.py on the demonstrations'
own starting states (does it do what it was taught, closed loop?) and on LIBERO's fixed init states (never trained
on), then one report (demo_out/report/report.md). Every stage is reused on a rerun. See openvla_vq/learn_libero.py.
"""

from __future__ import annotations

from pathlib import Path

from openvla_vq.learn_libero import main as learn_libero

# its own data root: learn-libero's default one holds one dataset, which the demo's three tasks would overwrite
DEMO = {"out": Path("demo_out"), "report": Path("demo_out/report"), "data_root_dir": Path("demo_out/rlds"),
        "tasks": "0,28,47", "episodes_per_task": 1,
        "tokenizers": "binning,vq_m", "steps": 1500, "trained_trials": 1, "protocol_trials": 1, "train_split": "all",
        "eval_max_steps": 150, "videos": 2,
        # OpenVLA's schedule: at demo size it replayed 2/3 trained starts with binning, learn-libero's warm-up and
        # clipping 1/3 (README)
        "warmup_steps": 0, "max_grad_norm": 0.0}


def main(argv: list[str] | None = None) -> dict:
    return learn_libero(argv, defaults=DEMO, prefix="demo")


if __name__ == "__main__":
    main()
