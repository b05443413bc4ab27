"""The regime matrix that FSRF's defaults are decided on (issue 29; the rule is in
docs/research-log/14-regime-matrix.md, committed before any run of the matrix).

    python scripts/regime_matrix.py OUT [--cells all|NAME,...] [--draws 5] [--first-draw 101] [--scale 1.0]
        [--models fsrf,fsrf-no-aux,mult,late-fusion-md] [--variant NAME=JSON ...] [--device cpu] [--tiny]

Cells (layout, generator, sizes): each covers a regime the defaults were not tuned on.

| cell | layout (frames text/audio/vision) | generator | train/valid/test | epochs |
|---|---|---|---|---|
| mosei-aligned-factor | MOSEI aligned 50/50/50, dims 768/74/35 | factor | 800/200/400 | 12 |
| mosei-unaligned-events | MOSEI unaligned 50/500/500 | events | 800/200/400 | 12 |
| sims-content | CH-SIMS 39/400/55, dims 768/33/709, 0.2 grid, unimodal labels | content | 800/200/400 | 12 |
| mosei-aligned-content-4x | MOSEI aligned 50/50/50 | content | 3200/400/800 (4x the study's 800) | 8 |

Every cell: ``--draws`` fresh data draws (data seeds 101, 102, …; none of them chose anything
before; ``--first-draw 106`` starts a confirmation on draws no decision has seen), one training
seed per draw (2100 + data seed), every model compared under the same masks
(``fsrf.training.compare``), then merged over the draws (paired over draws). Outputs:
``OUT/<cell>/d<seed>/`` (one comparison per draw, resumable), ``OUT/<cell>/`` (merged
``comparison.md``, ``results.json``, ``robustness.png``) and ``OUT/summary.md`` (per cell, FSRF
against the best built-in baseline and against ``fsrf-no-aux``: the F1 of the layout and MAE over
r >= 0.5, the 7 patterns and r < 0.5, the paired difference, its two-sided p and the one-sided p of
non-inferiority at a margin of 0.01), drawn as ``OUT/summary.png``.

Sizing (measured on the 2-core CPU machine, seconds per epoch at 400 training samples, d = 64):
FSRF 2.8 / 5.9 / 2.7 (aligned / unaligned MOSEI / SIMS), MulT 2.0 / 11.3 / 5.4, late fusion 0.3;
``encoder_layers=2`` 5.0 / 32 / 14. With the four models the four cells take about 2 h 45 min on
that machine, each FSRF variant about 45 min more (an ``encoder_layers=2`` variant about 2 h): the
matrix with three variants reruns in about six hours there. Run 1 (2026-12-07, median seconds per
training with its evaluation, factor / events / sims-content / content-4x cells) took less: FSRF
29 / 107 / 72 / 82, MulT 39 / 171 / 95 / 122, late fusion 3 / 5 / 4 / 8, so about 1 h 30 min for
the four models and about 25 min for each FSRF variant. Sample counts, widths and epochs are
what was sized, never the layouts' lengths; ``--scale S`` multiplies the sample counts (a GPU runs
the full-size version with ``--scale 4 --device cuda``). ``--tiny`` is a seconds-long check of the
script itself (tests).

``--variant NAME=JSON`` adds FSRF with those FSRFConfig fields changed, e.g.
``--variant 'FSRF private=same={"private_pool": "same"}'``: what the rule compares with the defaults.
``--variant A`` (a key of :data:`VARIANTS`) adds a variant written down in
docs/research-log/14-regime-matrix.md before its runs. ``OUT/rule.md`` applies the rule to every
variant present: against the defaults, paired over all draws of the cells run and per cell.
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
#: The variants of docs/research-log/14-regime-matrix.md, by the letter that file gives them.
VARIANTS = {
    # A (pooling "norm", shared_pool "mean", dequantize_labels False together) neither won nor lost
    # (run 2), so each switch ran alone (A1 in run 2, A2 and A3 in run 3, against the defaults of
    # then): all three simplest choices became the defaults (config versions 4 and 5), and step 3 of
    # the order reverted dequantize_labels (version 6), then pooling (version 7); V3 is the defaults
    # before them, for step 3 (with the per-frame projection that version 8 replaced)
    "V3": ("FSRF config version 3 defaults", {"pooling": "norm+private-shrink", "shared_pool": "gated",
                                               "dequantize_labels": True, "conv_kernel": 1}),
    "B": ("FSRF encoder_layers=2", {"encoder_layers": 2}),
    "C": ("FSRF no warm-up", {"aux_warmup_steps": 0, "aux_warmup_epochs": 0.0}),
    # D was run as {"proj_norm": False} against config version 2's defaults (commit ce0ed86); it won
    # and became the default (version 3), so D is now the same comparison with the roles exchanged
    "D": ("FSRF projection LayerNorm", {"proj_norm": True}),
    # K, the encoder study on version 7: the lineage's temporal convolution in the input projection
    # (MulT's Conv1d), a window of three frames on every modality. It lost (the log's sixth
    # session). KP, K with partial windows (a config field conv_window that rescaled each window by
    # its observed frames), lost too and left the code with its field; their runs are in
    # docs/results/matrix-encoder/. KF, the window on the projected frames, won on draws 101-105 and
    # 106-110 and is the default since config version 8 (its runs: docs/results/matrix-factorized/);
    # V7 is the defaults before it, KF0 was today's "FSRF w/o aux terms"
    "K": ("FSRF conv_kernel=3", {"conv_kernel": 3, "conv_mode": "full"}),
    "V7": ("FSRF config version 7 defaults", {"conv_kernel": 1}),
    # W8, the warm-up counted in 8 epochs (issue 29, item 3; the same schedule as 200 steps on the
    # 800-sample cells), did no harm on content-4x (draws 111-115, docs/results/matrix-warmup/) and
    # is the default since config version 9; V8 is the ramp in steps before it
    "V8": ("FSRF config version 8 defaults", {"aux_warmup_epochs": 0.0}),
    # E, {"aux_balance": 1.0} (each auxiliary term capped at the task loss), lost and left the code in
    # config version 4; W (every auxiliary weight x 0.3, run 3) did not win; their runs are in
    # docs/results/matrix/
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
        if v in VARIANTS:
            name, changes = VARIANTS[v]
            specs.append(ModelSpec(name, kind="fsrf", kwargs={**full, **changes}))
            continue
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


def _best_baseline(summ: dict, group: str, metric: str, sign: float) -> str | None:
    """The built-in baseline with the best mean on ``group``'s ``metric`` (sign +1: higher is better)."""
    base = [b for b in BASELINES if b in summ and group in summ[b]]
    return max(base, key=lambda b: sign * summ[b][group]["mean"][metric]) if base else None


