"""The main job on built-in data: synthetic MOSEI-like features → FSRF against the built-in
baselines and its own ablations (:func:`fsrf.training.compare`) → the comparison table, the
robustness plot and the results files. ``fsrf demo`` is a thin wrapper of :func:`run_demo`.

The synthetic file is written once into the cache folder (:func:`fsrf.data.cache_dir`), not
into the results folder, and reused by later runs.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

__all__ = ["DEMO_FULL", "DEMO_QUICK", "run_demo"]

#: The default demo: every built-in model, one seed (under 5 minutes on 2 CPU cores, data generation included).
DEMO_FULL = {"n": (800, 200, 400), "epochs": 12, "d_model": 64, "patience": 4, "seeds": (1111,),
             "models": None}
#: ``--quick``: FSRF and the two strongest baselines on smaller data (about a minute).
DEMO_QUICK = {"n": (400, 120, 300), "epochs": 8, "d_model": 32, "patience": 4, "seeds": (1111,),
              "models": ("FSRF", "late fusion + modality dropout", "MulT")}


def run_demo(out_dir: str | os.PathLike, *, quick: bool = False, seed: int | None = None, device: str = "cpu",
             progress: bool | None = None, spec: dict | None = None, generator: str = "factor") -> dict:
    """Train and compare the built-in models on synthetic MOSEI-like data; returns the results.

    Args:
        out_dir: results folder: ``comparison.md``, ``results.json``, ``results.csv``,
            ``robustness.png`` and one run folder per model and seed. Reruns resume.
        quick: the small demo (:data:`DEMO_QUICK`) instead of :data:`DEMO_FULL`.
        seed: one training seed instead of the spec's seeds.
        spec: overrides of the demo's sizes: ``n`` (train, valid, test), ``epochs``, ``d_model``,
            ``patience``, ``seeds``, ``models`` (display names of
            :func:`fsrf.training.default_specs`; None = all).
        generator: the synthetic generator (:data:`fsrf.data.SYNTHETIC_GENERATORS`).
        device: where to train.
        progress: progress bars (``None``: only when stderr is a terminal).
    """
    from fsrf.data import cached_synthetic, load_mmsa
    from fsrf.training.comparison import compare, default_specs
    from fsrf.training.trainer import TrainSettings

    spec = {**(DEMO_QUICK if quick else DEMO_FULL), **(spec or {})}
    seeds = [seed] if seed is not None else list(spec["seeds"])
    t0 = time.perf_counter()
    n_train, n_valid, n_test = spec["n"]
    data_path, created = cached_synthetic("mosei", n_train=n_train, n_valid=n_valid, n_test=n_test, seed=0,
                                          generator=generator)
    print(f"{'wrote' if created else 'using'} synthetic MOSEI-like data {data_path}")
    data = load_mmsa(data_path)
    specs = default_specs(spec["d_model"])
    if spec.get("models"):
        known = [s.name for s in specs]
        bad = [m for m in spec["models"] if m not in known]
        if bad:
            raise ValueError(f"demo models must be among {known}; got {bad}")
        specs = [s for s in specs if s.name in spec["models"]]
    settings = TrainSettings(epochs=spec["epochs"], patience=spec["patience"], device=device, progress=progress)
    out = Path(out_dir)
    results = compare(data, specs, out, seeds=seeds, dataset="mosei", settings=settings, progress=progress,
                      log=print)
    results["meta"].update({"synthetic": True, "quick": quick, "generator": generator})
    print(f"\nwrote {out}/comparison.md, results.json, results.csv, robustness.png")
    print(f"demo finished in {time.perf_counter() - t0:.0f}s")
    return results
