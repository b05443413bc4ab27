"""``FSRFModel``: :class:`FSRFLayer` plus a regression head and the full FSRF training objective."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsrf.config import FSRFConfig
from fsrf.models.label_grid import LabelDequantizer
from fsrf.models.pretrained import PretrainedMixin
from fsrf.nn.layer import FSRFLayer, FSRFOutput

__all__ = ["FSRFModel"]


class FSRFModel(PretrainedMixin, nn.Module):
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
        # training steps taken, for the warm-up of the auxiliary weights; saved so that a resumed
        # run continues the ramp where it stopped
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        # only with the switch on, so that the state dict of every other config is unchanged
        self.dequantize = LabelDequantizer() if self.config.dequantize_labels else None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # checkpoints written before the warm-up have no step counter: they start a fresh ramp
        key = prefix + "steps"
        if key not in state_dict:
            state_dict[key] = torch.zeros((), dtype=torch.long)
        # a checkpoint trained without dequantize_labels: the grid step is estimated afresh
        key = prefix + "dequantize.step"
        if self.dequantize is not None and key not in state_dict:
            state_dict[key] = torch.full((), float("inf"))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def aux_scale(self) -> Tensor:
        """The factor on every auxiliary weight at the current step: ``min(1, (steps + 1) /
        aux_warmup_steps)``, or 1 without warm-up (a 0-dim fp32 tensor, no host sync)."""
        return self._ramp(self.steps + 1)

    def _ramp(self, step: Tensor) -> Tensor:
        warm = self.config.aux_warmup_steps
        if warm <= 0:
            return torch.ones((), dtype=torch.float32, device=step.device)
        return (step.float() / warm).clamp(max=1.0)

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

        View A is the batch as given, with whole modalities removed from a sample with
        probability ``config.modality_dropout`` (in training mode); view B is A further corrupted by
        :func:`fsrf.missing.corrupt` (extra frames dropped at ``config.view_rate``, whole
        modalities removed with probability ``config.view_inter_prob``), drawn from
        ``generator`` (or torch's global generator). The DHF constraints are averaged over the
        two views so their weights mean the same with and without DAS. With ``das=False`` only
        view A is used. Every auxiliary weight is multiplied by :meth:`aux_scale`, which ramps
        from 0 to 1 over ``config.aux_warmup_steps`` training steps; each call in training mode
        counts one step. With ``config.dequantize_labels`` the task loss of both views sees the
        labels plus one draw of :class:`fsrf.models.label_grid.LabelDequantizer` noise (training
        mode only).

        Returns ``(loss, parts)``; ``parts`` holds detached 0-dim tensors ``task_a``, ``task_b``,
        ``orth``, ``dered``, ``hom``, ``rec``, ``loo`` (leave-one-out recovery, 0 unless
        ``recovery_loss="view+loo"``), ``kl``, ``dist``, ``recov``, ``pred`` (view B's prediction
        against view A's detached one, in the task loss's form; logged whatever ``w_pred``, 0
        without DAS), ``aux_scale`` and ``total`` (no host sync: call ``.item()`` on them only when
        logging).

        ``torch.compile(model.training_loss, fullgraph=True)`` captures the whole step in one
        graph (masks and every missing pattern included) with no host sync in it. Pass
        ``generator=None`` there: a ``torch.Generator`` cannot enter a compiled graph, and view B
        is then drawn from torch's default generator of the device. The NaN/Inf input checks are
        skipped inside the graph; check a batch before the step if needed (the trainer does,
        see :class:`fsrf.training.TrainSettings`).
        """
        from fsrf.missing import corrupt

        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels must be a torch.Tensor of shape (B,); got {type(labels).__name__}")
        cfg = self.config
        if cfg.modality_dropout > 0 and self.training:
            inputs, masks = corrupt(inputs, masks, rate=0.0, inter_prob=cfg.modality_dropout, generator=generator)
        pred_a, out_a = self.predict(inputs, masks)
        if labels.shape != pred_a.shape:
            raise ValueError(f"labels must have shape {tuple(pred_a.shape)} (one per sample); got {tuple(labels.shape)}")
        labels = labels.to(pred_a.device)
        if self.dequantize is not None:
            # one draw per step, shared by both views; float first, as the task loss takes any real labels
            labels = self.dequantize(labels.float(), generator)
        zero = pred_a.new_zeros((), dtype=torch.float32)
        parts = {"task_a": self._task(pred_a, labels)}
        views = [out_a]
        if cfg.das:
            inputs_b, masks_b = corrupt(inputs, masks, rate=cfg.view_rate, inter_prob=cfg.view_inter_prob,
                                        generator=generator)
            pred_b, out_b = self.predict(inputs_b, masks_b)
            parts["task_b"] = self._task(pred_b, labels)
            # richer view teaches the sparser one at the output too; the teacher is detached so
            # that view A is never pulled towards what a view with less evidence predicts
            parts["pred"] = self._task(pred_b, pred_a.detach())
            views.append(out_b)
            das = self.layer.distill(out_a, out_b)
        else:
            parts["task_b"] = zero
            parts["pred"] = zero
            das = {"kl": zero, "dist": zero, "recov": zero}
        for key in ("orth", "dered", "hom", "rec", "loo"):
            vals = [v.losses[key] for v in views if key in v.losses]
            parts[key] = torch.stack(vals).mean() if vals else zero
        parts.update(das)
        if self.training:
            # the scale is materialised in a fresh tensor before the counter moves: AOTAutograd
            # (torch.compile) may otherwise recompute it in the backward from the buffer, which by
            # then holds the next step (measured: the auxiliary gradients came out doubled)
            ramp = self._ramp(self.steps + 1)
            scale = torch.empty_like(ramp).copy_(ramp)
            self.steps.add_(1)
        else:
            scale = self.aux_scale()
        aux = (cfg.w_orth * parts["orth"] + cfg.w_dered * parts["dered"]
               + cfg.w_hom * parts["hom"] + cfg.w_rec * parts["rec"]
               + cfg.w_kl * parts["kl"] + cfg.w_dist * parts["dist"] + cfg.w_recov * (parts["recov"] + parts["loo"])
               + cfg.w_pred * parts["pred"])
        total = parts["task_a"] + parts["task_b"] + scale * aux
        parts["aux_scale"] = scale
        parts = {k: v.detach() for k, v in parts.items()}
        parts["total"] = total.detach()
        return total, parts
