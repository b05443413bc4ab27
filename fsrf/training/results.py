"""Results of a robustness evaluation as files and tables: ``results.json``, ``results.csv``,
``robustness.png`` (written as one unit) and the plain-text table printed by the CLI.

``results`` = ``{"models": {name: {"mean": {...}, "std": {...}, "per_seed": {...}}}, "meta": {...}}``
with ``{kind: {condition: {metric: value}}}`` blocks (kind ``intra`` or ``inter``).

One :func:`write_results` call stamps its three files with one ``run_id`` (``meta.run_id`` in
the JSON, a ``run_id`` column in the CSV, a ``fsrf_run_id`` text chunk in the PNG), writes them
completely into a private temp folder inside the output folder, and only then renames them into
place, ``results.json`` last. :func:`read_results` checks that the files it finds share the run id.
A run killed before the renames leaves the previous files as they were; its temp folder is removed
by the next :func:`write_results` on that folder.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from fsrf.runtime.io import (
    atomic_write,
    atomic_write_text,
    commit_temp_dir,
    ensure_dir,
    make_temp_dir,
    remove_stale_temps,
)

__all__ = ["write_results", "read_results", "format_table", "plot_robustness", "RESULT_FILES"]

#: The files of one results unit, in the order :func:`write_results` renames them into place.
RESULT_FILES = ("robustness.png", "results.csv", "results.json")
_PNG_KEY = "fsrf_run_id"


def _rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    run_id = results.get("meta", {}).get("run_id")
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
                               "metric": name, "value": val, "run_id": run_id}
                        if label == "mean" and std is not None:
                            row["std"] = std[kind][cond][name]
                        rows.append(row)
    # AUILC over the intra rates (fsrf.training.protocols): protocol "auilc", condition "intra"
    for model_name, a in (results.get("auilc") or {}).items():
        blocks = [("mean", a["mean"], a.get("std"))] + [(f"seed {s}", v, None) for s, v in a["per_seed"].items()]
        for label, block, std in blocks:
            for name, val in block.items():
                row = {"model": model_name, "aggregate": label, "protocol": "auilc", "condition": "intra",
                       "metric": name, "value": val, "run_id": run_id}
                if std is not None:
                    row["std"] = std[name]
                rows.append(row)
    return rows


def write_results(results: Mapping[str, Any], out_dir: str | os.PathLike, *, plot: bool = True,
                  metric: str | None = None) -> dict[str, Path]:
    """Write ``results.json``, ``results.csv`` and (``plot``) ``robustness.png`` to ``out_dir`` as one unit.

    ``results`` = ``{"models": {name: {"mean": {...}, "std": {...}, "per_seed": {...}}}, "meta": {...}}``.
    The files get a fresh ``run_id`` (``meta.run_id`` in the JSON; the caller's dict is not
    changed), are written into a temp folder in ``out_dir`` and renamed into place once all are
    complete. With ``plot=False`` an older ``robustness.png`` is removed, since it would belong
    to other results. Temp files and folders left in ``out_dir`` by killed runs are removed first.
    Returns ``{"json": path, "csv": path[, "png": path]}``.
    """
    out = ensure_dir(out_dir)
    remove_stale_temps(out)
    results = {**results, "meta": {**results.get("meta", {}), "run_id": uuid.uuid4().hex}}
    staging = make_temp_dir(out, "results")
    try:
        atomic_write_text(staging / "results.json", json.dumps(results, indent=2, default=_json_default))
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=["model", "aggregate", "protocol", "condition", "metric", "value", "std",
                                            "run_id"])
        w.writeheader()
        for row in _rows(results):
            w.writerow(row)
        atomic_write_text(staging / "results.csv", buf.getvalue())
        if plot:
            plot_robustness(results, staging / "robustness.png", metric=metric)
        names = [n for n in RESULT_FILES if plot or n != "robustness.png"]
        if not plot:
            try:
                os.unlink(out / "robustness.png")
            except FileNotFoundError:
                pass
        done = commit_temp_dir(staging, names, out)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError) and exc.filename is not None and Path(exc.filename).parent == staging:
            exc.filename = str(out / Path(exc.filename).name)  # the user knows the result, not the temp folder
        raise
    by_name = {p.name: p for p in done}
    paths = {"json": by_name["results.json"], "csv": by_name["results.csv"]}
    if plot:
        paths["png"] = by_name["robustness.png"]
    return paths


def read_results(out_dir: str | os.PathLike) -> dict[str, Any]:
    """Read ``results.json`` from ``out_dir`` after checking that ``results.csv`` and
    ``robustness.png`` there (when present) come from the same :func:`write_results` call.

    Raises ``FileNotFoundError`` without ``results.json`` and ``ValueError`` naming the files when
    their run ids differ (a write was interrupted between its renames, or the files were copied
    from different runs: rerun the evaluation).
    """
    out = Path(os.fspath(out_dir))
    jpath = out / "results.json"
    if not jpath.is_file():
        raise FileNotFoundError(f"no results.json in {out}")
    try:
        results = json.loads(jpath.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"{jpath} is not valid JSON: {exc}") from None
    run_id = results.get("meta", {}).get("run_id") if isinstance(results, dict) else None
    found = {}
    cpath = out / "results.csv"
    if cpath.is_file():
        with open(cpath, newline="", encoding="utf-8") as fh:
            ids = {row.get("run_id") or None for row in csv.DictReader(fh)}
        if ids:
            found["results.csv"] = ids.pop() if len(ids) == 1 else ", ".join(sorted(map(str, ids)))
    ppath = out / "robustness.png"
    if ppath.is_file():
        found["robustness.png"] = _png_text(ppath).get(_PNG_KEY)
    for name, other in found.items():
        if other != run_id:
            raise ValueError(f"{out / name} comes from evaluation run {other} but {jpath} from run {run_id}; "
                             f"the files in {out} are not one result: rerun the evaluation into this folder")
    return results


def _png_text(path: Path) -> dict[str, str]:
    # tEXt chunks of a PNG, read directly so that reading results needs no imaging library
    import struct
    import zlib

    out: dict[str, str] = {}
    with open(path, "rb") as fh:
        if fh.read(8) != b"\x89PNG\r\n\x1a\n":
            return out
        while True:
            head = fh.read(8)
            if len(head) < 8:
                return out
            length, kind = struct.unpack(">I4s", head)
            body = fh.read(length)
            fh.read(4)
            if kind == b"tEXt" and b"\0" in body:
                k, v = body.split(b"\0", 1)
                out[k.decode("latin-1")] = v.decode("latin-1")
            elif kind == b"zTXt" and b"\0" in body:
                k, v = body.split(b"\0", 1)
                try:
                    out[k.decode("latin-1")] = zlib.decompress(v[1:]).decode("latin-1")
                except zlib.error:
                    pass
            elif kind == b"IEND":
                return out


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _headline(dataset: str | None, seen=()) -> list[str]:
    if "WF1" in seen:  # a classifier's results
        return ["Acc", "WF1", "MacroF1"]
    if dataset == "sims":
        return ["F1_score", "Mult_acc_2", "Mult_acc_3", "MAE", "Corr"]
    return ["Has0_F1_score", "Non0_acc_2", "Mult_acc_7", "MAE", "Corr"]


def format_table(results: Mapping[str, Any], dataset: str | None = None) -> str:
    """Plain-text table of the headline metrics (mean ± std over seeds): one block per protocol
    (intra, inter) and, inside it, one block per model with a row per condition and an ``avg`` row.

    Model and metric names are printed in full: every column is as wide as its longest name or
    value, and the same across the models of a protocol so that their values line up. A model's
    name heads its block on a line of its own, so however long it is, the rows of the five
    headline metrics with std still fit in 100 columns.
    """
    def cell(v: float, s: float | None) -> str:
        return f"{v:.4f}" if s is None or s == 0 or np.isnan(s) else f"{v:.4f} ± {s:.4f}"

    def nanmean(values: list[float]) -> float:  # np.nanmean warns on an all-NaN column
        finite = [v for v in values if not np.isnan(v)]
        return float(np.mean(finite)) if finite else float("nan")

    dataset = dataset or results.get("meta", {}).get("dataset")
    models = list(results["models"])
    first = results["models"][models[0]].get("mean", {}) if models else {}
    seen = next((c for kind in ("intra", "inter") for c in first.get(kind, {}).values()), {})
    cols = _headline(dataset if isinstance(dataset, str) else None, seen)
    lines: list[str] = []
    for kind, title, label in (("intra", "intra-modal frame dropping (rate)", "rate"),
                               ("inter", "inter-modal availability (pattern)", "pattern")):
        blocks = []
        for m in models:
            mean = results["models"][m].get("mean", {}).get(kind, {})
            if not mean:
                continue
            std = results["models"][m].get("std", {}).get(kind, {})
            rows = [(str(cond), [cell(float(mets.get(c, float("nan"))), std.get(cond, {}).get(c)) for c in cols])
                    for cond, mets in mean.items()]
            rows.append(("avg", [cell(nanmean([float(mets.get(c, float("nan"))) for mets in mean.values()]), None)
                                 for c in cols]))
            blocks.append((m, rows))
        if not blocks:
            continue
        # one set of widths for the whole protocol, so the models' blocks line up
        first = max([len(label)] + [len(cond) for _, rows in blocks for cond, _ in rows])
        widths = [max([len(c)] + [len(cells[i]) for _, rows in blocks for _, cells in rows])
                  for i, c in enumerate(cols)]
        lines.append(title)
        for m, rows in blocks:
            lines.append(f"[{models.index(m) + 1}] {m}")
            lines.append("  " + label.rjust(first) + "".join("  " + c.rjust(w) for c, w in zip(cols, widths)))
            for cond, cells in rows:
                lines.append("  " + cond.rjust(first) + "".join("  " + v.rjust(w) for v, w in zip(cells, widths)))
        lines.append("")
    return "\n".join(lines).rstrip("\n")


def plot_robustness(results: Mapping[str, Any], path: str | os.PathLike, *, metric: str | None = None) -> Path:
    """The robustness figure, written atomically as PNG: per metric a row of two panels — the
    metric against the intra missing rate (one line per model, ± std band over seeds) and per
    inter-modal pattern (grouped bars, ± std error bars). Rows: the binary F1 (``Has0_F1_score``,
    ``F1_score`` on SIMS) and MAE — for a classifier's results ``WF1`` and ``Acc`` — or
    ``metric`` alone when given."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    dataset = results.get("meta", {}).get("dataset")
    models = list(results["models"])
    first = results["models"][models[0]]["mean"]
    seen = next((c for kind in ("intra", "inter") for c in first.get(kind, {}).values()), {})
    if metric is not None:
        if metric not in seen:
            raise ValueError(f"metric must be one of the results' metrics {sorted(seen)}; got {metric!r}")
        metrics = [metric]
    else:
        if "WF1" in seen:  # a classifier's results
            metrics = ["WF1", "Acc"]
        else:
            metrics = ["F1_score" if dataset == "sims" else "Has0_F1_score"] + (["MAE"] if "MAE" in seen else [])
    fig, grid = plt.subplots(len(metrics), 2, figsize=(11, 4 * len(metrics)), squeeze=False,
                             gridspec_kw={"width_ratios": [3, 2]})
    for row, name in enumerate(metrics):
        _robustness_row(grid[row], results, models, name, legend=row == 0)
    fig.tight_layout()
    try:
        run_id = results.get("meta", {}).get("run_id")
        info = {_PNG_KEY: str(run_id)} if run_id else None
        return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=120, metadata=info))
    finally:
        plt.close(fig)


