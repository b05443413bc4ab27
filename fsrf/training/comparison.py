"""The comparison harness: K models × S seeds on one MMSA file, every model evaluated under the
same masks (every intra-modal rate and the seven availability patterns), mean ± std over seeds
and a paired test of a reference model (FSRF by default) against each other model.

Any ``nn.Module`` with ``forward(inputs, masks) -> (B,)`` can take part (see
:class:`fsrf.models.ModelSpec`); ``training_loss(inputs, masks, labels, generator=None)`` is used
when the model has one, the L1 loss otherwise. Every model of one seed sees the same training
sampler draws, the same batch order and the same evaluation masks, so the seeds pair the models.

Statistics. The unit of replication is the seed: one seed is one independent training run of
every model. For each condition, and for the condition groups papers summarise ("r ≥ 0.5", "r <
0.5", "the 7 patterns": per seed the mean over the group's conditions), the harness reports the
mean and the sample standard deviation (ddof = 1) over seeds, and a two-sided **paired t-test
over seeds** (``scipy.stats.ttest_rel``) of reference minus other. Why that test: differences of
the same seed are paired by construction (same data order and masks), conditions within a seed
are not independent (one trained model), so they are averaged, not pooled as samples; with 5
seeds the exact sign-flip and Wilcoxon tests cannot go below p = 1/16 two-sided, whereas the
t-test can, at the price of assuming roughly normal seed-to-seed differences. The exact sign-flip
p-value is reported beside it as the assumption-free check.

Work resumes: each (model, seed) writes ``<out>/<model>/seed_<seed>/eval.json`` when done and
training resumes from ``last.pt``, so a rerun of the same command continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from fsrf.models import ModelSpec
from fsrf.runtime.io import atomic_write_text, ensure_dir
from fsrf.training.protocols import auilc_summary

__all__ = ["default_specs", "FIRST_NAME", "NO_AUX_NAME", "NO_DAS_LOSSES_NAME", "DAS_WEIGHTS", "compare", "merge_replicates", "paired_tests", "summarise",
           "format_comparison", "GROUPS", "DEFAULT_SEEDS", "EVAL_SPLITS", "eval_file", "tables_dir"]

DEFAULT_SEEDS = (1111, 1112, 1113, 1114, 1115)

#: The splits :func:`compare` evaluates: the test split for the table one reports, the validation
#: split for choosing among variants without looking at the test split.
EVAL_SPLITS = ("test", "valid")

#: Condition groups of the summary: name -> (protocol, predicate on the condition key).
GROUPS: dict[str, tuple[str, Callable[[str], bool]]] = {
    "intra r>=0.5": ("intra", lambda c: float(c) >= 0.5 - 1e-9),
    "intra r<0.5": ("intra", lambda c: float(c) < 0.5 - 1e-9),
    "inter (7 patterns)": ("inter", lambda c: True),
}


#: Display name of FSRF as first reconstructed (:meth:`fsrf.FSRFConfig.first_reconstruction`).
FIRST_NAME = "FSRF (first reconstruction)"


#: Display names of the two ablations that isolate the method's loss terms (:func:`default_specs`
#: with ``term_ablations=True``).
NO_AUX_NAME = "FSRF w/o aux terms"
NO_DAS_LOSSES_NAME = "FSRF w/o DAS losses"

#: The weights of the distillation terms between the two views (the DAS losses and the prediction
#: distillation; ``w_recov`` also weights the leave-one-out recovery).
DAS_WEIGHTS = ("w_kl", "w_dist", "w_recov", "w_pred")


def default_specs(d_model: int = 64, *, fsrf_config=None, mult_d_model: int = 32,
                  modality_dropout: float = 0.3, first_reconstruction: bool = False,
                  term_ablations: bool = False) -> list[ModelSpec]:
    """FSRF, its three ablations and the built-in baselines, at width ``d_model``.

    ``fsrf_config`` is the FSRFConfig of the full model (default: the method's defaults at
    ``d_model``); the ablations switch off ``dhf``, ``das`` or ``recovery`` of that config.
    ``first_reconstruction=True`` adds :data:`FIRST_NAME`, that config with the values of
    :data:`fsrf.config.FIRST_RECONSTRUCTION` (the "before" of docs/research-log/).
    ``term_ablations=True`` adds the two ablations that keep the architecture and the views and
    remove loss terms only: :data:`NO_AUX_NAME` (every auxiliary weight 0: the two task losses
    alone) and :data:`NO_DAS_LOSSES_NAME` (view B and its task loss kept, the weights of
    :data:`DAS_WEIGHTS` 0), so that "w/o DAS", which drops view B as well, is not the only test of
    the distillation.
    """
    from fsrf.config import AUX_WEIGHTS, FIRST_RECONSTRUCTION, FSRFConfig

    cfg = fsrf_config or FSRFConfig(d_model=d_model, num_heads=4)
    full = cfg.to_dict()
    first = [ModelSpec(FIRST_NAME, kind="fsrf", kwargs={**full, **FIRST_RECONSTRUCTION})] if first_reconstruction else []
    terms = [ModelSpec(NO_AUX_NAME, kind="fsrf", kwargs={**full, **{w: 0.0 for w in set(AUX_WEIGHTS.values())}}),
             ModelSpec(NO_DAS_LOSSES_NAME, kind="fsrf", kwargs={**full, **{w: 0.0 for w in DAS_WEIGHTS}})
             ] if term_ablations else []
    return [
        ModelSpec("FSRF", kind="fsrf", kwargs=full), *first,
        ModelSpec("FSRF w/o DHF", kind="fsrf", kwargs={**full, "dhf": False}),
        ModelSpec("FSRF w/o DAS", kind="fsrf", kwargs={**full, "das": False}),
        ModelSpec("FSRF w/o recovery", kind="fsrf", kwargs={**full, "recovery": False}),
        *terms,
        ModelSpec("late fusion", kind="late_fusion", kwargs={"d_model": d_model}),
        ModelSpec("late fusion + modality dropout", kind="late_fusion",
                  kwargs={"d_model": d_model, "modality_dropout": modality_dropout}),
        ModelSpec("MulT", kind="mult", kwargs={"d_model": mult_d_model}),
    ]


def _spec_record(spec: ModelSpec) -> dict[str, Any] | None:
    """What a run of a built-in kind was built from, as its ``eval.json`` stores it (None for a
    ``build=`` callable, which cannot be compared)."""
    if spec.kind is None:
        return None
    return json.loads(json.dumps({"kind": spec.kind, "kwargs": dict(spec.kwargs), "train": dict(spec.train)},
                                 default=str))


def _same_record(stored: Mapping[str, Any], made: Mapping[str, Any]) -> bool:
    """Whether a stored run record describes the model asked for: an FSRF config is compared as
    the config it reads as (any saved version, :meth:`fsrf.FSRFConfig.from_saved`), so a run of an
    earlier fsrf counts when it is the same model."""
    if stored.get("kind") == made.get("kind") == "fsrf" and stored.get("train") == made.get("train"):
        from fsrf.config import FSRFConfig

        try:
            return FSRFConfig.from_saved(stored.get("kwargs", {})) == FSRFConfig.from_saved(made["kwargs"])
        except (TypeError, ValueError):
            return False
    return stored == made


def _slug(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    return s or "model"


def _check_specs(specs: Sequence[ModelSpec]) -> list[ModelSpec]:
    if not isinstance(specs, (list, tuple)) or not specs:
        raise ValueError(f"specs must be a non-empty list of fsrf.models.ModelSpec; got {specs!r}")
    for i, s in enumerate(specs):
        if not isinstance(s, ModelSpec):
            raise TypeError(f"specs[{i}] must be an fsrf.models.ModelSpec; got {type(s).__name__}")
    names = [s.name for s in specs]
    slugs = [_slug(n) for n in names]
    dup = sorted({n for n, g in zip(names, slugs) if slugs.count(g) > 1})
    if dup:
        raise ValueError(f"model names must differ (also after making them folder names); clashing: {dup}")
    return list(specs)


def _check_seeds(seeds) -> list[int]:
    if not isinstance(seeds, (list, tuple)) or not seeds:
        raise ValueError(f"seeds must be a non-empty list of ints; got {seeds!r}")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)):
            raise TypeError(f"seeds must be ints; got {s!r}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must not repeat; got {list(seeds)}")
    return [int(s) for s in seeds]


def compare(data, specs: Sequence[ModelSpec], out_dir, *, seeds: Sequence[int] = DEFAULT_SEEDS,
            dataset: str | None = None, settings=None, rates: Iterable[float] | None = None,
            patterns: Iterable[str] | None = None, mask_seed: int = 1111, reference: str | None = None,
            split: str = "test", device: str | None = None, progress: bool | None = None,
            log: Callable[[str], None] | None = print, legacy_f1: bool = False) -> dict[str, Any]:
    """Train every model of ``specs`` with every seed on ``data`` and evaluate them alike.

    Args:
        data: an :class:`fsrf.data.MMSADataset`.
        specs: the models (:class:`fsrf.models.ModelSpec`; :func:`default_specs` for the built-in set).
        out_dir: run folder; ``<model>/seed_<seed>/`` per run, ``results.json``, ``results.csv``,
            ``robustness.png`` and ``comparison.md`` at the top (in ``<out_dir>/<split>/`` for a
            split other than ``test``).
        seeds: training seeds (5 by default); every model uses each of them.
        dataset: ``mosi``/``mosei``/``sims`` (metrics); guessed from ``data`` when None.
        settings: :class:`fsrf.training.TrainSettings` shared by all models (a spec's ``train``
            overrides fields of it). Model selection uses the validation split.
        rates, patterns: evaluation conditions (default every rate 0.0..0.9 and the 7 patterns).
        mask_seed: seed of the evaluation masks, the same for every model and seed.
        reference: the model the paired tests compare with the others (default: the first spec).
        split: the split evaluated: ``"test"`` (default) or ``"valid"``. Each split keeps its own
            per-run file (``eval.json`` for test, ``eval_<split>.json`` otherwise), so the runs of a
            folder trained for the test table are evaluated on the validation split without being
            trained again: choose among variants on ``"valid"``, report them on ``"test"``.
        device: overrides ``settings.device``.
        progress: evaluation progress bars (``None``: only on a terminal); ``False`` also
            silences the per-epoch lines of training.
        log: where the progress lines go (``None``: nowhere).
        legacy_f1: also report the swapped-argument F1 (:data:`fsrf.metrics.LEGACY_F1_KEYS`).

    Returns the results dict also written to ``results.json``: ``models`` ({name: {"per_seed",
    "mean", "std"}}), ``summary`` (per model and group, per seed), ``tests`` (paired tests of the
    reference against each model), ``auilc`` (:func:`fsrf.training.protocols.auilc_summary`) and
    ``meta``.
    """
    plan = _plan(data, specs, out_dir, seeds=seeds, dataset=dataset, settings=settings, rates=rates,
                 patterns=patterns, mask_seed=mask_seed, reference=reference, split=split, device=device,
                 progress=progress, log=log, legacy_f1=legacy_f1)
    t_start = time.perf_counter()
    per_model: dict[str, dict[str, Any]] = {s.name: {} for s in plan.specs}
    timing: dict[str, dict[str, float]] = {s.name: {} for s in plan.specs}
    jobs = list(itertools.product(plan.seeds, plan.specs))  # seed-major: every seed's models finish together
    for k, (seed, spec) in enumerate(jobs, 1):
        tag = f"[{k}/{len(jobs)}]"
        run_dir = plan.out / _slug(spec.name) / f"seed_{seed}"
        rec = _stored_run(plan, spec, run_dir)
        if rec is not None:
            plan.say(f"{tag} {spec.name}, seed {seed}: done before (results in {run_dir / eval_file(plan.split)})")
        else:
            rec = _train_and_evaluate(plan, spec, seed, run_dir, tag)
        per_model[spec.name][str(seed)] = rec["results"]
        timing[spec.name][str(seed)] = rec.get("seconds", float("nan"))
    results = _statistics(plan, per_model, timing, t_start)
    _write_tables(plan, results)
    return results


@dataclass(frozen=True, eq=False)
class _Plan:
    """The arguments of :func:`compare`, checked and with their defaults filled in."""

    data: Any
    specs: list[ModelSpec]
    seeds: list[int]
    settings: Any  # TrainSettings, device override applied
    kind: str
    reference: str
    split: str
    rates: tuple[float, ...]
    patterns: tuple[str, ...]
    mask_seed: int
    protocol: dict[str, Any]
    out: Path
    say: Callable[[str], None]
    progress: bool | None
    legacy_f1: bool


def _plan(data, specs, out_dir, *, seeds, dataset, settings, rates, patterns, mask_seed, reference, split, device,
          progress, log, legacy_f1) -> _Plan:
    """Check :func:`compare`'s arguments (before anything is written), then create ``out_dir``."""
    from fsrf.missing import ALL_PATTERNS
    from fsrf.training.evaluation import DEFAULT_RATES
    from fsrf.training.trainer import TrainSettings

    specs = _check_specs(specs)
    seeds = _check_seeds(list(seeds))
    if split not in EVAL_SPLITS:
        raise ValueError(f"split must be one of {EVAL_SPLITS}; got {split!r}")
    settings = settings or TrainSettings()
    if device is not None:
        settings = dataclasses.replace(settings, device=device)
    rates = tuple(DEFAULT_RATES if rates is None else rates)
    patterns = tuple(ALL_PATTERNS if patterns is None else patterns)
    kind = dataset or data.dataset_kind
    if kind is None:
        raise ValueError("cannot tell the dataset of the data; pass dataset='mosi'|'mosei'|'sims'")
    names = [s.name for s in specs]
    reference = names[0] if reference is None else reference
    if reference not in names:
        raise ValueError(f"reference must be one of the model names {names}; got {reference!r}")
    say = log or (lambda s: None)
    out = ensure_dir(out_dir)
    protocol = {"rates": list(rates), "patterns": list(patterns), "mask_seed": int(mask_seed), "split": split}
    if legacy_f1:  # only then, so that the runs evaluated before the option still count as done
        protocol["legacy_f1"] = True
    return _Plan(data, specs, seeds, settings, kind, reference, split, rates, patterns, mask_seed, protocol, out,
                 say, progress, legacy_f1)


