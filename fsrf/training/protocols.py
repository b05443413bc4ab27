"""The published protocols' tables, and AUILC.

``--protocol`` of ``fsrf evaluate`` and ``fsrf compare`` (:data:`PROTOCOLS`):

* ``"fsrf"`` (default): intra rates 0.0–0.9 and the 7 availability patterns, the tables of
  :func:`fsrf.training.comparison.format_comparison`.
* ``"lnln"`` (LNLN, Zhang et al. 2024): intra rates 0.0–0.9, no pattern; per model a table of the
  regression metrics at each rate and their mean over the rates, the headline of that paper:
  Acc-2 and F1 as ``Has0 / Non0``, Acc-5, Acc-7, MAE, Corr (CH-SIMS: Acc-2, Acc-3, Acc-5, F1,
  MAE, Corr). LNLN reports three seeds with a checkpoint chosen on the test split at r = 0.5
  (``--selection lnln-test@0.5`` selects one checkpoint on the test MAE at r = 0.5; LNLN chose one
  per metric, which fsrf does not do); ``fsrf compare --protocol lnln`` uses seeds 1111–1113 and
  that selection unless told otherwise.
* ``"corrkd"`` (CorrKD, Li et al. 2024; HRLF): intra rates 0.0–1.0 and the six incomplete
  patterns with their average: the binary F1 (Has0, weighted; CH-SIMS: F1) of every model at each
  rate, and per pattern with the average.

Each table is written as markdown and LaTeX (``table_<protocol>.md`` / ``.tex``) with a caption
that says the split, the seeds, the selection policy and the F1 convention.

**AUILC** (TFR-Net): the area under a metric's curve over the intra rates, by the trapezoidal
rule over the rates evaluated, divided by the span of those rates: ``AUILC = (1 / (r_K − r_1))
Σ_k (r_{k+1} − r_k) (m_k + m_{k+1}) / 2``. Normalised so, it is on the metric's own scale (the
mean height of the curve); over rates 0–1 it is TFR-Net's area itself. One rate: its value.
:func:`auilc_summary` gives it per model and seed with mean ± std over seeds, for every metric.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["Protocol", "PROTOCOLS", "auilc", "auilc_summary", "format_protocol_table", "write_protocol_tables",
           "caption"]


@dataclass(frozen=True)
class Protocol:
    """Conditions and defaults of a published protocol."""

    name: str
    rates: tuple[float, ...]
    patterns: tuple[str, ...]
    seeds: tuple[int, ...] | None = None       # None: the command's default
    selection: str | None = None               # None: the command's default
    paper: str = ""


PROTOCOLS: dict[str, Protocol] = {
    "fsrf": Protocol("fsrf", tuple(round(0.1 * i, 1) for i in range(10)),
                     ("l", "a", "v", "la", "lv", "av", "lav"), paper="this library"),
    "lnln": Protocol("lnln", tuple(round(0.1 * i, 1) for i in range(10)), (), seeds=(1111, 1112, 1113),
                     selection="lnln-test@0.5", paper="LNLN (Zhang et al., NeurIPS 2024)"),
    "corrkd": Protocol("corrkd", tuple(round(0.1 * i, 1) for i in range(11)), ("l", "a", "v", "la", "lv", "av"),
                       paper="CorrKD (Li et al., CVPR 2024) and HRLF"),
}


def auilc(curve: Mapping[Any, Mapping[str, float]]) -> dict[str, float]:
    """AUILC of every metric of ``curve`` = ``{rate: {metric: value}}`` (rates as numbers or their
    string keys); see the module docstring. NaN where a value is NaN."""
    if not curve:
        raise ValueError("auilc needs at least one rate; got an empty curve")
    points = sorted((float(r), m) for r, m in curve.items())
    rates = np.array([r for r, _ in points])
    out = {}
    for name in points[0][1]:
        ys = np.array([float(m[name]) for _, m in points])
        if len(rates) == 1:
            out[name] = float(ys[0])
            continue
        area = float(np.sum(np.diff(rates) * (ys[1:] + ys[:-1]) / 2.0))
        out[name] = area / float(rates[-1] - rates[0])
    return out


def auilc_summary(results: Mapping[str, Any]) -> dict[str, Any]:
    """``{model: {"per_seed": {seed: {metric: AUILC}}, "mean": {...}, "std": {...}}}`` over the intra
    rates of every seed (std: sample std, ddof 1; NaN for one seed)."""
    out = {}
    for name, entry in results["models"].items():
        per = {s: auilc(res["intra"]) for s, res in entry.get("per_seed", {}).items() if res.get("intra")}
        if not per:
            continue
        metrics = next(iter(per.values()))
        vals = {m: np.array([per[s][m] for s in per], dtype=np.float64) for m in metrics}
        out[name] = {"per_seed": per, "mean": {m: float(v.mean()) for m, v in vals.items()},
                     "std": {m: float(v.std(ddof=1)) if len(v) > 1 else float("nan") for m, v in vals.items()}}
    return out


def _selection(results: Mapping[str, Any]) -> str:
    meta = results.get("meta", {})
    sel = (meta.get("settings") or {}).get("selection") or meta.get("selection")
    if sel is None:
        found = {m.get("selection") for e in results["models"].values() for m in (e.get("meta") or {}).values()
                 if isinstance(m, Mapping)}
        sel = ", ".join(sorted(str(s) for s in found if s)) or "unknown"
    return {"valid": "the epoch with the lowest validation MAE (r = 0 and 0.5)",
            "lnln-test@0.5": "the epoch with the lowest test MAE at r = 0.5 (LNLN's split; one checkpoint for all "
                             "metrics)"}.get(sel, sel)


def caption(results: Mapping[str, Any], protocol: str) -> str:
    """What produced a table: protocol, split, seeds, selection policy, F1 convention, AUILC."""
    meta = results.get("meta", {})
    seeds = [str(s) for s in meta.get("seeds", [])]
    legacy = any(k.endswith("_legacy") for e in results["models"].values()
                 for c in e.get("mean", {}).get("intra", {}).values() for k in c)
    f1 = ("F1: weighted F1 with the true labels first (scikit-learn's f1_score(y_true, y_pred), MMSA's order)"
          + ("; the *_legacy F1 swaps the arguments, as older MMSA, the first LNLN release and MulT did"
             if legacy else ""))
    p = PROTOCOLS[protocol]
    return (f"{p.paper} protocol. {str(meta.get('split', 'test')).capitalize()} split, mean over "
            f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({', '.join(seeds)}); model selection: "
            f"{_selection(results)}. {f1}. Accuracies and F1 in %.")


def _pct(v: float) -> str:
    return "–" if not math.isfinite(v) else f"{100 * v:.2f}"


def _num(v: float) -> str:
    return "–" if not math.isfinite(v) else f"{v:.3f}"


def _render(head: list[str], rows: list[list[str]], fmt: str, title: str, cap: str) -> str:
    if fmt == "md":
        lines = [f"**{title}** {cap}", "", "| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines) + "\n"
    esc = lambda s: s.replace("%", r"\%").replace("_", r"\_").replace("≥", r"$\geq$").replace("±", r"$\pm$")  # noqa: E731
    lines = [r"\begin{table}[t]", r"\centering", r"\caption{" + esc(f"{title}. {cap}") + "}",
             r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}", r"\toprule", " & ".join(esc(h) for h in head) + r" \\",
             r"\midrule"]
    lines += [" & ".join(esc(c) for c in r) + r" \\" for r in rows]
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _lnln(results: Mapping[str, Any], fmt: str) -> str:
    dataset = results.get("meta", {}).get("dataset")
    cap = caption(results, "lnln")
    parts = []
    for name, entry in results["models"].items():
        intra = entry["mean"].get("intra", {})
        if not intra:
            continue
        rates = sorted(intra, key=float)
        if dataset == "sims":
            head = ["r", "Acc-2", "Acc-3", "Acc-5", "F1", "MAE", "Corr"]
            row = lambda m: [_pct(m["Mult_acc_2"]), _pct(m["Mult_acc_3"]), _pct(m["Mult_acc_5"]),  # noqa: E731
                             _pct(m["F1_score"]), _num(m["MAE"]), _num(m["Corr"])]
        else:
            head = ["r", "Acc-2 (Has0/Non0)", "F1 (Has0/Non0)", "Acc-5", "Acc-7", "MAE", "Corr"]
            row = lambda m: [f"{_pct(m['Has0_acc_2'])}/{_pct(m['Non0_acc_2'])}",  # noqa: E731
                             f"{_pct(m['Has0_F1_score'])}/{_pct(m['Non0_F1_score'])}", _pct(m["Mult_acc_5"]),
                             _pct(m["Mult_acc_7"]), _num(m["MAE"]), _num(m["Corr"])]
        rows = [[r] + row(intra[r]) for r in rates]
        keys = intra[rates[0]].keys()
        mean = {k: float(np.mean([intra[r][k] for r in rates])) for k in keys}
        rows.append([f"mean {rates[0]}–{rates[-1]}"] + row(mean))
        parts.append(_render(head, rows, fmt, f"{name}: metrics by intra-modal missing rate", cap))
    return "\n".join(parts)


def _corrkd(results: Mapping[str, Any], fmt: str) -> str:
    dataset = results.get("meta", {}).get("dataset")
    f1 = "F1_score" if dataset == "sims" else "Has0_F1_score"
    cap = caption(results, "corrkd")
    models = list(results["models"])
    first = results["models"][models[0]]["mean"]
    out = []
    rates = sorted(first.get("intra", {}), key=float)
    if rates:
        rows = [[m] + [_pct(results["models"][m]["mean"]["intra"][r][f1]) for r in rates]
                + [_pct(float(np.mean([results["models"][m]["mean"]["intra"][r][f1] for r in rates])))]
                for m in models]
        out.append(_render(["model", *rates, "Avg"], rows, fmt, f"{f1} by intra-modality missing rate", cap))
    pats = [p for p in PROTOCOLS["corrkd"].patterns if p in first.get("inter", {})]
    if pats:
        rows = [[m] + [_pct(results["models"][m]["mean"]["inter"][p][f1]) for p in pats]
                + [_pct(float(np.mean([results["models"][m]["mean"]["inter"][p][f1] for p in pats])))]
                for m in models]
        out.append(_render(["model", *[p.upper() for p in pats], "Avg"], rows, fmt,
                           f"{f1} by available modalities (inter-modality missingness)", cap))
    return "\n".join(out)


def format_protocol_table(results: Mapping[str, Any], protocol: str, fmt: str = "md") -> str:
    """The table(s) of ``protocol`` (``"lnln"`` or ``"corrkd"``) in ``fmt`` (``"md"`` or ``"tex"``),
    followed by the AUILC of every model's headline metrics over the intra rates."""
    if protocol not in ("lnln", "corrkd"):
        raise ValueError(f"protocol must be 'lnln' or 'corrkd' for a paper table; got {protocol!r}")
    if fmt not in ("md", "tex"):
        raise ValueError(f"fmt must be 'md' or 'tex'; got {fmt!r}")
    body = _lnln(results, fmt) if protocol == "lnln" else _corrkd(results, fmt)
    au = auilc_summary(results)
    if au:
        dataset = results.get("meta", {}).get("dataset")
        keys = [k for k in (("F1_score", "MAE", "Corr") if dataset == "sims" else ("Has0_F1_score", "MAE", "Corr"))
                if k in next(iter(au.values()))["mean"]]
        rows = [[m] + [f"{_num(a['mean'][k])} ± {_num(a['std'][k])}" if math.isfinite(a["std"][k])
                       else _num(a["mean"][k]) for k in keys] for m, a in au.items()]
        body += "\n" + _render(["model", *[f"AUILC {k}" for k in keys]], rows, fmt,
                               "AUILC over the intra-modal missing rates (trapezoidal, divided by the rate span; "
                               "mean ± std over seeds)", caption(results, protocol))
    return body


def write_protocol_tables(results: Mapping[str, Any], out_dir, protocol: str) -> list[Path]:
    """Write ``table_<protocol>.md`` and ``table_<protocol>.tex`` to ``out_dir`` (atomically);
    nothing for the ``"fsrf"`` protocol, whose tables are comparison.md's."""
    from fsrf.runtime.io import atomic_write_text, ensure_dir

    if protocol == "fsrf":
        return []
    out = ensure_dir(out_dir)
    return [atomic_write_text(out / f"table_{protocol}.{fmt}", format_protocol_table(results, protocol, fmt))
            for fmt in ("md", "tex")]
