"""Is the reference model not worse than each other model by more than a margin, and is it better?

    python scripts/noninferiority.py RESULTS [RESULTS ...] [--margin-f1 0.01] [--margin-mae 0.01]

RESULTS is a results.json of `fsrf compare` or of scripts/merge_replicates.py (replicates that each
draw their data afresh are what this test is for: their spread holds the sampling of the data). Per
model, group (r ≥ 0.5, the 7 patterns, r < 0.5) and metric, with d the paired differences of the
reference against the model over the seeds or replicates (signed so that d > 0 means the reference is
better: Has0_F1 higher, MAE lower):

* non-inferiority: the one-sided paired t-test of H0 mean(d) <= -margin against mean(d) > -margin;
* superiority: the one-sided paired t-test of H0 mean(d) <= 0 against mean(d) > 0.

A margin is the largest deficit still called "not worse"; 0.01 (one point of F1, 0.01 of MAE) is
about the smallest difference MSA papers report as a gain. The tables print mean(d) with both p.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

COLUMNS = (("intra r>=0.5", "r ≥ 0.5"), ("inter (7 patterns)", "7 patterns"), ("intra r<0.5", "r < 0.5"))
METRICS = (("Has0_F1_score", "Has0_F1", 1.0), ("MAE", "MAE", -1.0))


def one_sided(d: np.ndarray, margin: float) -> float:
    """p of the one-sided paired t-test of H0 mean(d) <= -margin (d > 0: the reference is better)."""
    d = np.asarray(d, dtype=np.float64)
    n = len(d)
    if n < 2:
        return float("nan")
    sd = d.std(ddof=1)
    shifted = d.mean() + margin
    if sd == 0:
        return 0.0 if shifted > 0 else 1.0
    return float(stats.t.sf(shifted / (sd / np.sqrt(n)), n - 1))


def table(results: dict, margins: dict[str, float]) -> str:
    ref = results["meta"]["reference"]
    summ = results["summary"]
    lines = [f"| model | metric | {' | '.join(lab for _, lab in COLUMNS)} |", "|---" * (len(COLUMNS) + 2) + "|"]
    for other in results["models"]:
        if other == ref:
            continue
        for key, lab, sign in METRICS:
            cells = []
            for group, _ in COLUMNS:
                a, b = summ[ref][group]["per_seed"], summ[other][group]["per_seed"]
                common = [s for s in a if s in b]
                d = sign * (np.array([a[s][key] for s in common]) - np.array([b[s][key] for s in common]))
                p_ni, p_sup = one_sided(d, margins[key]), one_sided(d, 0.0)
                cells.append(f"{d.mean():+.3f} (non-inf. p = {p_ni:.3f}; sup. p = {p_sup:.3f})")
            lines.append(f"| {other} | {lab} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results", nargs="+", type=Path)
    ap.add_argument("--margin-f1", type=float, default=0.01, help="non-inferiority margin of Has0_F1 (default 0.01)")
    ap.add_argument("--margin-mae", type=float, default=0.01, help="non-inferiority margin of MAE (default 0.01)")
    args = ap.parse_args(argv)
    for name, v in (("--margin-f1", args.margin_f1), ("--margin-mae", args.margin_mae)):
        if not v >= 0:
            print(f"noninferiority: {name} must be >= 0; got {v}", file=sys.stderr)
            return 2
    missing = [str(p) for p in args.results if not p.is_file()]
    if missing:
        print(f"noninferiority: no results file {', '.join(missing)}", file=sys.stderr)
        return 2
    margins = {"Has0_F1_score": args.margin_f1, "MAE": args.margin_mae}
    for path in args.results:
        r = json.loads(path.read_text(encoding="utf-8"))
        n = len(r["meta"]["seeds"])
        print(f"{path}: {r['meta']['reference']} against each model, {n} paired "
              f"{'replicates' if r['meta'].get('replicates') else 'seeds'}; mean difference (positive: "
              f"{r['meta']['reference']} better), one-sided paired t-tests, margins Has0_F1 {args.margin_f1}, "
              f"MAE {args.margin_mae}\n")
        print(table(r, margins))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