def _stored_run(plan: _Plan, spec: ModelSpec, run_dir: Path) -> dict[str, Any] | None:
    """The record of ``run_dir`` when it was evaluated before under the same protocol; None when
    the run is to be trained (or resumed) and evaluated."""
    done = run_dir / eval_file(plan.split)
    if not done.is_file():
        return None
    rec = json.loads(done.read_text(encoding="utf-8"))
    made = _spec_record(spec)
    # a folder of another model must not stand in for this one (files written before the
    # record existed carry none and are taken as they are)
    if rec.get("spec") is not None and made is not None and not _same_record(rec["spec"], made):
        raise ValueError(f"{done} holds results of another {spec.name!r} (stored {rec['spec']}, asked "
                         f"{made}); use a fresh --out folder, or delete {run_dir} to train it again")
    return rec if rec.get("protocol") == plan.protocol else None


def _train_and_evaluate(plan: _Plan, spec: ModelSpec, seed: int, run_dir: Path, tag: str) -> dict[str, Any]:
    """Train (or resume) one model with one seed, evaluate its ``best.pt`` under every condition
    and write the run's results file; returns the record written."""
    from fsrf.training.evaluation import robust_eval
    from fsrf.training.trainer import fit, load_weights

    t0 = time.perf_counter()
    settings = dataclasses.replace(plan.settings, **dict(spec.train)) if spec.train else plan.settings
    verb = "resuming" if (run_dir / "last.pt").is_file() else "training"  # a finished run only reloads
    plan.say(f"{tag} {verb} {spec.name}, seed {seed} -> {run_dir}")
    res = fit(plan.data, run_dir, model=spec, settings=settings, seed=seed, dataset=plan.kind, resume=True,
              log=None if plan.progress is False else plan.say)
    model = load_weights(spec, plan.data.dims, run_dir / "best.pt", device=settings.device)
    ev = robust_eval(model, plan.data.split(plan.split), plan.kind, rates=plan.rates, patterns=plan.patterns,
                     seed=plan.mask_seed, device=settings.device, progress=plan.progress, legacy_f1=plan.legacy_f1)
    secs = time.perf_counter() - t0
    rec = {"model": spec.name, "seed": seed, "protocol": plan.protocol, "spec": _spec_record(spec),
           "results": ev, "best_epoch": res["best_epoch"], "seconds": secs}
    atomic_write_text(run_dir / eval_file(plan.split), json.dumps(rec, indent=2))
    plan.say(f"{tag} {spec.name}, seed {seed}: best epoch {res['best_epoch'] + 1}, {secs:.0f}s")
    return rec


