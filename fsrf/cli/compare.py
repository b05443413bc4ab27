"""``fsrf compare``: FSRF against the built-in baselines, K models × S seeds on one MMSA file
(see :func:`fsrf.training.compare`)."""

from __future__ import annotations

import argparse

from fsrf.cli._options import (add_protocol_options, add_training_options, locked_output, model_config,
                               protocol_conditions, train_settings)

__all__ = ["add_parser", "MODEL_KEYS", "SPLITS"]

#: ``--split`` choices: :data:`fsrf.training.comparison.EVAL_SPLITS`, spelled out so that the command
#: line starts without importing torch (a test keeps the two equal)
SPLITS = ("test", "valid")

#: ``--models`` keys -> the display names of :func:`fsrf.training.default_specs`, in its order
#: (``all`` is every one but ``fsrf-first``, the method before the rounds of docs/research-log/).
MODEL_KEYS = {
    "fsrf": "FSRF", "fsrf-first": "FSRF (first reconstruction)", "fsrf-no-dhf": "FSRF w/o DHF", "fsrf-no-das": "FSRF w/o DAS",
    "fsrf-no-recovery": "FSRF w/o recovery", "fsrf-no-aux": "FSRF w/o aux terms",
    "fsrf-no-das-losses": "FSRF w/o DAS losses", "late-fusion": "late fusion",
    "late-fusion-md": "late fusion + modality dropout", "mult": "MulT",
}


def parse_models(spec: str) -> list[str]:
    """``"all"`` or a comma list of :data:`MODEL_KEYS` keys → display names, in the table's order."""
    s = spec.strip().lower()
    if s == "all":
        return [v for k, v in MODEL_KEYS.items() if k != "fsrf-first"]
    keys = [k.strip() for k in s.split(",") if k.strip()]
    bad = [k for k in keys if k not in MODEL_KEYS]
    if bad or not keys:
        raise ValueError(f"--models takes 'all' or a comma list of {', '.join(MODEL_KEYS)}; got {spec!r}")
    return [MODEL_KEYS[k] for k in MODEL_KEYS if k in keys]


def _run(args: argparse.Namespace) -> int:
    from fsrf.data import load_dataset
    from fsrf.training.comparison import compare, default_specs, tables_dir
    from fsrf.training.evaluation import parse_patterns, parse_rates

    from fsrf.training.protocols import PROTOCOLS, write_protocol_tables

    names = parse_models(args.models)
    rates, patterns = protocol_conditions(args, parse_rates, parse_patterns)
    proto = PROTOCOLS[args.protocol]
    seeds = args.seeds if args.seeds is not None else list(proto.seeds or (1111, 1112, 1113, 1114, 1115))
    if proto.selection and getattr(args, "selection", None) is None:
        args.selection = proto.selection
    data, kind = load_dataset(args.data, args.dataset, strict=args.strict)
    # --config gives the whole FSRFConfig of the full model; otherwise the defaults at --d-model
    cfg = model_config(args, {}) if args.config else model_config(args, {}).replace(d_model=args.d_model)
    specs = [s for s in default_specs(args.d_model, fsrf_config=cfg, term_ablations=True,
                                      first_reconstruction=MODEL_KEYS["fsrf-first"] in names)
             if s.name in names]
    settings = train_settings(args, {"epochs": 20})
    with locked_output(args.out):
        results = compare(data, specs, args.out, seeds=seeds, dataset=kind, settings=settings, rates=rates,
                          patterns=patterns, mask_seed=args.mask_seed, split=args.split, progress=args.progress,
                          legacy_f1=args.legacy_f1)
        tables = write_protocol_tables(results, tables_dir(args.out, args.split), args.protocol)
    extra = "".join(f", {p.name}" for p in tables)
    print(f"wrote {tables_dir(args.out, args.split)}/comparison.md, results.json, results.csv, robustness.png{extra}")
    return 0


def add_parser(sub) -> None:
    """Add ``fsrf compare``."""
    p = sub.add_parser("compare", help="FSRF vs. baselines over seeds, under the same missingness masks",
                       description="Train each model with each seed (same sampler draws, batch order and "
                                   "evaluation masks per seed), evaluate at every intra rate and availability "
                                   "pattern, and write mean ± std over seeds with paired t-tests of FSRF "
                                   "against every other model (comparison.md, results.json/.csv, "
                                   "robustness.png). Reruns resume.")
    p.add_argument("--data", required=True, help="MMSA feature pickle")
    p.add_argument("--dataset", choices=["mosi", "mosei", "sims"], help="dataset (guessed from the file when omitted)")
    p.add_argument("--models", default="all", help=f"'all' or a comma list of {', '.join(MODEL_KEYS)}")
    p.add_argument("--seeds", type=int, nargs="+", default=None,
                   help="training seeds (default 1111..1115; 1111..1113 with --protocol lnln)")
    p.add_argument("--d-model", dest="d_model", type=int, default=64, help="model width (default 64; MulT uses 32)")
    add_protocol_options(p)
    p.add_argument("--selection", choices=["valid", "lnln-test@0.5"], default=None,
                   help="model selection: validation MAE (default) or LNLN's test-at-0.5 policy (the default with "
                        "--protocol lnln)")
    p.add_argument("--mask-seed", type=int, default=1111, help="seed of the evaluation masks (default 1111)")
    p.add_argument("--split", choices=SPLITS, default="test",
                   help="split to evaluate (default test). 'valid' evaluates the runs of --out on the "
                        "validation split, training only those not trained yet, and writes the tables to "
                        "<out>/valid/: choose among variants there, report on test")
    p.add_argument("--out", required=True, help="output directory (reruns resume)")
    add_training_options(p)
    p.set_defaults(func=_run)
