"""How often issue 10's acceptance rule fails a model that is as good as its competitors.

    python scripts/criterion_null.py STUDY_RESULTS EXTRA_RESULTS [--draws N] [--seed S]

The rule, per generator, 5 training seeds on one data draw: the candidate's mean Has0_F1 over
r ≥ 0.5 and over the 7 patterns is at least every competitor's, its MAE there at most theirs (the
four *groups*), and in no single condition (10 intra rates and 7 patterns, Has0_F1 and MAE: 34) is
its mean behind the best competitor's by more than one standard deviation of its own seeds.

STUDY_RESULTS is the study's results.json (FSRF and the other models, seeds 1111-1115);
EXTRA_RESULTS the results.json of FSRF alone trained with more seeds on the same data (the study's
own protocol, e.g. seeds 1116-1125). Pooled, FSRF has 15 seeds whose models differ only by their
training seed. Sets of 5 of them are then "models" that are equal by construction, and the rule is
applied to one such set (the candidate) against k others (its competitors):

* disjoint: the 15 seeds split at random into disjoint sets of 5 (k = 1 or 2);
* bootstrap: every set drawn with replacement from the 15 seeds (any k), which keeps the correlation
  of one seed's results across conditions and approximates independent sets of fresh seeds.

Printed: per k, the mean number of the 34 conditions more than one std behind, the probability
that none is, that the four groups hold, and that both do — the chance that a model no worse
than its k competitors passes — beside what the study's FSRF scores against its 3 built-in
baselines and against the 6 models other than the first reconstruction.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from fsrf.training.comparison import GROUPS

METRICS = (("Has0_F1_score", 1.0), ("MAE", -1.0))  # sign: +1 where higher is better
RULE_GROUPS = ("intra r>=0.5", "inter (7 patterns)")  # the groups the rule judges


def _conditions(per_seed: dict) -> list[tuple[str, str]]:
    first = next(iter(per_seed.values()))
    return [(kind, c) for kind in ("intra", "inter") for c in first[kind]]


def seed_matrix(per_seed: dict, conds: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
    """(seeds, conditions × metrics) of sign-adjusted values (higher is better everywhere), and
    (seeds, groups × metrics) of the group means, likewise."""
    cond = np.array([[sign * res[kind][c][m] for kind, c in conds for m, sign in METRICS]
                     for res in per_seed.values()])
    groups = []
    for res in per_seed.values():
        row = []
        for group in RULE_GROUPS:
            kind, keep = GROUPS[group]
            cs = [c for c in res[kind] if keep(c)]
            row += [sign * float(np.mean([res[kind][c][m] for c in cs])) for m, sign in METRICS]
        groups.append(row)
    return cond, np.array(groups)


def verdict(cand_c: np.ndarray, cand_g: np.ndarray, comp_c: list[np.ndarray], comp_g: list[np.ndarray]):
    """(conditions more than one std behind, groups all held) of the candidate's seeds against the
    competitors' (arrays of seeds × columns, sign-adjusted)."""
    best_c = np.max([c.mean(0) for c in comp_c], axis=0)
    behind = int(np.sum(best_c - cand_c.mean(0) > cand_c.std(0, ddof=1)))
    best_g = np.max([g.mean(0) for g in comp_g], axis=0)
    return behind, bool(np.all(cand_g.mean(0) >= best_g))