def _statistics(plan: _Plan, per_model: Mapping[str, Mapping[str, Any]], timing: Mapping[str, Mapping[str, float]],
                t_start: float) -> dict[str, Any]:
    """The results dict of :func:`compare`: mean and std over seeds, group summaries, paired
    tests against the reference, AUILC and the meta of the comparison."""
    from fsrf.training.evaluation import aggregate_seeds

    names = [s.name for s in plan.specs]
    models = {}
    for n in names:
        agg = aggregate_seeds(per_model[n])
        models[n] = {"per_seed": per_model[n], "mean": agg["mean"], "std": agg["std"]}
    results = {"models": models,
               "meta": {"dataset": plan.kind, "data": str(getattr(plan.data, "path", "")), "seeds": plan.seeds,
                        "reference": plan.reference, **plan.protocol, "settings": plan.settings.to_dict(),
                        "specs": [{"name": s.name, **(_spec_record(s) or {"kind": None, "build": repr(s.build)})}
                                  for s in plan.specs],
                        "seconds": {n: timing[n] for n in names},
                        "wall_seconds": round(time.perf_counter() - t_start, 1)}}
    results["summary"] = summarise(results)
    results["tests"] = paired_tests(results, plan.reference)
    results["auilc"] = auilc_summary(results)
    return results


