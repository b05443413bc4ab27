"""The main job on built-in data: synthetic MOSEI-like features → FSRF and its ablated baseline
→ robustness table and files. ``fsrf demo`` is a thin wrapper of :func:`run_demo`."""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["DEMO_FULL", "DEMO_QUICK", "run_demo"]

#: Sizes of the default demo (about 8 minutes on 2 CPU cores) and of ``--quick`` (about 1 minute).
DEMO_FULL = {"n": (1500, 300, 300), "epochs": 25, "d_model": 64, "patience": 6}
DEMO_QUICK = {"n": (500, 150, 200), "epochs": 16, "d_model": 64, "patience": 6}


def run_demo(out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 1111, device: str = "cpu",
             progress: bool = True, spec: dict | None = None) -> dict:
    """Synthetic MOSEI-like data → FSRF and the ablated baseline (dhf and das off) → robustness
    table, ``results.json``, ``results.csv`` and ``robustness.png`` in ``out_dir``.

    ``spec`` overrides the sizes of :data:`DEMO_FULL` / :data:`DEMO_QUICK` (keys ``n``,
    ``epochs``, ``d_model``, ``patience``). Reruns on the same ``out_dir`` resume the runs.
    Returns the results dict that was written.
    """
    from fsrf.config import FSRFConfig
    from fsrf.data import load_mmsa, make_synthetic
    from fsrf.missing import ALL_PATTERNS
    from fsrf.training.evaluation import DEFAULT_RATES, aggregate_seeds, robust_eval
    from fsrf.training.trainer import TrainSettings, fit, load_model
    from fsrf.training.results import format_table, write_results

    spec = {**(DEMO_QUICK if quick else DEMO_FULL), **(spec or {})}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_path = out / "synthetic_mosei.pkl"
    t0 = time.perf_counter()
    if not data_path.exists():
        n_train, n_valid, n_test = spec["n"]
        make_synthetic("mosei", data_path, n_train=n_train, n_valid=n_valid, n_test=n_test, seed=0)
        print(f"wrote synthetic MOSEI-like data to {data_path}")
    data = load_mmsa(data_path)
    base = FSRFConfig(d_model=spec["d_model"], num_heads=4)
    models = {"FSRF": base, "baseline (dhf, das off)": base.replace(dhf=False, das=False)}
    settings = TrainSettings(epochs=spec["epochs"], patience=spec["patience"], device=device, progress=progress)
    results = {"models": {}, "meta": {}}
    for name, cfg in models.items():
        run_dir = out / ("fsrf" if cfg.dhf else "baseline")
        print(f"\n== training {name} ({settings.epochs} epochs max) ==")
        fit(data, run_dir, config=cfg, settings=settings, seed=seed, dataset="mosei", resume=True)
        model, _ = load_model(run_dir / "best.pt", device=device)
        res = robust_eval(model, data.split("test"), "mosei", rates=DEFAULT_RATES, patterns=ALL_PATTERNS,
                          device=device, progress=progress)
        agg = aggregate_seeds({str(seed): res})
        results["models"][name] = {"per_seed": {str(seed): res}, "mean": agg["mean"], "std": agg["std"]}
    results["meta"] = {"dataset": "mosei", "data": str(data_path), "synthetic": True, "quick": quick,
                       "seeds": [seed], "mask_seed": 1111, "rates": list(DEFAULT_RATES),
                       "patterns": list(ALL_PATTERNS), "epochs": settings.epochs, "d_model": spec["d_model"],
                       "seconds": round(time.perf_counter() - t0, 1)}
    print()
    print(format_table(results))
    paths = write_results(results, out)
    print("\nwrote " + ", ".join(str(p) for p in paths.values()))
    print(f"demo finished in {time.perf_counter() - t0:.0f}s")
    return results
