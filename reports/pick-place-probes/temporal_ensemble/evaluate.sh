#!/usr/bin/env bash
# One vq_m+l checkpoint evaluated three ways: each query's five actions open loop (the default), one action per
# query (closed loop at every step), and ACT's temporal ensemble (a query every step, the overlapping predictions
# averaged). 9 trained states (the demonstrations' starts) and 10 protocol states (LIBERO's fixed init states).
#   bash reports/pick-place-probes/temporal_ensemble/evaluate.sh CHECKPOINT DATA_ROOT OUT_DIR
set -euo pipefail
checkpoint=$1 data=$2 out=$3
python=${PYTHON:-.venv/bin/python}
for mode in chunk step ensemble; do
  case $mode in
    chunk) flags=() ;;
    step) flags=(--actions_per_query 1) ;;
    ensemble) flags=(--temporal_ensemble true) ;;
  esac
  "$python" eval/libero90.py --checkpoint "$checkpoint" --tasks 47 --trials 9 --max_steps 200 --save_actions true \
    --init_states_file "$data/libero_90_experts/1.0.0/init_states.npz" --out_dir "$out/$mode-trained9" \
    --envs_per_process 2 --videos_per_task 1 "${flags[@]}"
  "$python" eval/libero90.py --checkpoint "$checkpoint" --tasks 47 --trials 10 --max_steps 200 --save_actions true \
    --out_dir "$out/$mode-protocol10" --envs_per_process 2 --videos_per_task 1 "${flags[@]}"
done
for mode in chunk step ensemble; do
  for which in trained9 protocol10; do
    "$python" -c "import json, sys; r = json.load(open(sys.argv[1]))['overall']; \
print(sys.argv[2], sys.argv[3], f\"{r['successes']}/{r['episodes']}\", [round(x, 2) for x in r['wilson95']])" \
      "$out/$mode-$which/results.json" "$mode" "$which"
  done
done
