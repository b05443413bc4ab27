"""``fsrf demo``: the main job on the built-in synthetic dataset (see :func:`fsrf.training.run_demo`)."""

from __future__ import annotations

import argparse

from fsrf.cli._options import add_progress_options

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    from fsrf.cli._options import locked_output
    from fsrf.training.demo import run_demo

    # the demo's folder holds every run and the results: one demo at a time in it
    with locked_output(args.out):
        run_demo(args.out, quick=args.quick, seed=args.seed, device=args.device, progress=args.progress,
                 generator=args.generator)
    return 0


def add_parser(sub) -> None:
    """Add ``fsrf demo``."""
    p = sub.add_parser("demo", help="FSRF vs. the built-in baselines and its ablations on synthetic MOSEI-like data",
                       description="The main job on the built-in synthetic dataset: trains FSRF, its ablations "
                                   "(no DHF, no DAS, no recovery), late fusion with and without modality dropout "
                                   "and a MulT-style transformer; evaluates every model at intra rates 0.0..0.9 "
                                   "and the seven availability patterns under the same masks; prints the "
                                   "comparison and writes comparison.md, results.json, results.csv and "
                                   "robustness.png. The synthetic data is cached (FSRF_CACHE_DIR, default "
                                   "~/.cache/fsrf), not written into --out.")
    p.add_argument("--quick", action="store_true", help="FSRF and two baselines on small data (under 3 minutes "
                   "on 2 CPU cores)")
    p.add_argument("--out", default="demo_out", help="output directory (default ./demo_out); reruns resume")
    p.add_argument("--seed", type=int, default=None, help="training seed (default 1111)")
    p.add_argument("--generator", choices=["factor", "events", "content"], default="factor",
                   help="synthetic data generator (default factor)")
    p.add_argument("--device", default="cpu")
    add_progress_options(p)
    p.set_defaults(func=_run)
