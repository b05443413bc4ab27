"""``fsrf predict``: predictions of a trained model on a feature file (labels not needed)."""

from __future__ import annotations

import argparse

from fsrf.cli._options import add_progress_options

__all__ = ["add_parser"]


def _run(args: argparse.Namespace) -> int:
    from fsrf.training.prediction import predict_file, write_predictions

    splits = [s.strip() for s in args.split.split(",") if s.strip()] if args.split else None
    result = predict_file(args.model, args.data, splits=splits, batch_size=args.batch_size, device=args.device,
                          progress=args.progress)
    paths = write_predictions(result, args.out)
    meta = result["meta"]
    print(f"predicted {meta['samples']} samples of {', '.join(meta['splits'])} ({meta['task']}); wrote "
          f"{paths['csv']} and {paths['json']}")
    return 0


def add_parser(sub) -> None:
    """Add ``fsrf predict``."""
    p = sub.add_parser("predict", help="predict on a feature file (e.g. MMSA-FET features of your own videos)",
                       description="One row per sample (split, index, id, the modalities available, the prediction; "
                                   "the label when the file has one) in predictions.csv and predictions.json. The "
                                   "file may have any of the splits, no labels, a modality missing (key absent) or "
                                   "missing for some samples (length 0 or all-zero frames).")
    p.add_argument("--model", required=True, help="a run folder (best.pt), a checkpoint file, a folder written by "
                                                  "fsrf export, or a Hugging Face Hub repo id (user/repo) of one")
    p.add_argument("--data", required=True, help="MMSA-format feature pickle")
    p.add_argument("--split", default=None, help="comma list of splits to predict (default: every split in the file)")
    p.add_argument("--out", required=True, help="output folder for predictions.csv and predictions.json")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--device", default="cpu")
    add_progress_options(p)
    p.set_defaults(func=_run)