def _write_tables(plan: _Plan, results: Mapping[str, Any]) -> None:
    """``results.json``, ``results.csv``, ``robustness.png`` and ``comparison.md`` of the split,
    and the tables on the log."""
    from fsrf.training.results import write_results

    tables = tables_dir(plan.out, plan.split)
    write_results(results, tables)  # creates the folder
    atomic_write_text(tables / "comparison.md", format_comparison(results))
    plan.say(format_comparison(results))


def merge_replicates(runs: Sequence[Mapping[str, Any]], labels: Sequence[str] | None = None) -> dict[str, Any]:
    """One comparison from several :func:`compare` results of the same models on different data.

    With a fixed test split the spread over training seeds leaves out the sampling of the data
    itself, so two models that differ by less than the split's own sampling noise can come out in
    either order on another draw. Replicates that each draw their data afresh (e.g. a synthetic
    file per data seed, compared with one training seed each) carry that noise as well; merged,
    every per-seed result becomes one replicate ``"<label>:<seed>"`` and the means, stds and paired
    tests are taken over the replicates.

    Args:
        runs: results dicts (``results.json`` of :func:`compare`), with the same models in the same
            order, the same reference, dataset, split, rates and patterns.
        labels: one name per run (default ``r1``, ``r2``, ...), unique.

    Returns a results dict as :func:`compare` writes it, with ``meta["replicates"]`` listing each
    run's label, data file and seeds.
    """
    from fsrf.training.evaluation import aggregate_seeds

    runs = list(runs)
    if len(runs) < 2:
        raise ValueError(f"runs must hold at least two comparison results to merge; got {len(runs)}")
    labels = [f"r{i}" for i in range(1, len(runs) + 1)] if labels is None else [str(x) for x in labels]
    if len(labels) != len(runs) or len(set(labels)) != len(labels):
        raise ValueError(f"labels must be {len(runs)} distinct names, one per run; got {labels}")
    for i, r in enumerate(runs):
        if not isinstance(r, Mapping) or "models" not in r or "meta" not in r:
            raise TypeError(f"runs[{i}] must be a results dict of compare (with 'models' and 'meta')")
    first = runs[0]
    names = list(first["models"])
    keys = ("dataset", "reference", "split", "rates", "patterns")
    for i, r in enumerate(runs):
        if list(r["models"]) != names:
            raise ValueError(f"runs[{i}] holds the models {list(r['models'])}; runs[0] holds {names}")
        for k in keys:
            if r["meta"].get(k) != first["meta"].get(k):
                raise ValueError(f"runs[{i}] has meta {k}={r['meta'].get(k)!r}; runs[0] has {first['meta'].get(k)!r}")
    models = {}
    for n in names:
        per = {f"{lab}:{seed}": res for lab, r in zip(labels, runs) for seed, res in r["models"][n]["per_seed"].items()}
        models[n] = {"per_seed": per, **aggregate_seeds(per)}
    seconds = {n: {f"{lab}:{k}": v for lab, r in zip(labels, runs)
                   for k, v in r["meta"].get("seconds", {}).get(n, {}).items()} for n in names}
    meta = {k: first["meta"].get(k) for k in keys}
    meta.update({"seeds": list(models[names[0]]["per_seed"]), "settings": first["meta"].get("settings"),
                 "specs": first["meta"].get("specs"), "seconds": seconds,
                 "replicates": [{"label": lab, "data": r["meta"].get("data"), "seeds": r["meta"].get("seeds")}
                                for lab, r in zip(labels, runs)]})
    out = {"models": models, "meta": meta}
    out["summary"] = summarise(out)
    out["tests"] = paired_tests(out, meta["reference"])
    return out


