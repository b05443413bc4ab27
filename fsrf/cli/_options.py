"""Pieces shared by the command modules: the parser class and the training options."""

from __future__ import annotations

import argparse

__all__ = ["Parser", "ABLATIONS", "parse_ablate", "add_training_options", "add_data_options", "train_settings",
           "model_config", "locked_output"]

ABLATIONS = ("dhf", "das", "recovery")


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``fsrf <command>: error: ...``, exit status 2)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_ablate(spec: str | None) -> dict[str, bool]:
    """``"dhf,das"`` → ``{"dhf": False, "das": False}`` (the FSRFConfig switches to turn off)."""
    if not spec:
        return {}
    items = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [s for s in items if s not in ABLATIONS]
    if bad:
        raise ValueError(f"--ablate takes a comma list of {', '.join(ABLATIONS)}; got {bad[0]!r}")
    return {s: False for s in items}


def add_training_options(p: argparse.ArgumentParser) -> None:
    """The options that override :class:`fsrf.training.TrainSettings` fields."""
    p.add_argument("--config", help="JSON file with FSRFConfig fields (default: the method's defaults)")
    p.add_argument("--epochs", type=int, help="override the number of epochs")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="override the batch size")
    p.add_argument("--lr", type=float, help="override the learning rate")
    p.add_argument("--device", help="cpu, cuda or cuda:N")
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs")
    add_progress_options(p)
    p.add_argument("--tensorboard", action="store_true",
                   help="also log every epoch to TensorBoard in <run>/tensorboard (pip install tensorboard)")
    p.add_argument("--compile", action="store_true",
                   help="run the training step through torch.compile (the compilation time is printed once)")
    p.add_argument("--no-ema", dest="ema", action="store_false", default=None,
                   help="select and save the weights after each epoch's last step instead of their moving "
                        "average over about one epoch (the default since docs/research-log/10-weight-average.md)")


def add_progress_options(p: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress``; neither: bars only when stderr is a terminal, so a log
    file gets the one-line-per-epoch summaries and no bar redraws."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--progress", dest="progress", action="store_const", const=True, default=None,
                   help="progress bars even when the output is not a terminal")
    g.add_argument("--no-progress", dest="progress", action="store_const", const=False,
                   help="no progress bars (default: bars only on a terminal)")


def add_data_options(p: argparse.ArgumentParser) -> None:
    """The options of every command that loads an MMSA feature file (``--strict``)."""
    p.add_argument("--strict", action="store_true",
                   help="refuse a file whose stored lengths exceed the padded length of its arrays "
                        "(default: clip them, with a warning giving the counts)")


def locked_output(folder):
    """Create ``folder`` and lock it for this command (see :func:`fsrf.training.lock.lock_folder`);
    a context manager. Under ``torchrun`` only rank 0 locks, as only rank 0 writes."""
    import contextlib
    import os

    from fsrf.runtime.io import ensure_dir
    from fsrf.training.lock import lock_folder

    if os.environ.get("RANK", "0") != "0":
        return contextlib.nullcontext()
    return lock_folder(ensure_dir(folder))


def model_config(args: argparse.Namespace, ablate: dict[str, bool]):
    """The FSRFConfig of ``--config`` (or the defaults) with the ablations applied."""
    from fsrf.config import FSRFConfig

    cfg = FSRFConfig.from_json(args.config) if args.config else FSRFConfig()
    return cfg.replace(**ablate) if ablate else cfg


def train_settings(args: argparse.Namespace, base: dict | None = None):
    """:class:`fsrf.training.TrainSettings` from ``base`` and the options given on the command line."""
    from fsrf.training.trainer import TrainSettings

    kw = dict(base or {})
    for name in ("epochs", "batch_size", "lr", "device", "patience", "selection"):
        v = getattr(args, name, None)
        if v is not None:
            kw[name] = v
    if getattr(args, "progress", None) is not None:
        kw["progress"] = args.progress
    if getattr(args, "compile", False):
        kw["compile"] = True
    if getattr(args, "tensorboard", False):
        kw["tensorboard"] = True
    if getattr(args, "ema", None) is False:
        kw["ema"] = False
    return TrainSettings(**kw)


def add_protocol_options(p: argparse.ArgumentParser) -> None:
    """``--protocol``, ``--rates``, ``--patterns`` and ``--legacy-f1`` of the evaluating commands."""
    p.add_argument("--protocol", choices=["fsrf", "lnln", "corrkd"], default="fsrf",
                   help="conditions and tables of a published protocol: fsrf (default: rates 0.0-0.9, the 7 "
                        "patterns), lnln (rates 0.0-0.9, table_lnln.md/.tex: every metric per rate and their mean), "
                        "corrkd (rates 0.0-1.0 and the six patterns, table_corrkd.md/.tex); AUILC for every one")
    p.add_argument("--rates", default=None, help="intra rates, start:stop:step or a comma list (default: the "
                                                 "protocol's, 0:0.9:0.1 for fsrf)")
    p.add_argument("--patterns", default=None, help="'all', 'none' or a comma list of l,a,v,la,lv,av,lav (default: "
                                                    "the protocol's)")
    p.add_argument("--legacy-f1", action="store_true",
                   help="also report the F1 with swapped arguments (f1_score(pred, true), as older MMSA, the first "
                        "LNLN release and MulT computed it) under *_legacy keys, beside the correct one")


def protocol_conditions(args: argparse.Namespace, parse_rates, parse_patterns) -> tuple[tuple, tuple]:
    """The rates and patterns of ``--protocol``; ``--rates`` / ``--patterns`` override them for
    ``fsrf`` and are refused for a paper protocol, whose table needs its own conditions."""
    from fsrf.training.protocols import PROTOCOLS

    proto = PROTOCOLS[args.protocol]
    if args.protocol != "fsrf" and (args.rates is not None or args.patterns is not None):
        raise ValueError(f"--protocol {args.protocol} fixes the rates ({proto.rates[0]}-{proto.rates[-1]}) and "
                         f"patterns ({','.join(proto.patterns) or 'none'}); drop --rates/--patterns")
    rates = parse_rates(args.rates) if args.rates is not None else proto.rates
    patterns = parse_patterns(args.patterns) if args.patterns is not None else proto.patterns
    return rates, patterns