def _robustness_row(axes, results: Mapping[str, Any], models: list[str], metric: str, *, legend: bool) -> None:
    label = f"{metric} (lower is better)" if metric == "MAE" else metric
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
    ax.set_ylabel(label)
    ax.set_title("Frame-level missingness")
    ax.grid(alpha=0.3)
    if legend:
        ax.legend()
    ax = axes[1]
    pats = list(results["models"][models[0]]["mean"].get("inter", {}))
    if not pats:
        ax.axis("off")
        return
    width = 0.8 / len(models)
    for i, m in enumerate(models):
        inter = results["models"][m]["mean"]["inter"]
        sd = results["models"][m].get("std", {}).get("inter")
        err = [sd[p][metric] for p in pats] if sd else None  # ± std over seeds, as the bands
        ax.bar(np.arange(len(pats)) + i * width - 0.4 + width / 2, [inter[p][metric] for p in pats], width,
               yerr=err, error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "0.3"}, label=m)
    ax.set_xticks(np.arange(len(pats)), [p.upper() for p in pats])
    lo = min(results["models"][m]["mean"]["inter"][p][metric] for m in models for p in pats)
    ax.set_ylim(max(0.0, lo - 0.1), None)
    ax.set_ylabel(label)
    ax.set_xlabel("available modalities (L = text, A = audio, V = vision)")
    ax.set_title("Whole-modality missingness")
    ax.grid(alpha=0.3, axis="y")