def tables_dir(out_dir, split: str) -> Path:
    """Where :func:`compare` writes the tables of ``split``: ``out_dir`` for the test split,
    ``out_dir/<split>`` for another."""
    return Path(out_dir) if split == "test" else Path(out_dir) / split


def eval_file(split: str) -> str:
    """The per-run results file of ``split``: ``eval.json`` for the test split (as before the
    split could be chosen), ``eval_<split>.json`` for another."""
    return "eval.json" if split == "test" else f"eval_{split}.json"


def _metric_names(dataset: str | None, results: Mapping[str, Any] | None = None) -> tuple[str, str]:
    """The two metrics of the tables: the binary F1 and MAE, or a classifier's weighted F1 and
    accuracy (its results carry ``WF1``)."""
    if results is not None:
        first = next(iter(results["models"].values()), {}).get("mean", {})
        cond = next((c for kind in first.values() for c in kind.values()), {})
        if "WF1" in cond:
            return ("WF1", "Acc")
    return ("F1_score", "MAE") if dataset == "sims" else ("Has0_F1_score", "MAE")


def summarise(results: Mapping[str, Any]) -> dict[str, Any]:
    """Per model and group of :data:`GROUPS`: each seed's mean over the group's conditions of every
    metric, then ``{"per_seed": {seed: {metric: v}}, "mean": {...}, "std": {...}}``."""
    out: dict[str, Any] = {}
    for name, entry in results["models"].items():
        out[name] = {}
        for group, (kind, keep) in GROUPS.items():
            per_seed = {}
            for seed, res in entry["per_seed"].items():
                conds = [c for c in res.get(kind, {}) if keep(c)]
                if not conds:
                    continue
                metrics = res[kind][conds[0]].keys()
                per_seed[seed] = {m: float(np.mean([res[kind][c][m] for c in conds])) for m in metrics}
            if per_seed:
                out[name][group] = {"per_seed": per_seed, **_mean_std(per_seed)}
    return out


