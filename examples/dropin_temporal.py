"""Drop-in example: a model with its own temporal encoders gets ``fsrf.FSRFLayer`` as its fusion
block and is trained with the whole FSRF method through ``fsrf.FSRFObjective``.

The user's model: per modality a linear projection and a transformer layer over the frames, then
a fusion block, then a regression head. Two versions share the encoders and the head:

* "encoders + concat fusion" — masked mean per modality, concatenated, an MLP (trained on L1);
* "encoders + FSRFLayer" — the fusion block replaced by ``FSRFLayer``, trained with
  ``FSRFObjective(layer, head, encoder=...)``: the whole objective in one call.

``fsrf.training.compare`` trains both with the same seeds, batch order and training missingness
and scores them under the same test masks (intra-modal rates and availability patterns).

    python examples/dropin_temporal.py              # about ten minutes on 2 CPU cores
    python examples/dropin_temporal.py --tiny       # seconds (used by the tests)
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


class TemporalEncoders(nn.Module):
    """The user's encoders: per modality ``Linear`` then one transformer layer over the frames.

    Takes and returns ``{name: (B, T, ·)}`` with the masks unchanged, which is the contract
    ``FSRFObjective(encoder=...)`` asks for.
    """

    def __init__(self, dims: dict[str, int], width: int, heads: int = 4) -> None:
        super().__init__()
        self.proj = nn.ModuleDict({m: nn.Linear(d, width) for m, d in dims.items()})
        self.layer = nn.ModuleDict({m: nn.TransformerEncoderLayer(width, heads, 2 * width, dropout=0.1,
                                                                  batch_first=True) for m in dims})

    def forward(self, inputs, masks):
        out = {}
        for m, x in inputs.items():
            keep = masks[m]
            # a sample with no observed frame keeps every key (its output is ignored downstream,
            # where its mask marks the modality missing), so no attention row is empty
            pad = ~keep & keep.any(dim=1, keepdim=True)
            out[m] = self.layer[m](self.proj[m](x * keep.unsqueeze(-1)), src_key_padding_mask=pad)
        return out


class ConcatFusion(nn.Module):
    """The block FSRFLayer replaces: masked mean over time per modality, concatenate, MLP."""

    def __init__(self, names, width: int) -> None:
        super().__init__()
        self.names = list(names)
        self.mlp = nn.Sequential(nn.Linear(len(self.names) * width, width), nn.GELU(), nn.Linear(width, width))

    def forward(self, feats, masks):
        pooled = []
        for m in self.names:
            w = masks[m].unsqueeze(-1).to(feats[m].dtype)
            pooled.append((feats[m] * w).sum(1) / w.sum(1).clamp_min(1.0))
        return self.mlp(torch.cat(pooled, dim=-1))


class WithoutLayer(nn.Module):
    """The user's model as it was: encoders, concat fusion, head; ``forward`` gives (B,) predictions."""

    def __init__(self, dims: dict[str, int], width: int) -> None:
        super().__init__()
        self.encoder = TemporalEncoders(dims, width)
        self.fusion = ConcatFusion(dims, width)
        self.head = nn.Linear(width, 1)

    def forward(self, inputs, masks):
        return self.head(self.fusion(self.encoder(inputs, masks), masks)).squeeze(-1)


def with_layer(dims: dict[str, int], width: int) -> fsrf.FSRFObjective:
    """The same encoders and head around ``FSRFLayer``, trained with the whole FSRF objective."""
    layer = fsrf.FSRFLayer({m: width for m in dims}, config=fsrf.FSRFConfig(d_model=width, num_heads=4))
    return fsrf.FSRFObjective(layer, head=nn.Linear(layer.config.out_dim, 1), encoder=TemporalEncoders(dims, width))


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny data, one epoch, one seed (seconds)")
    p.add_argument("--out", default=None, help="run folder (default: a temporary one)")
    args = p.parse_args(argv)
    if args.tiny:
        sizes, width, epochs, seeds = (64, 32, 32), 16, 1, [0]
        shape = dict(dims={"text": 32, "audio": 16, "vision": 12}, seq_lens={"text": 8, "audio": 8, "vision": 8})
        rates, patterns = (0.0, 0.5), ("l", "av", "lav")
    else:
        sizes, width, epochs, seeds = (1200, 200, 300), 32, 8, [0, 1, 2]
        shape, rates, patterns = {}, (0.0, 0.3, 0.5, 0.7, 0.9), ("l", "a", "v", "la", "lv", "av", "lav")
    with tempfile.TemporaryDirectory() as tmp:
        path = make_synthetic("mosei", Path(tmp) / "data.pkl", n_train=sizes[0], n_valid=sizes[1],
                              n_test=sizes[2], seed=0, generator="events", **shape)
        data = load_mmsa(path)
        specs = [ModelSpec("encoders + FSRFLayer", build=lambda dims: with_layer(dims, width)),
                 ModelSpec("encoders + concat fusion", build=lambda dims: WithoutLayer(dims, width))]
        settings = TrainSettings(epochs=epochs, batch_size=32, progress=False)
        return compare(data, specs, args.out or Path(tmp) / "runs", seeds=seeds, dataset="mosei",
                       settings=settings, rates=rates, patterns=patterns, progress=False)


if __name__ == "__main__":
    main()
