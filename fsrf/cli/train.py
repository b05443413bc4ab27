"""``fsrf train``: train FSRF on an MMSA feature file (one or several seeds)."""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path

from fsrf.cli._options import (
    add_training_options,
    locked_output,
    model_config,
    parse_ablate,
    train_settings,
)

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    from fsrf.data import load_dataset
    from fsrf.training.trainer import check_trainable, fit

    data, kind = load_dataset(args.data, args.dataset, strict=args.strict)
    cfg = model_config(args, parse_ablate(args.ablate))
    settings = train_settings(args)
    # refused here, before a multi-seed run creates and locks its folder
    check_trainable(data, settings, int(os.environ.get("WORLD_SIZE", "1")))
    seeds = args.seeds or [1111]
    out = Path(args.out)
    say = print if os.environ.get("RANK", "0") == "0" else (lambda *a, **k: None)  # rank 0 logs under torchrun
    # several seeds share the parent folder: hold it for the whole run, so a second run on it
    # cannot start between two seeds (fit locks each seed's folder as well)
    with locked_output(out) if len(seeds) > 1 else contextlib.nullcontext():
        for seed in seeds:
            target = out if len(seeds) == 1 else out / f"seed_{seed}"
            say(f"training FSRF on {args.data} ({kind}), seed {seed} -> {target}")
            res = fit(data, target, config=cfg, settings=settings, seed=seed, dataset=kind, resume=args.resume)
            say(f"seed {seed}: best epoch {res['best_epoch'] + 1}, selection MAE {res['best_score']:.4f} "
                f"({settings.selection}); model at {res['checkpoint']}")
    return 0


def add_parser(sub) -> None:
    """Add ``fsrf train``."""
    p = sub.add_parser("train", help="train FSRF on an MMSA feature file",
                       description="Train FSRF with the LNLN missingness sampler, validation-based early stopping, "
                                   "an atomic checkpoint each epoch and --resume. Works under torchrun (DDP).")
    p.add_argument("--data", required=True, help="MMSA feature pickle")
    p.add_argument("--dataset", choices=["mosi", "mosei", "sims"], help="dataset (metrics, label scheme); "
                   "guessed from the file when omitted")
    p.add_argument("--seeds", type=int, nargs="+", help="one or more seeds (default 1111); several seeds write "
                   "DIR/seed_<seed>/")
    p.add_argument("--ablate", help="comma list of modules to switch off: dhf,das,recovery")
    p.add_argument("--selection", choices=["valid", "lnln-test@0.5"],
                   help="model selection: validation MAE (default) or LNLN's test-at-0.5 policy (recorded)")
    p.add_argument("--resume", action="store_true",
                   help="continue from DIR/last.pt, after checking that its checkpoints load (the lock of a run "
                        "that died is taken over)")
    p.add_argument("--out", required=True, help="output directory")
    add_training_options(p)
    p.set_defaults(func=_run)