def _mean_std(per_seed: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    seeds = list(per_seed)
    mean, std = {}, {}
    for m in per_seed[seeds[0]]:
        v = np.array([per_seed[s][m] for s in seeds], dtype=np.float64)
        mean[m] = float(v.mean())
        std[m] = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    return {"mean": mean, "std": std}


def _paired(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Paired tests of ``a - b`` over seeds: t-test (two-sided) and the exact sign-flip test."""
    from scipy import stats

    d = a - b
    n = len(d)
    res = {"diff": float(d.mean()), "n": n, "t_p": float("nan"), "signflip_p": float("nan")}
    if n < 2:
        return res
    if np.allclose(d, d[0]):  # a constant difference has no spread: the t statistic is undefined
        res["t_p"] = 1.0 if d[0] == 0 else 0.0
    else:
        res["t_p"] = float(stats.ttest_rel(a, b).pvalue)
    # every assignment of signs to the |d_i| is equally likely under H0 (exact for n <= 16)
    if n <= 16:
        absd = np.abs(d)
        obs = abs(d.sum())
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        res["signflip_p"] = float(np.mean(np.abs(signs @ absd) >= obs - 1e-12))
    return res


def paired_tests(results: Mapping[str, Any], reference: str) -> dict[str, Any]:
    """Paired tests of ``reference`` against every other model, per condition and per group.

    Returns ``{other: {"groups": {group: {metric: test}}, "conditions": {kind: {cond: {metric:
    test}}}}}`` where a test is ``{"diff": mean(reference − other), "n", "t_p", "signflip_p"}``.
    Only the seeds both models have are used.
    """
    models = results["models"]
    summary = results.get("summary") or summarise(results)
    ref = models[reference]["per_seed"]
    out: dict[str, Any] = {}
    for other, entry in models.items():
        if other == reference:
            continue
        seeds = [s for s in ref if s in entry["per_seed"]]
        groups = {}
        for g, block in summary.get(reference, {}).items():
            ob = summary.get(other, {}).get(g)
            if ob is None:
                continue
            ss = [s for s in seeds if s in block["per_seed"] and s in ob["per_seed"]]
            groups[g] = {m: _paired(np.array([block["per_seed"][s][m] for s in ss]),
                                    np.array([ob["per_seed"][s][m] for s in ss])) for m in block["mean"]}
        conds: dict[str, Any] = {}
        for kind in ("intra", "inter"):
            for c in (ref[seeds[0]].get(kind, {}) if seeds else {}):
                conds.setdefault(kind, {})[c] = {
                    m: _paired(np.array([ref[s][kind][c][m] for s in seeds]),
                               np.array([entry["per_seed"][s][kind][c][m] for s in seeds]))
                    for m in ref[seeds[0]][kind][c]}
        out[other] = {"groups": groups, "conditions": conds}
    return out


def _pm(mean: float, std: float, digits: int = 3) -> str:
    """``mean ± std``; the mean alone when the std is undefined (NaN: one seed)."""
    if not math.isfinite(mean):
        return "–"
    if not math.isfinite(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _p(p: float) -> str:
    if not math.isfinite(p):
        return "–"
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def format_comparison(results: Mapping[str, Any]) -> str:
    """Markdown tables in the layout MSA papers print: a summary per condition group with the
    paired tests' p-values, F1 and MAE per intra-modal rate, and F1 per availability pattern
    (columns L, A, V, LA, LV, AV, LAV, Avg)."""
    meta = results.get("meta", {})
    f1, mae = _metric_names(meta.get("dataset"), results)
    ref = meta.get("reference") or next(iter(results["models"]))
    summary = results.get("summary") or summarise(results)
    tests = results.get("tests") or paired_tests(results, ref)
    seeds = meta.get("seeds", [])

    def sd(value: float) -> float:  # one seed has no spread to print ("± 0.000" would say it has)
        return float("nan") if len(seeds) == 1 else value

    split = {"test": "Test", "valid": "Validation"}.get(str(meta.get("split", "test")), str(meta.get("split")))
    if meta.get("replicates"):
        lines = [f"{split} split, {len(seeds)} replicates, each its own data file and training seed "
                 f"({', '.join(map(str, seeds))}), mean ± std over replicates; p: paired t-test over replicates of "
                 f"{ref} vs. the row's model (exact sign-flip p in brackets).", ""]
    elif len(seeds) == 1:
        lines = [f"{split} split, one seed ({seeds[0]}): single runs, no spread and no test (n = 1).", ""]
    else:
        lines = [f"{split} split, {len(seeds)} seeds ({', '.join(map(str, seeds))}), mean ± std over seeds; "
                 f"p: paired t-test over seeds of {ref} vs. the row's model (exact sign-flip p in brackets).", ""]
    head = "| model |" + "".join(f" {g} {f1} | p | {g} {mae} | p |" for g in GROUPS)
    lines += [head, "|---|" + "---:|" * (4 * len(GROUPS))]
    for name in results["models"]:
        row = f"| {name} |"
        for g in GROUPS:
            blk = summary.get(name, {}).get(g)
            for metric in (f1, mae):
                if blk is None:
                    row += " – | – |"
                    continue
                row += f" {_pm(blk['mean'][metric], sd(blk['std'][metric]))} |"
                t = tests.get(name, {}).get("groups", {}).get(g, {}).get(metric)
                row += f" {_p(t['t_p'])} ({_p(t['signflip_p'])}) |" if t else " |"
        lines.append(row)
    au = results.get("auilc") or auilc_summary(results)
    if au:
        lines += ["", f"AUILC of {f1} and {mae} over the intra-modal rates (trapezoidal, divided by the rate span; "
                      f"mean ± std over seeds)", "", f"| model | AUILC {f1} | AUILC {mae} |", "|---|---:|---:|"]
        for name, a in au.items():
            lines.append(f"| {name} | {_pm(a['mean'][f1], a['std'][f1])} | {_pm(a['mean'][mae], a['std'][mae])} |")
    for kind, title, metrics in (("intra", "intra-modal missing rate r", (f1, mae)),
                                 ("inter", "available modalities", (f1, mae))):
        first = next(iter(results["models"].values()))["mean"].get(kind, {})
        conds = list(first)
        if not conds:
            continue
        for metric in metrics:
            labels = [c.upper() if kind == "inter" else c for c in conds]
            lines += ["", f"{metric} by {title}", "",
                      "| model | " + " | ".join(labels) + " | Avg |", "|---|" + "---:|" * (len(conds) + 1)]
            for name, entry in results["models"].items():
                cells = [_pm(entry["mean"][kind][c][metric], sd(entry["std"][kind][c][metric])) for c in conds]
                avg = np.mean([entry["mean"][kind][c][metric] for c in conds])
                lines.append(f"| {name} | " + " | ".join(cells) + f" | {avg:.3f} |")
    return "\n".join(lines) + "\n"
