"""Compare LIBERO-90 evaluation runs: `python eval/compare.py --runs eval_runs/binning,eval_runs/vq` (make compare RUNS=a,b)."""

from openvla_vq.evaluation.compare import main

if __name__ == "__main__":
    main()
