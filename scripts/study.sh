#!/usr/bin/env bash
# The study behind docs/results/summary.md and docs/research-log/: FSRF, FSRF as first
# reconstructed, its three ablations and the built-in baselines, 5 seeds each, on both synthetic
# generators (MOSEI layout, 800 / 200 / 400 samples), evaluated under the same masks at every
# intra rate and availability pattern. Reruns resume. Usage: scripts/study.sh [OUT] (default study/);
# GENERATORS="factor" runs one generator only; N_TRAIN and MODELS change the training-set size and
# the models (the scale check of docs/research-log/03-low-rate-cost-and-scale.md:
# N_TRAIN=1600 MODELS=fsrf,late-fusion,late-fusion-md,mult scripts/study.sh scale). SPLIT=valid
# evaluates the trained runs on the validation split instead (tables in OUT/<generator>/valid/).
# COMPARE_ARGS adds options to every fsrf compare (COMPARE_ARGS=--no-ema: the runs before the weight
# average of docs/research-log/10-weight-average.md).
set -euo pipefail
OUT=${1:-study}
MODELS=${MODELS:-fsrf,fsrf-first,fsrf-no-dhf,fsrf-no-das,fsrf-no-recovery,late-fusion,late-fusion-md,mult}
mkdir -p "$OUT"
for gen in ${GENERATORS:-factor events}; do
  [ -f "$OUT/$gen.pkl" ] || fsrf make-synthetic --preset mosei --generator "$gen" --n-train "${N_TRAIN:-800}" \
    --n-valid 200 --n-test 400 --seed 0 --out "$OUT/$gen.pkl"
  fsrf compare --data "$OUT/$gen.pkl" --models "$MODELS" --seeds 1111 1112 1113 1114 1115 \
    --epochs 12 --patience 4 --split "${SPLIT:-test}" --no-progress ${COMPARE_ARGS:-} --out "$OUT/$gen"
done
