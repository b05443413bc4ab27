"""``fsrf evaluate``: robustness evaluation of a checkpoint or a run folder of seeds."""

from __future__ import annotations

import argparse

from fsrf.cli._options import add_progress_options, add_protocol_options, protocol_conditions

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    from fsrf.training.evaluation import (
        evaluate_checkpoints,
        parse_patterns,
        parse_rates,
    )
    from fsrf.training.protocols import auilc_summary, write_protocol_tables
    from fsrf.training.results import format_table, write_results

    rates, patterns = protocol_conditions(args, parse_rates, parse_patterns)
    entry = evaluate_checkpoints(args.checkpoint, args.data, rates=rates, patterns=patterns, seed=args.mask_seed,
                                 device=args.device, dataset=args.dataset, split=args.split,
                                 progress=args.progress, strict=args.strict, legacy_f1=args.legacy_f1)
    kinds = {m["dataset"] for m in entry["meta"].values()}
    results = {"models": {args.name: entry},
               "meta": {"dataset": kinds.pop() if len(kinds) == 1 else sorted(kinds), "split": args.split,
                        "protocol": {"intra": "independent per-modality frame dropping (fsrf.missing.drop_frames)",
                                     "inter": "whole-modality removal (fsrf.missing.remove_modalities)"},
                        "rates": list(rates), "patterns": list(patterns), "mask_seed": args.mask_seed,
                        "seeds": list(entry["per_seed"]), "checkpoint": args.checkpoint, "data": args.data}}
    results["meta"]["protocol_name"] = args.protocol
    results["auilc"] = auilc_summary(results)
    print(format_table(results))
    if args.out:
        paths = list(write_results(results, args.out).values())
        paths += write_protocol_tables(results, args.out, args.protocol)
        print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def add_parser(sub) -> None:
    """Add ``fsrf evaluate``."""
    p = sub.add_parser("evaluate", help="robustness evaluation of a trained model",
                       description="MMSA metrics of a checkpoint under intra-modal frame dropping and inter-modal "
                                   "patterns; results.json, results.csv and robustness.png in --out.")
    p.add_argument("--checkpoint", required=True, help="best.pt, a run directory, or a directory of seed_<seed>/")
    p.add_argument("--data", required=True, help="MMSA feature pickle")
    p.add_argument("--dataset", choices=["mosi", "mosei", "sims"], help="override the dataset recorded in the checkpoint")
    add_protocol_options(p)
    p.add_argument("--mask-seed", type=int, default=1111, help="seed of the evaluation masks (default 1111)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--name", default="FSRF", help="model name in tables and plots")
    p.add_argument("--out", help="output directory for results.json / results.csv / robustness.png (written as one "
                                 "unit: all three come from this run)")
    add_progress_options(p)
    p.set_defaults(func=_run)
