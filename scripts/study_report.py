"""docs/results/summary.md tables from the results of scripts/study.sh: per generator, every model's mean ± std
over seeds of Has0_F1 and MAE for the groups of the comparison, with the paired t-test p of FSRF
against it, and the conditions (each intra rate, each pattern) where FSRF is below the best
baseline (its ablations included) by more than one standard deviation of the seeds.

    python scripts/study_report.py study/factor/results.json study/events/results.json
    python scripts/study_report.py study/factor/valid/results.json   # after SPLIT=valid scripts/study.sh
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

GROUPS = (("intra r>=0.5", "r ≥ 0.5"), ("inter (7 patterns)", "7 patterns"), ("intra r<0.5", "r < 0.5"))
METRICS = (("Has0_F1_score", "Has0_F1", max), ("MAE", "MAE", min))


def _fmt_p(t: dict, metric: str) -> str:
    p = t.get(metric, {}).get("t_p")
    return "" if p is None or p != p else f"{p:.3f}"


def report(path: Path) -> str:
    r = json.loads(path.read_text())
    ref = r["meta"]["reference"]
    seeds = r["meta"]["seeds"]
    models = list(r["models"])
    split = r["meta"].get("split", "test")
    # a split other than test has its tables one folder down: <generator>/<split>/results.json
    gen = path.parent.parent.name if split != "test" and path.parent.name == split else path.parent.name
    unit = "replicates" if r["meta"].get("replicates") else "seeds"
    what_unit = " (a data draw and a training seed each)" if unit == "replicates" else ""
    lines = [f"**{gen}** generator, {len(seeds)} {unit}{what_unit}, {split} split; p = paired t-test over "
             f"{unit} of {ref} vs. the row (two-sided).", ""]
    head = ["model"]
    for _, lab_g in GROUPS:
        for _, lab, _ in METRICS:
            head += [f"{lab} {lab_g}", "p"]
    lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for m in models:
        row = [f"**{m}**" if m == ref else m]
        for g, _ in GROUPS:
            s = r["summary"][m][g]
            for key, _, _ in METRICS:
                row.append(f"{s['mean'][key]:.3f} ± {s['std'][key]:.3f}")
                row.append("" if m == ref else _fmt_p(r["tests"][m]["groups"][g], key))
        lines.append("| " + " | ".join(row) + " |")
    # per condition: FSRF against the best other model, in units of FSRF's std over seeds
    worse = []
    for kind in ("intra", "inter"):
        for cond in r["models"][ref]["mean"][kind]:
            for key, lab, best in METRICS:
                mine = r["models"][ref]["mean"][kind][cond][key]
                sd = r["models"][ref]["std"][kind][cond][key]
                others = {m: r["models"][m]["mean"][kind][cond][key] for m in models
                          if m != ref and "first reconstruction" not in m}  # baselines only
                bm = best(others, key=others.get)
                gap = (others[bm] - mine) if best is max else (mine - others[bm])
                if gap > sd:
                    worse.append(f"{kind} {cond} {lab}: {mine:.3f} vs. {bm} {others[bm]:.3f} (std {sd:.3f})")
    lines += ["", f"Conditions where {ref} is behind the best baseline (its ablations included) by more than one std of its {unit}: "
              + (f"{len(worse)} — " + "; ".join(worse) if worse else "none") + "."]
    # the runs' own times, summed: a resumed comparison's wall time counts only what it retrained
    runs = [t for per in r["meta"].get("seconds", {}).values() for t in per.values() if t == t]
    if runs:
        what = "training and evaluation" if split == "test" else f"evaluation on the {split} split of runs trained before"
        lines.append(f"Time of its {len(runs)} runs ({what}), summed: {sum(runs) / 60:.0f} min.")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    for p in argv:
        print(report(Path(p)))
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