def simulate(cond: np.ndarray, groups: np.ndarray, k: int, draws: int, rng, disjoint: bool, n: int = 5,
             margin: float = 0.0):
    """The rule applied ``draws`` times to a candidate set of ``n`` seeds against ``k`` others; with
    ``margin`` the candidate is made better than them by that many seed-stds of every column."""
    shift_c = margin * cond.std(0, ddof=1)
    shift_g = margin * groups.std(0, ddof=1)
    behind, held = [], []
    pool = len(cond)
    for _ in range(draws):
        if disjoint:
            idx = rng.permutation(pool)[: n * (k + 1)].reshape(k + 1, n)
        else:
            idx = rng.integers(0, pool, size=(k + 1, n))
        b, h = verdict(cond[idx[0]] + shift_c, groups[idx[0]] + shift_g,
                       [cond[i] for i in idx[1:]], [groups[i] for i in idx[1:]])
        behind.append(b)
        held.append(h)
    behind, held = np.array(behind), np.array(held)
    return {"mean_behind": float(behind.mean()), "p_none_behind": float(np.mean(behind == 0)),
            "p_groups": float(held.mean()), "p_pass": float(np.mean((behind == 0) & held))}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("study", type=Path)
    ap.add_argument("extra", type=Path)
    ap.add_argument("--draws", type=int, default=20000, help="random splits or resamples per k (default 20000)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.draws < 1:
        print(f"criterion_null: --draws must be >= 1; got {args.draws}", file=sys.stderr)
        return 2
    missing = [str(p) for p in (args.study, args.extra) if not p.is_file()]
    if missing:
        print(f"criterion_null: no results file {', '.join(missing)}", file=sys.stderr)
        return 2
    study = json.loads(args.study.read_text(encoding="utf-8"))
    extra = json.loads(args.extra.read_text(encoding="utf-8"))
    ref = study["meta"]["reference"]
    if ref not in extra["models"]:
        print(f"criterion_null: {args.extra} holds no {ref!r} model", file=sys.stderr)
        return 2
    per = {**study["models"][ref]["per_seed"], **extra["models"][ref]["per_seed"]}
    if len(per) < 10:
        print(f"criterion_null: {len(per)} seeds of {ref}; at least 10 are needed", file=sys.stderr)
        return 2
    conds = _conditions(per)
    cond, groups = seed_matrix(per, conds)
    rng = np.random.default_rng(args.seed)

    # the study as it stands: the study's FSRF seeds against its competitors
    own_c, own_g = seed_matrix(study["models"][ref]["per_seed"], conds)
    others = [m for m in study["models"] if m != ref and "first reconstruction" not in m]
    mats = {m: seed_matrix(study["models"][m]["per_seed"], conds) for m in others}
    print(f"{Path(args.study).parent.name}: {len(per)} seeds of {ref} "
          f"({len(conds) * len(METRICS)} conditions, 4 groups)\n")
    # the built-in baselines are the models that are not FSRF variants, as the study records them
    kinds = {spec["name"]: spec.get("kind") for spec in study["meta"].get("specs") or [] if spec}
    built_in = [m for m in others if kinds.get(m) != "fsrf"]
    for label, names in ((f"its {len(built_in)} built-in baselines", built_in),
                         (f"the {len(others)} models but the first reconstruction", others)):
        b, h = verdict(own_c, own_g, [mats[m][0] for m in names], [mats[m][1] for m in names])
        print(f"study: {ref} against {label}: {b} conditions more than one std behind; four groups held: {h}")
    print("\n| competitors equal to the candidate | resampling | conditions more than one std behind (mean of 34) "
          "| P(none behind) | P(four groups held) | P(rule passes) |")
    print("|---|---|---|---|---|---|")
    for k in (1, 2, 3, 6):
        for disjoint in (True, False):
            if disjoint and 5 * (k + 1) > len(cond):
                continue
            r = simulate(cond, groups, k, args.draws, rng, disjoint)
            print(f"| {k} | {'disjoint seeds' if disjoint else 'bootstrap'} | {r['mean_behind']:.1f} | "
                  f"{r['p_none_behind']:.3f} | {r['p_groups']:.3f} | {r['p_pass']:.4f} |")
    # how much better than its competitors a candidate must be for the rule to pass
    sd = cond.std(0, ddof=1).reshape(-1, len(METRICS))
    print(f"\nA candidate better than k equal competitors by a margin in every condition and group "
          f"(bootstrap; one seed-std is a median {np.median(sd[:, 0]):.4f} Has0_F1 and "
          f"{np.median(sd[:, 1]):.4f} MAE per condition here):\n")
    print("| margin (seed-stds) | " + " | ".join(f"P(rule passes), k = {k}" for k in (1, 3, 6)) + " |")
    print("|---" * 4 + "|")
    for margin in (0.5, 1.0, 1.5, 2.0, 3.0):
        ps = [simulate(cond, groups, k, args.draws, rng, False, margin=margin)["p_pass"] for k in (1, 3, 6)]
        print(f"| {margin:.1f} | " + " | ".join(f"{p:.3f}" for p in ps) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
