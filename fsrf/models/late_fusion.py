"""``LateFusion``: the plain late-fusion baseline — masked mean pooling per modality, a linear map
of each pooled vector, and one hidden layer over their concatenation (with availability flags).

With ``modality_dropout > 0`` its training loss first removes whole modalities of random samples
(:func:`fsrf.missing.corrupt` with no extra frame dropping), the classic robust-training baseline
for missing modalities. Frame-level missingness comes from the training sampler, as for FSRF.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsrf.models._inputs import gather, masked_mean
from fsrf.models.pretrained import PretrainedMixin

__all__ = ["LateFusion"]


def _check_unit(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number in [0, 1]; got {type(value).__name__}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be in [0, 1]; got {value}")
    return float(value)


class LateFusion(PretrainedMixin, nn.Module):
    """Late-fusion regressor robust to missing modalities only through its training data.

    Args:
        modality_dims: ``{name: feature_dim}`` (M >= 1).
        d_model: width of each modality's pooled projection.
        hidden: width of the hidden layer (default ``2 * d_model``).
        dropout: dropout before the output layer.
        modality_dropout: per-sample probability, in training, of removing one to M-1 whole
            modalities (0 disables it).

    ``forward(inputs, masks)`` returns predictions (B,); ``training_loss(inputs, masks, labels,
    generator=None)`` returns ``(loss, parts)`` like :meth:`fsrf.FSRFModel.training_loss`.
    """

    def __init__(self, modality_dims: Mapping[str, int], d_model: int = 64, hidden: int | None = None,
                 dropout: float = 0.1, modality_dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(modality_dims, Mapping) or not modality_dims:
            raise ValueError(f"modality_dims must be a non-empty mapping {{name: feature_dim}}; got {modality_dims!r}")
        for name, v in (("d_model", d_model), ("hidden", hidden if hidden is not None else 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int; got {v!r}")
        self.modality_dims = {str(m): int(d) for m, d in modality_dims.items()}
        self.modalities = tuple(self.modality_dims)
        self.modality_dropout = _check_unit(modality_dropout, "modality_dropout")
        hidden = hidden or 2 * d_model
        M = len(self.modalities)
        self.proj = nn.ModuleDict({m: nn.Linear(D, d_model) for m, D in self.modality_dims.items()})
        self.head = nn.Sequential(nn.Linear(M * d_model + M, hidden), nn.GELU(),
                                  nn.Dropout(_check_unit(dropout, "dropout")), nn.Linear(hidden, 1))

    def forward(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> Tensor:
        """Predicted sentiment intensity, shape (B,)."""
        _, xs, ks = gather(self.modality_dims, inputs, masks)
        feats, avail = [], []
        ref = next(x for x in xs.values() if x is not None)
        for m in self.modalities:
            if xs[m] is None:
                pooled = ref.new_zeros(ref.shape[0], self.modality_dims[m])
            else:
                pooled = masked_mean(xs[m], ks[m])
            a = ks[m].any(dim=1, keepdim=True).to(ref.dtype)
            # a missing modality contributes nothing but its flag (no bias of its projection)
            feats.append(self.proj[m](pooled) * a)
            avail.append(a)
        return self.head(torch.cat(feats + avail, dim=-1)).squeeze(-1)

    def training_loss(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None, labels: Tensor,
                      generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """L1 loss on the batch, after modality dropout when it is enabled."""
        if self.modality_dropout > 0 and len(inputs) > 1:
            from fsrf.missing import corrupt

            inputs, masks = corrupt(inputs, masks, rate=0.0, inter_prob=self.modality_dropout, generator=generator)
        loss = F.l1_loss(self(inputs, masks).float(), labels.float())
        return loss, {"task_a": loss.detach(), "total": loss.detach()}
