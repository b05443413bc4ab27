"""``fsrf export``: turn a training checkpoint into a model folder (``config.json`` +
``model.safetensors``) that :func:`fsrf.models.from_pretrained` loads without running code."""

from __future__ import annotations

import argparse
import math

__all__ = ["add_parser"]

# what a reader of the folder may want to know about its training; loading ignores it
_TRAINING_KEYS = ("model_name", "dataset", "seed", "selection", "best_score")


def _plain(value) -> bool:
    # JSON has no NaN or infinity (a run that never improved has best_score inf)
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, (str, int, bool))


def _run(args: argparse.Namespace) -> int:
    from fsrf.models.pretrained import CONFIG_NAME, WEIGHTS_NAME, save_pretrained
    from fsrf.training import load_model, resolve_checkpoints

    found = resolve_checkpoints(args.checkpoint)
    if len(found) > 1:
        seeds = ", ".join(str(s) for s in found)
        raise ValueError(f"--checkpoint {args.checkpoint} holds runs of {len(found)} seeds ({seeds}); export one "
                         f"of them, e.g. --checkpoint {found[next(iter(found))]}")
    path = next(iter(found.values()))
    model, meta = load_model(path)
    info = {k: meta[k] for k in _TRAINING_KEYS if _plain(meta.get(k))}
    info["checkpoint"] = str(path)
    out = save_pretrained(model, args.out, metadata=info)
    print(f"wrote {out / WEIGHTS_NAME} and {out / CONFIG_NAME} ({meta.get('model_kind', 'fsrf')} model from {path})")
    return 0


def add_parser(sub) -> None:
    """Add ``fsrf export``."""
    p = sub.add_parser("export", help="turn a training checkpoint into a shareable model folder",
                       description="Write config.json and model.safetensors to --out, the Hugging Face layout: "
                                   "FSRFModel / LateFusion / MulT.from_pretrained(DIR) or "
                                   "fsrf.models.from_pretrained(DIR) loads it, and loading runs no code.")
    p.add_argument("--checkpoint", required=True, help="best.pt / last.pt, or a run directory holding best.pt")
    p.add_argument("--out", required=True, help="output folder (created if needed; each file written atomically)")
    p.set_defaults(func=_run)
