"""``fsrf demo``: the main job on the built-in synthetic dataset (see :func:`fsrf.training.run_demo`)."""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    from fsrf.cli._options import locked_output
    from fsrf.training.demo import run_demo

    # the demo's folder holds its data, both runs and the results: one demo at a time in it
    with locked_output(args.out):
        run_demo(args.out, quick=args.quick, seed=args.seed, device=args.device, progress=not args.no_progress)
    return 0


def add_parser(sub) -> None:
    """Add ``fsrf demo``."""
    p = sub.add_parser("demo", help="train and evaluate FSRF vs. an ablated baseline on synthetic MOSEI-like data",
                       description="The main job on the built-in synthetic dataset: trains FSRF and the baseline "
                                   "with dhf and das off, evaluates both at intra rates 0.0..0.9 and the six "
                                   "inter patterns plus complete, prints the table, writes results.json, "
                                   "results.csv and robustness.png.")
    p.add_argument("--quick", action="store_true", help="small data and few epochs (under 3 minutes on 2 CPU cores)")
    p.add_argument("--out", default="demo_out", help="output directory (default ./demo_out); reruns resume")
    p.add_argument("--seed", type=int, default=1111)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_run)
