#!/usr/bin/env bash
# The study of scripts/study.sh with the data drawn afresh for each replicate: replicate d trains
# every model with training seed 1110 + d on its own synthetic file (data seed d; the study's file is
# data seed 0), so the spread over replicates holds the sampling of the data as well as of the
# training; then merges the replicates into OUT/<generator>/ (scripts/merge_replicates.py).
# Usage: scripts/replicates.sh [OUT] (default replicates/); DATA_SEEDS (default "1 2 3 4 5 21 22 23 24 25":
# data seeds 6-20 and 26-55 chose, confirmed or rejected FSRF variants in docs/research-log/, so they are left out;
# 56-65 hold the comparison with the eleventh round's defaults, docs/results/fresh2),
# GENERATORS, N_TRAIN and MODELS (default all but fsrf-first) as in study.sh; CONFIG, an FSRFConfig
# JSON file for the FSRF models (fsrf compare --config); COMPARE_ARGS, further fsrf compare options
# (the stored replicate, scale and fresh sets were made before the weight average and the prediction
# distillation: COMPARE_ARGS=--no-ema CONFIG=scripts/config_tenth_round.json). Reruns resume.
set -euo pipefail
OUT=${1:-replicates}
MODELS=${MODELS:-all}
DIR=$(cd "$(dirname "$0")" && pwd)
for gen in ${GENERATORS:-factor events}; do
  runs=()
  for d in ${DATA_SEEDS:-1 2 3 4 5 21 22 23 24 25}; do
    mkdir -p "$OUT/$gen"
    [ -f "$OUT/$gen/d$d.pkl" ] || fsrf make-synthetic --preset mosei --generator "$gen" --n-train "${N_TRAIN:-800}" \
      --n-valid 200 --n-test 400 --seed "$d" --out "$OUT/$gen/d$d.pkl"
    fsrf compare --data "$OUT/$gen/d$d.pkl" --models "$MODELS" ${CONFIG:+--config "$CONFIG"} --seeds $((1110 + d)) \
      --epochs 12 --patience 4 --no-progress ${COMPARE_ARGS:-} --out "$OUT/$gen/d$d"
    runs+=("$OUT/$gen/d$d")
  done
  python "$DIR/merge_replicates.py" "$OUT/$gen" "${runs[@]}"
done
