"""Results of a robustness evaluation as files and tables: ``results.json``, ``results.csv``,
``robustness.png`` (every file written atomically) and the plain-text table printed by the CLI.

``results`` = ``{"models": {name: {"mean": {...}, "std": {...}, "per_seed": {...}}}, "meta": {...}}``
with ``{kind: {condition: {metric: value}}}`` blocks (kind ``intra`` or ``inter``).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from fsrf.runtime.io import atomic_write, atomic_write_text

__all__ = ["write_results", "format_table", "plot_robustness"]


def _rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for model_name, r in results["models"].items():
        blocks = [("mean", r["mean"])] if "mean" in r else []
        std = r.get("std")
        for seed, res in r.get("per_seed", {}).items():
            blocks.append((f"seed {seed}", res))
        for label, block in blocks:
            for kind in ("intra", "inter"):
                for cond, mets in block.get(kind, {}).items():
                    for name, val in mets.items():
                        row = {"model": model_name, "aggregate": label, "protocol": kind, "condition": cond,
                               "metric": name, "value": val}
                        if label == "mean" and std is not None:
                            row["std"] = std[kind][cond][name]
                        rows.append(row)
    return rows


def write_results(results: Mapping[str, Any], out_dir: str | os.PathLike, *, plot: bool = True,
                  metric: str | None = None) -> dict[str, Path]:
    """Write ``results.json``, ``results.csv`` and (``plot``) ``robustness.png`` atomically to ``out_dir``.

    ``results`` = ``{"models": {name: {"mean": {...}, "std": {...}, "per_seed": {...}}}, "meta": {...}}``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": atomic_write_text(out / "results.json", json.dumps(results, indent=2, default=_json_default))}
    buf = io.StringIO()
    rows = _rows(results)
    w = csv.DictWriter(buf, fieldnames=["model", "aggregate", "protocol", "condition", "metric", "value", "std"])
    w.writeheader()
    for row in rows:
        w.writerow(row)
    paths["csv"] = atomic_write_text(out / "results.csv", buf.getvalue())
    if plot:
        paths["png"] = plot_robustness(results, out / "robustness.png", metric=metric)
    return paths


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _headline(dataset: str | None) -> list[str]:
    if dataset == "sims":
        return ["F1_score", "Mult_acc_2", "Mult_acc_3", "MAE", "Corr"]
    return ["Has0_F1_score", "Non0_acc_2", "Mult_acc_7", "MAE", "Corr"]


def format_table(results: Mapping[str, Any], dataset: str | None = None) -> str:
    """Plain-text table: rows = conditions, columns = headline metrics per model (mean ± std)."""
    dataset = dataset or results.get("meta", {}).get("dataset")
    cols = _headline(dataset)
    models = list(results["models"])
    lines = []
    for kind, title in (("intra", "intra-modal frame dropping (rate)"), ("inter", "inter-modal availability (pattern)")):
        conds = list(results["models"][models[0]]["mean"].get(kind, {}))
        if not conds:
            continue
        lines.append(f"{title}")
        head = f"{'':>6} " + " | ".join(f"{m[:22]:^{11 * len(cols)}}" for m in models)
        lines.append(head)
        lines.append(f"{'':>6} " + " | ".join("".join(f"{c[:10]:>11}" for c in cols) for _ in models))
        avg = {m: {c: [] for c in cols} for m in models}
        for cond in conds:
            cells = []
            for m in models:
                mean = results["models"][m]["mean"][kind][cond]
                std = results["models"][m].get("std", {}).get(kind, {}).get(cond, {})
                cell = ""
                for c in cols:
                    v = mean[c]
                    avg[m][c].append(v)
                    s = std.get(c, 0.0)
                    cell += f"{v:>11.4f}" if not s else f"{v:>7.3f}±{s:<3.2f}"[:11].rjust(11)
                cells.append(cell)
            lines.append(f"{cond:>6} " + " | ".join(cells))
        lines.append(f"{'avg':>6} " + " | ".join("".join(f"{np.nanmean(avg[m][c]):>11.4f}" for c in cols)
                                                   for m in models))
        lines.append("")
    lines.append("models: " + ", ".join(f"[{i + 1}] {m}" for i, m in enumerate(models)))
    return "\n".join(lines)


def plot_robustness(results: Mapping[str, Any], path: str | os.PathLike, *, metric: str | None = None) -> Path:
    """Two panels: ``metric`` vs. intra missing rate (one line per model, ± std band) and the
    same metric per inter-modal pattern (grouped bars). Written atomically as PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    dataset = results.get("meta", {}).get("dataset")
    metric = metric or ("F1_score" if dataset == "sims" else "Has0_F1_score")
    models = list(results["models"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    for m in models:
        intra = results["models"][m]["mean"].get("intra", {})
        if not intra:
            continue
        xs = [float(k) for k in intra]
        ys = np.array([intra[k][metric] for k in intra])
        ax.plot(xs, ys, marker="o", label=m)
        std = results["models"][m].get("std", {}).get("intra")
        if std:
            sd = np.array([std[k][metric] for k in intra])
            ax.fill_between(xs, ys - sd, ys + sd, alpha=0.2)
    ax.set_xlabel("intra-modal missing rate r")
    ax.set_ylabel(metric)
    ax.set_title("Frame-level missingness")
    ax.grid(alpha=0.3)
    ax.legend()
    ax = axes[1]
    pats = list(results["models"][models[0]]["mean"].get("inter", {}))
    if pats:
        width = 0.8 / len(models)
        for i, m in enumerate(models):
            inter = results["models"][m]["mean"]["inter"]
            ax.bar(np.arange(len(pats)) + i * width - 0.4 + width / 2, [inter[p][metric] for p in pats], width,
                   label=m)
        ax.set_xticks(np.arange(len(pats)), [p.upper() for p in pats])
        lo = min(results["models"][m]["mean"]["inter"][p][metric] for m in models for p in pats)
        ax.set_ylim(max(0.0, lo - 0.1) if metric != "MAE" else 0.0, None)
        ax.set_xlabel("available modalities (L = text, A = audio, V = vision)")
        ax.set_title("Whole-modality missingness")
        ax.grid(alpha=0.3, axis="y")
    else:
        ax.axis("off")
    fig.tight_layout()
    try:
        return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120))
    finally:
        plt.close(fig)
