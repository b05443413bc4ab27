"""Classification example: a 4-class emotion classifier (sad, neutral, happy, angry) trained with
the whole FSRF method, against the same classifier without ``FSRFLayer``.

The data has CH-SIMS's layout (unaligned text, audio and vision of different lengths). The
classes are synthetic (``make_synthetic("sims", ..., classes=4)``): sectors of the plane spanned by
the sentiment and what the audio says beyond the vision, so no single modality decides a class.
Each modality is encoded by a GRU over its frames (the user's encoder); the head maps the fused
representation to 4 logits. ``FSRFObjective(..., task="classification")`` trains with
cross-entropy, and its prediction distillation is the KL from the richer view's class
distribution to the sparser view's. The scores are accuracy and weighted F1, plus per emotion the
one-against-the-rest accuracy and F1 (``fsrf.metrics.classification``).

    python examples/emotion_classifier.py           # several minutes on 2 CPU cores
    python examples/emotion_classifier.py --tiny    # seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from torch import nn

import fsrf
from fsrf.data import load_mmsa, make_synthetic
from fsrf.models import ModelSpec
from fsrf.training import TrainSettings, compare

CLASSES = 4


class GRUEncoders(nn.Module):
    """Per modality a GRU over the observed frames (masked frames enter as zeros)."""

    def __init__(self, dims: dict[str, int], width: int) -> None:
        super().__init__()
        self.gru = nn.ModuleDict({m: nn.GRU(d, width, batch_first=True) for m, d in dims.items()})

    def forward(self, inputs, masks):
        return {m: self.gru[m](x * masks[m].unsqueeze(-1).to(x.dtype))[0] for m, x in inputs.items()}


class PooledClassifier(nn.Module):
    """The classifier without the layer: GRU encoders, masked mean per modality, concatenation, an
    MLP to the logits. ``task`` tells the trainer to use cross-entropy and class labels."""

    task = "classification"

    def __init__(self, dims: dict[str, int], width: int) -> None:
        super().__init__()
        self.encoder = GRUEncoders(dims, width)
        self.head = nn.Sequential(nn.Linear(len(dims) * width, width), nn.GELU(), nn.Linear(width, CLASSES))

    def forward(self, inputs, masks):
        feats = self.encoder(inputs, masks)
        pooled = []
        for m, h in feats.items():
            w = masks[m].unsqueeze(-1).to(h.dtype)
            pooled.append((h * w).sum(1) / w.sum(1).clamp_min(1.0))
        return self.head(torch.cat(pooled, dim=-1))


def with_layer(dims: dict[str, int], width: int) -> fsrf.FSRFObjective:
    """The same encoders around ``FSRFLayer``, a 4-logit head, the whole objective."""
    layer = fsrf.FSRFLayer({m: width for m in dims}, config=fsrf.FSRFConfig(d_model=width, num_heads=4))
    head = nn.Sequential(nn.Linear(layer.config.out_dim, width), nn.GELU(), nn.Linear(width, CLASSES))
    return fsrf.FSRFObjective(layer, head, encoder=GRUEncoders(dims, width), task="classification")


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny data, one epoch, one seed (seconds)")
    p.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    args = p.parse_args(argv)
    # the CH-SIMS layout: unaligned text 39, audio 400 and vision 55 frames (shortened when tiny)
    tiny = args.tiny
    small = dict(dims={"text": 24, "audio": 8, "vision": 10}, seq_lens={"text": 8, "audio": 12, "vision": 6})
    with tempfile.TemporaryDirectory() as tmp:
        path = make_synthetic("sims", Path(tmp) / "emotions.pkl", n_train=64 if tiny else 1000,
                              n_valid=32 if tiny else 250, n_test=32 if tiny else 250, seed=0, classes=CLASSES,
                              **(small if tiny else {}))
        data = load_mmsa(path)
        width = 16 if tiny else 32
        specs = [ModelSpec("GRU + FSRFLayer", build=lambda dims: with_layer(dims, width)),
                 ModelSpec("GRU + mean pooling", build=lambda dims: PooledClassifier(dims, width))]
        return compare(data, specs, args.out or Path(tmp) / "runs", seeds=[0] if tiny else [0, 1, 2], dataset="sims",
                       settings=TrainSettings(epochs=1 if tiny else 8, batch_size=32, progress=False),
                       rates=(0.0, 0.5) if tiny else (0.0, 0.3, 0.5, 0.7, 0.9),
                       patterns=("l", "av", "lav") if tiny else "l,a,v,la,lv,av,lav".split(","), progress=False)


if __name__ == "__main__":
    main()
