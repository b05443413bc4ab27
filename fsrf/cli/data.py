"""Data commands: ``fsrf make-synthetic`` and ``fsrf describe``."""

from __future__ import annotations

import argparse
import json

__all__ = ["add_parser"]


def _cmd_make_synthetic(args: argparse.Namespace) -> int:
    from fsrf.data import make_synthetic

    path = make_synthetic(args.preset, args.out, n_train=args.n_train, n_valid=args.n_valid, n_test=args.n_test,
                          seed=args.seed, aligned=args.aligned, generator=args.generator, classes=args.classes)
    print(f"wrote {path}")
    return 0


def _add_make_synthetic(sub) -> None:
    p = sub.add_parser("make-synthetic", help="write a synthetic MMSA-format feature file (no real data needed)",
                       description="Write a synthetic feature pickle with the MMSA schema and the dims/lengths "
                                   "of the chosen dataset. Three generators: 'factor' (static shared and "
                                   "modality-specific factors, linear label), 'events' (a short event marked "
                                   "in the text among distractor bursts, a nonlinear label with a text x audio "
                                   "interaction, heavy-tailed label noise) and 'content' (words with "
                                   "order-dependent negation, a brief facial expression, a tone contour, "
                                   "speaker offsets).")
    p.add_argument("--preset", required=True, choices=["mosi", "mosei", "sims"], help="dataset whose layout to copy")
    p.add_argument("--out", required=True, help="output .pkl path (written atomically)")
    p.add_argument("--n-train", type=int, default=None, help="train samples (default: preset's small size)")
    p.add_argument("--n-valid", type=int, default=None, help="valid samples")
    p.add_argument("--n-test", type=int, default=None, help="test samples")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    # Kept equal to fsrf.data.SYNTHETIC_GENERATORS (a test checks it): importing fsrf.data here
    # would load torch just to build the parser.
    p.add_argument("--generator", choices=["factor", "events", "content"], default="factor",
                   help="data-generating structure (default factor)")
    p.add_argument("--classes", type=int, default=None, metavar="C",
                   help="write C nominal class labels (classification_labels; 4: sad, neutral, happy, angry) "
                        "for a classifier, instead of MMSA's 3 sentiment classes")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--aligned", dest="aligned", action="store_true", default=None,
                   help="aligned_50-style file (default for mosi/mosei)")
    g.add_argument("--unaligned", dest="aligned", action="store_false",
                   help="unaligned file with lengths (default for sims)")
    p.set_defaults(func=_cmd_make_synthetic)


def _cmd_describe(args: argparse.Namespace) -> int:
    from fsrf.data import describe

    if args.json:
        info = describe(args.path, check_sha256=not args.no_sha256, quiet=True)
        print(json.dumps(info, indent=2, default=str))
    else:
        describe(args.path, check_sha256=not args.no_sha256)
    return 0


def _add_describe(sub) -> None:
    p = sub.add_parser("describe", help="summarise an MMSA feature file (splits, dims, lengths, labels)")
    p.add_argument("path", help="MMSA feature pickle (aligned_50.pkl, unaligned_50.pkl, unaligned_39.pkl, ...)")
    p.add_argument("--no-sha256", action="store_true", help="skip the SHA-256 check of published file names")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=_cmd_describe)


def add_parser(sub) -> None:
    """Add ``fsrf make-synthetic`` (write a synthetic MMSA-format feature pickle) and
    ``fsrf describe PATH`` (splits, sizes, dims, lengths, label ranges of a feature file)."""
    _add_make_synthetic(sub)
    _add_describe(sub)