def summarise_cell(merged: dict) -> list[str]:
    """Markdown rows: FSRF against the best built-in baseline and against FSRF w/o aux terms."""
    from fsrf.training.comparison import NO_AUX_NAME

    summ = merged["summary"]
    f1 = "F1_score" if merged["meta"].get("dataset") == "sims" else "Has0_F1_score"
    rows = []
    for group, label in GROUPS:
        for metric, sign in ((f1, 1.0), ("MAE", -1.0)):
            ref = summ["FSRF"][group]
            best = _best_baseline(summ, group, metric, sign)
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


def figure_points(cells: dict[str, dict]) -> list[tuple[str, str, str, str, str, float, float]]:
    """What ``OUT/summary.png`` draws: ``(cell, group label, metric, against, model, Δ, half-width)``
    over the two claimed groups, for FSRF against the cell's best built-in baseline on that group and
    metric (as in :func:`summarise_cell`) and against FSRF w/o aux terms: Δ the mean paired difference
    over the draws, signed so that > 0 favours FSRF (F1 higher, MAE lower), and the half-width of its
    95 % t interval (0 with one draw)."""
    from scipy import stats

    from fsrf.training.comparison import NO_AUX_NAME

    out = []
    for cell, merged in cells.items():
        summ = merged["summary"]
        f1 = "F1_score" if merged["meta"].get("dataset") == "sims" else "Has0_F1_score"
        for group, label in GROUPS[:2]:
            for metric, sign in ((f1, 1.0), ("MAE", -1.0)):
                ref = summ["FSRF"][group]["per_seed"]
                best = _best_baseline(summ, group, metric, sign)
                for against, model in (("best built-in baseline", best), ("FSRF w/o aux terms", NO_AUX_NAME)):
                    if model is None or model not in summ or group not in summ[model]:
                        continue
                    other = summ[model][group]["per_seed"]
                    d = sign * np.array([ref[s][metric] - other[s][metric] for s in ref if s in other])
                    half = float(stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else 0.0
                    out.append((cell, label, "F1" if metric == f1 else "MAE", against, model, float(d.mean()), half))
    return out


def plot_summary(cells: dict[str, dict], path) -> None:
    """The matrix at a glance, written atomically as PNG: one panel per claimed group and metric,
    the cells along x, FSRF's paired advantage over the best built-in baseline and over FSRF w/o aux
    terms (mean over the draws, 95 % interval; above 0 favours FSRF), with the non-inferiority
    margin drawn at −:data:`MARGIN`. Differences, not levels: the draws differ far more from each
    other than the models do on one draw. The tables' one-sided test at 0.05 matches a 90 %
    interval, so a 95 % bar clear of the margin is the stricter reading."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from fsrf.runtime.io import atomic_write

    pts = {(c, g, m, a): (d, h) for c, g, m, a, _, d, h in figure_points(cells)}
    names = list(cells)
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), squeeze=False)
    for ax, (label, metric) in zip(axes.flat, [(g, m) for _, g in GROUPS[:2] for m in ("F1", "MAE")]):
        for k, (against, fmt) in enumerate((("best built-in baseline", "o"), ("FSRF w/o aux terms", "^"))):
            at = [(i, pts[c, label, metric, against]) for i, c in enumerate(names) if (c, label, metric, against) in pts]
            if at:
                ax.errorbar([i + (k - 0.5) * 0.25 for i, _ in at], [v[0] for _, v in at], yerr=[v[1] for _, v in at],
                            fmt=fmt, capsize=3, label=f"FSRF − {against}")
        ax.axhline(0.0, color="0.3", lw=0.8)
        ax.axhline(-MARGIN, color="0.5", lw=0.8, ls="--", label=f"non-inferiority margin (−{MARGIN})")
        ax.set_xticks(range(len(names)), names, rotation=12, fontsize=8)
        ax.set_title(f"{metric} over {label}: FSRF's advantage" + (" (baseline − FSRF)" if metric == "MAE" else ""))
        ax.grid(alpha=0.3, axis="y")
    axes[0, 0].legend(fontsize=8)
    fig.tight_layout()
    try:
        atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    finally:
        plt.close(fig)


def _differences(merged: dict, variant: str, group: str, metric: str) -> np.ndarray:
    """Per draw, the variant's metric minus the defaults' (draws both have)."""
    a, b = merged["summary"]["FSRF"][group]["per_seed"], merged["summary"][variant][group]["per_seed"]
    return np.array([b[s][metric] - a[s][metric] for s in a if s in b])


def rule_report(cells: dict[str, dict]) -> list[str]:
    """The rule of docs/research-log/14-regime-matrix.md for every variant in ``cells`` (cell ->
    merged results): condition 1 over all draws pooled (the two claimed groups, F1 and MAE, all four
    means in one side's favour and one one-sided p < 0.05), condition 2 per cell and group (no
    two-sided p < 0.05 against that side). Both sides are judged: "the variant wins" (it meets both;
    what adopts an addition) and "the defaults keep their place" (they meet both against the
    variant; what a default other than the simplest choice needs against the simplest). Markdown."""
    from scipy import stats

    from fsrf.training.comparison import default_specs

    built_in = {s.name for s in default_specs(term_ablations=True, first_reconstruction=True)}
    names = sorted({n for m in cells.values() for n in m["summary"] if n.startswith("FSRF") and n not in built_in})
    out = ["# The rule, applied to every variant against the defaults", "",
           "Δ = variant − defaults (F1: higher is better; MAE: lower). Pooled over the draws of every cell run.", ""]
    for name in names:
        have = {c: m for c, m in cells.items() if name in m["summary"]}
        out += [f"## {name}", "", "| group | metric | pooled Δ | one-sided p | per cell (Δ, two-sided p) |", "|---|---|---|---|---|"]
        # per side (+1: the variant, -1: the defaults): claimed (mean in its favour, one-sided p < 0.05)
        claimed, worse = {1: [], -1: []}, {1: [], -1: []}
        for group, label in GROUPS:
            for metric, sign in (("F1", 1.0), ("MAE", -1.0)):
                per_cell, pooled = [], []
                for c, m in have.items():
                    key = "F1_score" if m["meta"].get("dataset") == "sims" else "Has0_F1_score"
                    d = _differences(m, name, group, key if metric == "F1" else "MAE")
                    pooled.extend(sign * d)
                    p2 = float(stats.ttest_1samp(d, 0.0).pvalue) if len(d) > 1 and d.std() > 0 else float("nan")
                    per_cell.append(f"{c}: {d.mean():+.3f} (p {p2:.3f})")
                    if p2 < 0.05:
                        worse[1 if sign * d.mean() < 0 else -1].append(f"{c} {label} {metric}")
                pooled = np.array(pooled)
                p1 = {side: (float(stats.ttest_1samp(side * pooled, 0.0, alternative="greater").pvalue)
                             if len(pooled) > 1 and pooled.std() > 0 else float("nan")) for side in (1, -1)}
                if group != "intra r<0.5":
                    for side in (1, -1):
                        claimed[side].append((side * pooled.mean() > 0, p1[side] < 0.05))
                out.append(f"| {label} | {metric} | {sign * pooled.mean():+.3f} (n = {len(pooled)}) | {p1[1]:.3f} | "
                           + "; ".join(per_cell) + " |")
        met = {side: (all(c[0] for c in claimed[side]) and any(c[1] for c in claimed[side]), not worse[side])
               for side in (1, -1)}

        def says(side):
            one, two = met[side]
            return (f"condition 1 (better where the method claims to help): {'met' if one else 'not met'}; "
                    f"condition 2 (significantly worse nowhere): {'met' if two else 'not met: ' + ', '.join(worse[side])}")

        out += ["", f"The variant: {says(1)}. The variant {'wins' if all(met[1]) else 'does not win'} on the cells run "
                f"({', '.join(have)}).", "",
                f"The defaults against it: {says(-1)}. The defaults {'keep' if all(met[-1]) else 'do not keep'} "
                "their place against it (what decides when the variant holds the simplest choice).", ""]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--cells", default="all")
    p.add_argument("--draws", type=int, default=5)
    p.add_argument("--first-draw", type=int, default=101, help="data seed of the first draw")
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
    if args.first_draw < 1:
        raise SystemExit(f"regime_matrix: --first-draw must be >= 1; got {args.first_draw}")
    if args.scale <= 0:
        raise SystemExit(f"regime_matrix: --scale must be > 0; got {args.scale}")
    specs = _specs(args.models, args.variant, 16 if args.tiny else args.d_model)
    if "FSRF" not in [s.name for s in specs]:
        raise SystemExit("regime_matrix: --models must include fsrf (the reference)")
    out = ensure_dir(args.out)
    summary = ["# Regime matrix: FSRF against the best built-in baseline and without its auxiliary terms", "",
               f"{args.draws} fresh data draws per cell, paired over draws; Δ > 0 favours FSRF on F1, < 0 on MAE; "
               f"NI p: one-sided non-inferiority at margin {MARGIN}.", ""]
    merged_cells = {}
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
        for d in range(args.first_draw, args.first_draw + args.draws):
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
        merged_cells[cell] = merged
        write_results(merged, out / cell)
        atomic_write_text(out / cell / "comparison.md", format_comparison(merged))
        summary += [f"## {cell}", "", f"{c['preset']} layout, {'aligned' if c['aligned'] else 'unaligned'}, "
                    f"generator {c['generator']}, {n[0]}/{n[1]}/{n[2]} samples", "",
                    "| group | metric | FSRF | best built-in baseline | FSRF w/o aux terms |", "|---|---|---|---|---|",
                    *summarise_cell(merged), ""]
    atomic_write_text(out / "summary.md", "\n".join(summary) + "\n")
    atomic_write_text(out / "rule.md", "\n".join(rule_report(merged_cells)) + "\n")
    plot_summary(merged_cells, out / "summary.png")
    print(f"wrote {out}/summary.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
