"""``FSRFModel``: :class:`FSRFLayer` plus a regression head and the full FSRF training objective."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsrf.config import FSRFConfig
from fsrf.nn.layer import FSRFLayer, FSRFOutput

__all__ = ["FSRFModel"]


class FSRFModel(nn.Module):
    """The full FSRF model for sentiment regression: ``ŷ = w·f + b`` on the layer's fused output.

    Args:
        modality_dims: ``{name: feature_dim}`` (M >= 2), e.g. ``{"text": 768, "audio": 74, "vision": 35}``.
        config: :class:`FSRFConfig`; defaults to the method's defaults.

    ``model(inputs, masks)`` returns predictions (B,). ``model.training_loss(inputs, masks, labels)``
    returns ``(loss, parts)`` with the §4 total over both views.
    """

    def __init__(self, modality_dims: Mapping[str, int], config: FSRFConfig | None = None) -> None:
        super().__init__()
        self.layer = FSRFLayer(modality_dims, config=config)
        self.config = self.layer.config
        self.head = nn.Linear(self.config.out_dim, 1)

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modality names, in the order of the layer's ``available`` columns."""
        return self.layer.modalities

    def forward(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> Tensor:
        """Predicted sentiment intensity, shape (B,)."""
        return self.head(self.layer(inputs, masks).fused).squeeze(-1)

    def predict(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> tuple[Tensor, FSRFOutput]:
        """Predictions (B,) and the layer output (for inspection of factors and availability)."""
        out = self.layer(inputs, masks)
        return self.head(out.fused).squeeze(-1), out

    def _task(self, pred: Tensor, labels: Tensor) -> Tensor:
        if self.config.task_loss == "l1":
            return F.l1_loss(pred.float(), labels.float())
        return F.mse_loss(pred.float(), labels.float())

    def training_loss(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None, labels: Tensor,
                      generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The §4 objective: ``L_task(A) + L_task(B) + Σ w·L_aux``.

        View A is the batch as given; view B is A further corrupted by
        :func:`fsrf.missing.corrupt` (extra frames dropped at ``config.view_rate``, whole
        modalities removed with probability ``config.view_inter_prob``), drawn from
        ``generator`` (or torch's global generator). The DHF constraints are averaged over the
        two views so their weights mean the same with and without DAS. With ``das=False`` only
        view A is used.

        Returns ``(loss, parts)``; ``parts`` holds detached 0-dim tensors ``task_a``, ``task_b``,
        ``orth``, ``dered``, ``hom``, ``rec``, ``kl``, ``dist``, ``recov`` and ``total`` (no host
        sync: call ``.item()`` on them only when logging).
        """
        from fsrf.missing import corrupt

        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels must be a torch.Tensor of shape (B,); got {type(labels).__name__}")
        cfg = self.config
        pred_a, out_a = self.predict(inputs, masks)
        if labels.shape != pred_a.shape:
            raise ValueError(f"labels must have shape {tuple(pred_a.shape)} (one per sample); got {tuple(labels.shape)}")
        labels = labels.to(pred_a.device)
        zero = pred_a.new_zeros((), dtype=torch.float32)
        parts = {"task_a": self._task(pred_a, labels)}
        views = [out_a]
        if cfg.das:
            inputs_b, masks_b = corrupt(inputs, masks, rate=cfg.view_rate, inter_prob=cfg.view_inter_prob,
                                        generator=generator)
            pred_b, out_b = self.predict(inputs_b, masks_b)
            parts["task_b"] = self._task(pred_b, labels)
            views.append(out_b)
            das = self.layer.distill(out_a, out_b)
        else:
            parts["task_b"] = zero
            das = {"kl": zero, "dist": zero, "recov": zero}
        for key in ("orth", "dered", "hom", "rec"):
            vals = [v.losses[key] for v in views if key in v.losses]
            parts[key] = torch.stack(vals).mean() if vals else zero
        parts.update(das)
        total = (parts["task_a"] + parts["task_b"]
                 + cfg.w_orth * parts["orth"] + cfg.w_dered * parts["dered"]
                 + cfg.w_hom * parts["hom"] + cfg.w_rec * parts["rec"]
                 + cfg.w_kl * parts["kl"] + cfg.w_dist * parts["dist"] + cfg.w_recov * parts["recov"])
        parts = {k: v.detach() for k, v in parts.items()}
        parts["total"] = total.detach()
        return total, parts
