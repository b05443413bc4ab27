"""Drop-in example: swap the fusion block of a plain late-fusion regressor for ``fsrf.FSRFLayer``.

Both models share everything but the fusion block; both are trained on the same synthetic
MOSEI-like data with the same missingness during training, and scored under missing modalities.

    python examples/dropin_late_fusion.py              # a few minutes on 2 CPU cores
    python examples/dropin_late_fusion.py --tiny       # seconds (used by the tests)
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

import fsrf
from fsrf.data import load_mmsa, make_synthetic
from fsrf.missing import corrupt, corrupt_split


class ConcatFusion(nn.Module):
    """The block being replaced: masked mean over time per modality, concatenate, MLP."""

    def __init__(self, dims: dict[str, int], d: int) -> None:
        super().__init__()
        self.names = list(dims)
        self.proj = nn.ModuleDict({m: nn.Linear(D, d) for m, D in dims.items()})
        self.mlp = nn.Sequential(nn.Linear(len(dims) * d, d), nn.GELU(), nn.Linear(d, d))

    def forward(self, inputs, masks):
        pooled = []
        for m in self.names:
            w = masks[m].unsqueeze(-1).float()
            pooled.append(self.proj[m]((inputs[m] * w).sum(1) / w.sum(1).clamp_min(1.0)))
        return self.mlp(torch.cat(pooled, dim=-1))


class Regressor(nn.Module):
    """A user's model: some fusion block, then a regression head."""

    def __init__(self, fusion: nn.Module, d: int) -> None:
        super().__init__()
        self.fusion = fusion
        self.head = nn.Linear(d, 1)

    def forward(self, inputs, masks):
        f = self.fusion(inputs, masks)
        if isinstance(f, fsrf.FSRFOutput):  # FSRFLayer returns an output object
            return self.head(f.fused).squeeze(-1), f
        return self.head(f).squeeze(-1), None


def train(model: Regressor, split, epochs: int, batch: int, seed: int) -> None:
    """L1 training; for the FSRF model add its auxiliary losses and the DAS terms of a second view."""
    from fsrf.missing import LNLNSampler

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    sampler = LNLNSampler(split, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(epochs):
        sp = sampler.epoch(epoch)  # the same training missingness for both models
        order = torch.randperm(len(sp), generator=gen).numpy()
        for start in range(0, len(order) - 1, batch):
            b = sp.batch(order[start:start + batch])
            pred, out = model(b["inputs"], b["masks"])
            loss = nn.functional.l1_loss(pred, b["labels"])
            if out is not None:
                layer = model.fusion
                loss = loss + out.aux_loss  # DHF constraints
                inputs_b, masks_b = corrupt(b["inputs"], b["masks"], generator=gen)  # DAS second view
                pred_b, out_b = model(inputs_b, masks_b)
                das = layer.distill(out, out_b)
                cfg = layer.config
                loss = (loss + nn.functional.l1_loss(pred_b, b["labels"]) + out_b.aux_loss
                        + cfg.w_kl * das["kl"] + cfg.w_dist * das["dist"] + cfg.w_recov * das["recov"])
            opt.zero_grad()
            loss.backward()
            opt.step()


@torch.no_grad()
def mae(model: Regressor, split) -> float:
    """Mean absolute error on a split."""
    model.eval()
    b = split.batch(np.arange(len(split)))
    pred, _ = model(b["inputs"], b["masks"])
    return float((pred - b["labels"]).abs().mean())


def main(argv=None) -> dict[str, dict[str, float]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="tiny data, one epoch (seconds)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    n, epochs, d = ((64, 32, 32), 1, 16) if args.tiny else ((1200, 200, 300), 8, 64)
    epochs = args.epochs or epochs
    dims = {"text": 32, "audio": 16, "vision": 12} if args.tiny else None
    with tempfile.TemporaryDirectory() as tmp:
        path = make_synthetic("mosei", Path(tmp) / "data.pkl", n_train=n[0], n_valid=n[1], n_test=n[2],
                              seed=args.seed, dims=dims, seq_lens={"text": 8, "audio": 8, "vision": 8} if args.tiny else None)
        data = load_mmsa(path)
    dims = dict(data.dims)
    models = {
        "late fusion": Regressor(ConcatFusion(dims, d), d),
        "late fusion + FSRFLayer": Regressor(fsrf.FSRFLayer(dims, d_model=d, num_heads=4), d),
    }
    test = data.split("test")
    conditions = {"complete": test, "intra r=0.5": corrupt_split(test, rate=0.5)}
    for pattern in ("l", "a", "v", "av"):
        conditions[f"only {pattern.upper()}"] = corrupt_split(test, pattern=pattern)
    scores: dict[str, dict[str, float]] = {}
    for name, model in models.items():
        train(model, data.split("train"), epochs, 32, args.seed)
        scores[name] = {c: mae(model, sp) for c, sp in conditions.items()}
    width = max(len(c) for c in conditions)
    print(f"{'test MAE (lower is better)':<{width + 2}}" + "".join(f"{m:>26}" for m in models))
    for c in conditions:
        print(f"{c:<{width + 2}}" + "".join(f"{scores[m][c]:>26.4f}" for m in models))
    return scores


if __name__ == "__main__":
    main()
