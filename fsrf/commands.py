"""Model subcommands of the ``fsrf`` command line: ``train``, ``evaluate`` and ``demo``.

Importing this module (``fsrf.cli`` does) registers them, and the data subcommands of
:mod:`fsrf.commands_data`, in :data:`fsrf.cli.COMMANDS`.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from fsrf import cli
from fsrf import commands_data  # noqa: F401  (registers make-synthetic and describe)

__all__ = ["add_train", "add_evaluate", "add_demo", "ABLATIONS"]

ABLATIONS = ("dhf", "das", "recovery")


def _parse_ablate(spec: str | None) -> dict[str, bool]:
    if not spec:
        return {}
    items = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [s for s in items if s not in ABLATIONS]
    if bad:
        raise ValueError(f"--ablate takes a comma list of {', '.join(ABLATIONS)}; got {bad[0]!r}")
    return {s: False for s in items}


def _load_data(path: str, dataset: str | None):
    from fsrf.data import load_mmsa

    data = load_mmsa(path)
    kind = dataset or data.dataset_kind
    if kind is None:
        raise ValueError(f"cannot tell which dataset {path} is; pass --dataset mosi|mosei|sims")
    return data, kind


def _model_config(args, ablate: dict[str, bool]):
    from fsrf.config import FSRFConfig

    cfg = FSRFConfig.from_json(args.config) if args.config else FSRFConfig()
    return cfg.replace(**ablate) if ablate else cfg


def _settings(args, base=None):
    from fsrf.train import TrainSettings

    kw = dict(base or {})
    for name in ("epochs", "batch_size", "lr", "device", "patience", "selection"):
        v = getattr(args, name, None)
        if v is not None:
            kw[name] = v
    if getattr(args, "no_progress", False):
        kw["progress"] = False
    return TrainSettings(**kw)


# -- train ----------------------------------------------------------------------------------------
def _cmd_train(args: argparse.Namespace) -> int:
    from fsrf.train import fit

    data, kind = _load_data(args.data, args.dataset)
    cfg = _model_config(args, _parse_ablate(args.ablate))
    settings = _settings(args)
    seeds = args.seeds or [1111]
    out = Path(args.out)
    say = print if os.environ.get("RANK", "0") == "0" else (lambda *a, **k: None)  # rank 0 logs under torchrun
    for seed in seeds:
        target = out if len(seeds) == 1 else out / f"seed_{seed}"
        say(f"training FSRF on {args.data} ({kind}), seed {seed} -> {target}")
        res = fit(data, target, config=cfg, settings=settings, seed=seed, dataset=kind, resume=args.resume)
        say(f"seed {seed}: best epoch {res['best_epoch'] + 1}, selection MAE {res['best_score']:.4f} "
              f"({settings.selection}); model at {res['checkpoint']}")
    return 0


def _add_common_train(p) -> None:
    p.add_argument("--config", help="JSON file with FSRFConfig fields (default: the method's defaults)")
    p.add_argument("--epochs", type=int, help="override the number of epochs")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="override the batch size")
    p.add_argument("--lr", type=float, help="override the learning rate")
    p.add_argument("--device", help="cpu, cuda or cuda:N")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_train(sub) -> None:
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
    p.add_argument("--resume", action="store_true", help="continue from DIR/last.pt")
    p.add_argument("--out", required=True, help="output directory")
    _add_common_train(p)
    p.set_defaults(func=_cmd_train)


# -- evaluate -------------------------------------------------------------------------------------
def evaluate_checkpoints(checkpoint: str, data_path: str, *, rates, patterns, seed: int = 1111,
                         device: str = "cpu", dataset: str | None = None, split: str = "test",
                         progress: bool = True) -> dict:
    """Evaluate one checkpoint file or a (multi-seed) run directory; returns the model's results
    entry ``{"per_seed": ..., "mean": ..., "std": ..., "meta": ...}``."""
    from fsrf.checkpoint import resolve_checkpoints
    from fsrf.evaluate import aggregate_seeds, robust_eval
    from fsrf.train import load_model

    ckpts = resolve_checkpoints(checkpoint)
    data = None
    per_seed, metas = {}, {}
    for key, path in ckpts.items():
        model, meta = load_model(path, device=device)
        kind = dataset or meta.get("dataset")
        if data is None:
            data, guessed = _load_data(data_path, kind)
            kind = kind or guessed
        if kind is None:
            raise ValueError("cannot tell the dataset; pass --dataset")
        seed_key = str(meta.get("seed") if key is None else key)
        per_seed[seed_key] = robust_eval(model, data.split(split), kind, rates=rates, patterns=patterns, seed=seed,
                                         device=device, progress=progress)
        metas[seed_key] = {"checkpoint": str(path), "selection": meta.get("selection"), "dataset": kind,
                           "model_config": meta.get("model_config")}
    agg = aggregate_seeds(per_seed)
    return {"per_seed": per_seed, "mean": agg["mean"], "std": agg["std"], "meta": metas}


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from fsrf.evaluate import format_table, parse_patterns, parse_rates, write_results

    rates = parse_rates(args.rates)
    patterns = parse_patterns(args.patterns)
    entry = evaluate_checkpoints(args.checkpoint, args.data, rates=rates, patterns=patterns, seed=args.mask_seed,
                                 device=args.device, dataset=args.dataset, split=args.split,
                                 progress=not args.no_progress)
    kinds = {m["dataset"] for m in entry["meta"].values()}
    results = {"models": {args.name: entry},
               "meta": {"dataset": kinds.pop() if len(kinds) == 1 else sorted(kinds), "split": args.split,
                        "protocol": {"intra": "independent per-modality frame dropping (fsrf.missing.drop_frames)",
                                     "inter": "whole-modality removal (fsrf.missing.remove_modalities)"},
                        "rates": list(rates), "patterns": list(patterns), "mask_seed": args.mask_seed,
                        "seeds": list(entry["per_seed"]), "checkpoint": args.checkpoint, "data": args.data}}
    print(format_table(results))
    if args.out:
        paths = write_results(results, args.out)
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def add_evaluate(sub) -> None:
    """Add ``fsrf evaluate``."""
    p = sub.add_parser("evaluate", help="robustness evaluation of a trained model",
                       description="MMSA metrics of a checkpoint under intra-modal frame dropping and inter-modal "
                                   "patterns; results.json, results.csv and robustness.png in --out.")
    p.add_argument("--checkpoint", required=True, help="best.pt, a run directory, or a directory of seed_<seed>/")
    p.add_argument("--data", required=True, help="MMSA feature pickle")
    p.add_argument("--dataset", choices=["mosi", "mosei", "sims"], help="override the dataset recorded in the checkpoint")
    p.add_argument("--rates", default="0:0.9:0.1", help="intra rates, start:stop:step or a comma list (default 0:0.9:0.1)")
    p.add_argument("--patterns", default="all", help="'all', 'none' or a comma list of l,a,v,la,lv,av,lav")
    p.add_argument("--mask-seed", type=int, default=1111, help="seed of the evaluation masks (default 1111)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--name", default="FSRF", help="model name in tables and plots")
    p.add_argument("--out", help="output directory for results.json / results.csv / robustness.png")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_evaluate)


# -- demo -----------------------------------------------------------------------------------------
DEMO_FULL = {"n": (1500, 300, 300), "epochs": 25, "d_model": 64, "patience": 6}
DEMO_QUICK = {"n": (500, 150, 200), "epochs": 16, "d_model": 64, "patience": 6}


def run_demo(out_dir: str | os.PathLike, *, quick: bool = False, seed: int = 1111, device: str = "cpu",
             progress: bool = True) -> dict:
    """The main job: synthetic MOSEI-like data → FSRF and the ablated baseline (dhf and das off) →
    robustness table, ``results.json``, ``results.csv`` and ``robustness.png`` in ``out_dir``."""
    from fsrf.config import FSRFConfig
    from fsrf.data import load_mmsa, make_synthetic
    from fsrf.evaluate import DEFAULT_RATES, format_table, write_results
    from fsrf.missing import ALL_PATTERNS
    from fsrf.train import TrainSettings, fit, load_model
    from fsrf.evaluate import aggregate_seeds, robust_eval

    spec = DEMO_QUICK if quick else DEMO_FULL
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


def _cmd_demo(args: argparse.Namespace) -> int:
    run_demo(args.out, quick=args.quick, seed=args.seed, device=args.device, progress=not args.no_progress)
    return 0


def add_demo(sub) -> None:
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
    p.set_defaults(func=_cmd_demo)


for _add in (add_train, add_evaluate, add_demo):
    if _add not in cli.COMMANDS:
        cli.COMMANDS.append(_add)
