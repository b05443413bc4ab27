"""A variant of a model against the model as it is, paired over data draws: the tables of the
rounds of docs/research-log/.

    python scripts/paired_variants.py OUT BASE_ROOT VARIANT_ROOT [--label TEXT]

BASE_ROOT and VARIANT_ROOT each hold one `fsrf compare` folder per data draw, named alike (for
example d51 … d55, as `fsrf compare --out ROOT/d51` writes them); the draws both roots have are
paired. Each root's draws are merged as replicates (fsrf.training.comparison.merge_replicates), the
variant's models are renamed "<name> (<label>)", and both go into one comparison whose reference is
the base's reference model: OUT/comparison.md, results.json, results.csv and robustness.png, with the
paired t-test and the exact sign-flip test over the draws. The before → after table (mean over the
draws, p of the paired t-test, and in how many draws the variant is better) is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fsrf.runtime.io import atomic_write_text
from fsrf.training.comparison import format_comparison, merge_replicates, paired_tests, summarise
from fsrf.training.results import write_results

#: group columns of the research log's tables, and whether higher is better per metric
COLUMNS = (("intra r>=0.5", "r ≥ 0.5"), ("inter (7 patterns)", "7 patterns"), ("intra r<0.5", "r < 0.5"))
METRICS = (("MAE", "MAE", False), ("Has0_F1_score", "Has0_F1", True), ("Non0_F1_score", "Non0_F1", True))


def _load(root: Path, draws: list[str]) -> dict:
    runs = [json.loads((root / d / "results.json").read_text(encoding="utf-8")) for d in draws]
    return merge_replicates(runs, labels=draws)


def join(base: dict, variant: dict, label: str) -> dict:
    """One results dict holding the base's models and the variant's, renamed ``"<name> (<label>)"``;
    the replicates of both carry the same names, so the paired tests pair them draw by draw."""
    models = dict(base["models"])
    for name, entry in variant["models"].items():
        new = f"{name} ({label})"
        if new in models:
            raise ValueError(f"the label {label!r} makes the model name {new!r}, which the base already has")
        models[new] = entry
    meta = dict(base["meta"])
    meta["seconds"] = {**base["meta"].get("seconds", {}),
                       **{f"{n} ({label})": v for n, v in variant["meta"].get("seconds", {}).items()}}
    out = {"models": models, "meta": meta}
    out["summary"] = summarise(out)
    out["tests"] = paired_tests(out, meta["reference"])
    return out


def before_after(joined: dict, label: str) -> str:
    """The research-log table of the reference model before → after (the variant of the same name)."""
    ref = joined["meta"]["reference"]
    var = f"{ref} ({label})"
    summ = joined["summary"]
    lines = [f"| metric | {' | '.join(lab for _, lab in COLUMNS)} |", "|---" * (len(COLUMNS) + 1) + "|"]
    for key, lab, higher in METRICS:
        if key not in summ[ref][COLUMNS[0][0]]["mean"]:
            continue
        cells = []
        for group, _ in COLUMNS:
            a, b = summ[ref][group], summ[var][group]
            draws = [s for s in a["per_seed"] if s in b["per_seed"]]
            better = sum((b["per_seed"][s][key] > a["per_seed"][s][key]) == higher
                         and b["per_seed"][s][key] != a["per_seed"][s][key] for s in draws)
            p = joined["tests"][var]["groups"][group][key]["t_p"]
            ma, mb = a["mean"][key], b["mean"][key]
            win = (mb > ma) == higher and mb != ma
            after = f"**{mb:.3f}**" if win else f"{mb:.3f}"
            before = f"**{ma:.3f}**" if (ma > mb) == higher and mb != ma else f"{ma:.3f}"
            cells.append(f"{before} → {after} (p = {p:.2f}; {better} of {len(draws)})")
        lines.append(f"| {lab} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("base", type=Path)
    ap.add_argument("variant", type=Path)
    ap.add_argument("--label", default="variant", help="name suffix of the variant's models (default 'variant')")
    args = ap.parse_args(argv)
    have = lambda root: {p.parent.name for p in root.glob("*/results.json")}  # noqa: E731
    draws = sorted(have(args.base) & have(args.variant))
    if len(draws) < 2:
        print(f"paired_variants: {args.base} and {args.variant} share {len(draws)} draw folders with a "
              f"results.json ({draws}); at least two are needed", file=sys.stderr)
        return 2
    joined = join(_load(args.base, draws), _load(args.variant, draws), args.label)
    write_results(joined, args.out)
    atomic_write_text(args.out / "comparison.md", format_comparison(joined))
    print(f"{len(draws)} draws ({', '.join(draws)}); {joined['meta']['reference']} before → after ({args.label}), "
          f"paired t-test over the draws; draws better:\n")
    print(before_after(joined, args.label))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
