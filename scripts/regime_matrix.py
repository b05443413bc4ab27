"""The regime matrix that FSRF's defaults are decided on (issue 29; the rule is in
docs/research-log/14-regime-matrix.md, committed before any run of the matrix).

    python scripts/regime_matrix.py OUT [--cells all|NAME,...] [--draws 5] [--scale 1.0]
        [--models fsrf,fsrf-no-aux,mult,late-fusion-md] [--variant NAME=JSON ...] [--device cpu] [--tiny]

Cells (layout, generator, sizes): each covers a regime the defaults were not tuned on.

| cell | layout (frames text/audio/vision) | generator | train/valid/test | epochs |
|---|---|---|---|---|
| mosei-aligned-factor | MOSEI aligned 50/50/50, dims 768/74/35 | factor | 800/200/400 | 12 |
| mosei-unaligned-events | MOSEI unaligned 50/500/500 | events | 800/200/400 | 12 |
| sims-content | CH-SIMS 39/400/55, dims 768/33/709, 0.2 grid, unimodal labels | content | 800/200/400 | 12 |
| mosei-aligned-content-4x | MOSEI aligned 50/50/50 | content | 3200/400/800 (4x the study's 800) | 8 |

Every cell: ``--draws`` fresh data draws (data seeds 101, 102, …; none of them chose anything
before), one training seed per draw (2100 + data seed), every model compared under the same masks
(``fsrf.training.compare``), then merged over the draws (paired over draws). Outputs:
``OUT/<cell>/d<seed>/`` (one comparison per draw, resumable), ``OUT/<cell>/`` (merged
``comparison.md``, ``results.json``, ``robustness.png``) and ``OUT/summary.md`` (per cell, FSRF
against the best built-in baseline and against ``fsrf-no-aux``: the F1 of the layout and MAE over
r >= 0.5, the 7 patterns and r < 0.5, the paired difference, its two-sided p and the one-sided p of
non-inferiority at a margin of 0.01).

Sizing (measured on the 2-core CPU machine, seconds per epoch at 400 training samples, d = 64):
FSRF 2.8 / 5.9 / 2.7 (aligned / unaligned MOSEI / SIMS), MulT 2.0 / 11.3 / 5.4, late fusion 0.3;
``encoder_layers=2`` 5.0 / 32 / 14. With the four models the four cells take about 2 h 45 min on
that machine, each FSRF variant about 45 min more (an ``encoder_layers=2`` variant about 2 h): the
matrix with three variants reruns in about six hours there. Sample counts, widths and epochs are
what was sized, never the layouts' lengths; ``--scale S`` multiplies the sample counts (a GPU runs
the full-size version with ``--scale 4 --device cuda``). ``--tiny`` is a seconds-long check of the
script itself (tests).

``--variant NAME=JSON`` adds FSRF with those FSRFConfig fields changed, e.g.
``--variant 'FSRF private=same={"private_pool": "same"}'``: what the rule compares with the defaults.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

CELLS = {
    "mosei-aligned-factor": dict(preset="mosei", aligned=True, generator="factor", n=(800, 200, 400), epochs=12),
    "mosei-unaligned-events": dict(preset="mosei", aligned=False, generator="events", n=(800, 200, 400), epochs=12),
    "sims-content": dict(preset="sims", aligned=False, generator="content", n=(800, 200, 400), epochs=12),
    "mosei-aligned-content-4x": dict(preset="mosei", aligned=True, generator="content", n=(3200, 400, 800), epochs=8),
}
#: the built-in baselines FSRF must be non-inferior to
BASELINES = ("MulT", "late fusion + modality dropout", "late fusion")
GROUPS = (("intra r>=0.5", "r ≥ 0.5"), ("inter (7 patterns)", "7 patterns"), ("intra r<0.5", "r < 0.5"))
MARGIN = 0.01


def _specs(models: str, variants: list[str], d_model: int):
    from fsrf.cli.compare import parse_models
    from fsrf.models import ModelSpec
    from fsrf.training.comparison import default_specs

    names = parse_models(models)
    specs = [s for s in default_specs(d_model, term_ablations=True) if s.name in names]
    full = next(s for s in default_specs(d_model) if s.name == "FSRF").kwargs
    for v in variants:
        # the JSON object starts at the first "={", so a name may hold "=" (e.g. "encoder_layers=2")
        cut = v.find("={")
        name, sep, text = (v[:cut], "=", v[cut + 1:]) if cut > 0 else v.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--variant takes NAME=JSON; got {v!r}")
        try:
            changes = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"--variant {name!r}: not JSON ({exc})") from None
        if not isinstance(changes, dict):
            raise ValueError(f"--variant {name!r}: JSON must be an object of FSRFConfig fields; got {text!r}")
        specs.append(ModelSpec(name.strip(), kind="fsrf", kwargs={**full, **changes}))
    return specs


def _paired_p(d: np.ndarray) -> tuple[float, float]:
    """Two-sided p of mean(d) = 0 and one-sided p of mean(d) <= -MARGIN (d > 0: FSRF better)."""
    from scipy import stats

    n = len(d)
    if n < 2:
        return float("nan"), float("nan")
    sd = d.std(ddof=1)
    if sd == 0:
        return (1.0 if d.mean() == 0 else 0.0), (0.0 if d.mean() + MARGIN > 0 else 1.0)
    se = sd / np.sqrt(n)
    return float(2 * stats.t.sf(abs(d.mean()) / se, n - 1)), float(stats.t.sf((d.mean() + MARGIN) / se, n - 1))


def summarise_cell(merged: dict) -> list[str]:
    """Markdown rows: FSRF against the best built-in baseline and against FSRF w/o aux terms."""
    from fsrf.training.comparison import NO_AUX_NAME

    summ = merged["summary"]
    f1 = "F1_score" if merged["meta"].get("dataset") == "sims" else "Has0_F1_score"
    rows = []
    for group, label in GROUPS:
        for metric, sign in ((f1, 1.0), ("MAE", -1.0)):
            ref = summ["FSRF"][group]
            base = [b for b in BASELINES if b in summ and group in summ[b]]
            best = max(base, key=lambda b: sign * summ[b][group]["mean"][metric]) if base else None
            cells = [f"{ref['mean'][metric]:.3f}"]
            for other in (best, NO_AUX_NAME if NO_AUX_NAME in summ else None):
                if other is None:
                    cells.append("–")
                    continue
                ob = summ[other][group]
                seeds = [s for s in ref["per_seed"] if s in ob["per_seed"]]
                d = sign * np.array([ref["per_seed"][s][metric] - ob["per_seed"][s][metric] for s in seeds])
                p2, p_ni = _paired_p(d)
                cells.append(f"{other}: {ob['mean'][metric]:.3f}, Δ {sign * d.mean():+.3f} (p {p2:.3f}; "
                             f"NI p {p_ni:.3f})")
            rows.append(f"| {label} | {metric} | " + " | ".join(cells) + " |")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--cells", default="all")
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--scale", type=float, default=1.0, help="multiplies every cell's sample counts")
    p.add_argument("--models", default="fsrf,fsrf-no-aux,mult,late-fusion-md")
    p.add_argument("--variant", action="append", default=[], help="NAME=JSON of FSRFConfig changes (repeatable)")
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--tiny", action="store_true", help="seconds-long check of the script (small dims and lengths)")
    args = p.parse_args(argv)

    from fsrf.data import load_mmsa, make_synthetic
    from fsrf.runtime.io import atomic_write_text, ensure_dir
    from fsrf.training import TrainSettings, compare
    from fsrf.training.comparison import format_comparison, merge_replicates
    from fsrf.training.results import write_results

    names = list(CELLS) if args.cells == "all" else [c.strip() for c in args.cells.split(",") if c.strip()]
    bad = [c for c in names if c not in CELLS]
    if bad or not names:
        raise SystemExit(f"regime_matrix: --cells takes 'all' or a comma list of {', '.join(CELLS)}; got {args.cells!r}")
    if args.draws < 2 and not args.tiny:
        raise SystemExit(f"regime_matrix: --draws must be >= 2 (paired over draws); got {args.draws}")
    if args.scale <= 0:
        raise SystemExit(f"regime_matrix: --scale must be > 0; got {args.scale}")
    specs = _specs(args.models, args.variant, 16 if args.tiny else args.d_model)
    if "FSRF" not in [s.name for s in specs]:
        raise SystemExit("regime_matrix: --models must include fsrf (the reference)")
    out = ensure_dir(args.out)
    summary = ["# Regime matrix: FSRF against the best built-in baseline and without its auxiliary terms", "",
               f"{args.draws} fresh data draws per cell, paired over draws; Δ > 0 favours FSRF on F1, < 0 on MAE; "
               f"NI p: one-sided non-inferiority at margin {MARGIN}.", ""]
    for cell in names:
        c = CELLS[cell]
        n = [max(8, int(round(k * args.scale))) for k in c["n"]]
        shape = {}
        if args.tiny:
            n = [48, 16, 16]
            shape = dict(dims={"text": 16, "audio": 6, "vision": 8},
                         seq_lens={"text": 8, "audio": 8, "vision": 8} if c["aligned"] else
                         {"text": 8, "audio": 16, "vision": 12})
        runs, labels = [], []
        for d in range(101, 101 + args.draws):
            folder = ensure_dir(out / cell / f"d{d}")
            data_path = folder / "data.pkl"
            if not data_path.is_file():
                make_synthetic(c["preset"], data_path, n_train=n[0], n_valid=n[1], n_test=n[2], seed=d,
                               aligned=c["aligned"], generator=c["generator"], **shape)
            settings = TrainSettings(epochs=1 if args.tiny else c["epochs"], patience=4, batch_size=32,
                                     device=args.device, progress=False)
            res = compare(load_mmsa(data_path), specs, folder / "runs", seeds=[2100 + d], dataset=c["preset"],
                          settings=settings, rates=(0.0, 0.5) if args.tiny else None,
                          patterns=("l", "av", "lav") if args.tiny else None, progress=False, log=None)
            runs.append(res)
            labels.append(f"d{d}")
            print(f"{cell}: draw {d} done", flush=True)
        merged = merge_replicates(runs, labels) if len(runs) > 1 else runs[0]
        write_results(merged, out / cell)
        atomic_write_text(out / cell / "comparison.md", format_comparison(merged))
        summary += [f"## {cell}", "", f"{c['preset']} layout, {'aligned' if c['aligned'] else 'unaligned'}, "
                    f"generator {c['generator']}, {n[0]}/{n[1]}/{n[2]} samples", "",
                    "| group | metric | FSRF | best built-in baseline | FSRF w/o aux terms |", "|---|---|---|---|---|",
                    *summarise_cell(merged), ""]
    atomic_write_text(out / "summary.md", "\n".join(summary) + "\n")
    print(f"wrote {out}/summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
