"""``FSRFObjective``: the whole FSRF training objective (docs/FSRF_METHOD.md §4) around a user's
:class:`~fsrf.nn.FSRFLayer`, head and (optionally) per-modality encoder, for regression or
classification. :class:`fsrf.FSRFModel` is this objective with a linear regression head."""

from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsrf.models.label_grid import LabelDequantizer
from fsrf.nn.layer import FSRFLayer, FSRFOutput
from fsrf.runtime.checks import check_modality_batch, is_tracing

__all__ = ["FSRFObjective", "TASKS"]

#: What the head predicts: a real value per sample, or logits over C classes.
TASKS = ("regression", "classification")

_Batch = tuple[dict[str, Tensor], "dict[str, Tensor] | None"]


class FSRFObjective(nn.Module):
    """A model trained with the full FSRF method: ``encoder → FSRFLayer → head`` and its objective.

    Args:
        layer: the :class:`fsrf.FSRFLayer`; its ``config`` holds every weight and switch.
        head: any module mapping the layer's fused output ``(B, config.out_dim)`` to the
            prediction: ``(B,)`` or ``(B, 1)`` for ``task="regression"``, ``(B, C)`` logits
            (C >= 2) for ``task="classification"``.
        encoder: optional module run on each view before the layer:
            ``encoder(inputs, masks)`` returns ``{name: (B, T', D')}`` (the masks still apply:
            the time axis is kept) or a pair ``(features, masks)``. Its output dims are the
            layer's ``modality_dims``. Missingness is drawn on the raw ``inputs``, so the encoder
            sees each view as it would see data with those frames and modalities missing.
        task: ``"regression"`` (the task loss is ``config.task_loss``, L1 or MSE) or
            ``"classification"`` (cross-entropy on the logits; integer class labels).

    ``objective(inputs, masks)`` returns the predictions; ``objective(inputs, masks, labels)``
    (the same as :meth:`training_loss`) returns ``(loss, parts)``: the task loss of view A (the
    batch, whole modalities dropped with probability ``config.modality_dropout`` in training)
    and of view B (A further corrupted by :func:`fsrf.missing.corrupt`), plus the weighted
    auxiliary terms of :meth:`fsrf.FSRFConfig.weighted_aux` — the DHF constraints averaged over
    both views, the DAS terms of :meth:`fsrf.FSRFLayer.distill` and the prediction distillation
    (view B's prediction towards view A's detached one: the task loss's form for regression,
    ``KL(p_A ‖ p_B)`` of the class distributions for classification) — each ramped in over
    ``config.aux_warmup_epochs`` epochs once the objective knows an epoch's length
    (:meth:`set_steps_per_epoch`; ``fit`` calls it), else over ``config.aux_warmup_steps`` steps.
    The step counter is the buffer ``steps``, saved and resumed with the weights.

    The trainer (:func:`fsrf.training.fit`) and the harness (:func:`fsrf.training.compare`)
    take an objective as a model. ``torch.compile(objective, fullgraph=True)`` captures the
    whole training step in one graph (pass ``generator=None`` there).
    """

    def __init__(self, layer: FSRFLayer, head: nn.Module, *, encoder: nn.Module | None = None,
                 task: str = "regression") -> None:
        super().__init__()
        if not isinstance(layer, FSRFLayer):
            raise TypeError(f"layer must be an fsrf.FSRFLayer; got {type(layer).__name__}")
        if not isinstance(head, nn.Module):
            raise TypeError(f"head must be an nn.Module mapping (B, {layer.config.out_dim}) to the prediction; "
                            f"got {type(head).__name__}")
        if encoder is not None and not isinstance(encoder, nn.Module):
            raise TypeError(f"encoder must be an nn.Module or None; got {type(encoder).__name__}")
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}; got {task!r}")
        # registration order fixes the parameter order, which optimizer checkpoints rely on
        self.layer = layer
        self.head = head
        if encoder is not None:
            self.encoder = encoder
        else:
            self.encoder = None
        self.task = task
        self.config = layer.config
        # training steps taken, for the warm-up of the auxiliary weights; saved so that a resumed
        # run continues the ramp where it stopped
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        # class labels have no annotation grid to spread over
        use_grid = self.config.dequantize_labels and task == "regression"
        self.dequantize = LabelDequantizer() if use_grid else None

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

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modality names of the layer, in the order of its ``available`` columns."""
        return self.layer.modalities

    # -- the warm-up --------------------------------------------------------------------------
    def aux_scale(self) -> Tensor:
        """The factor on every auxiliary weight at the current step: ``min(1, (steps + 1) /
        warmup_steps())``, or 1 without warm-up (a 0-dim fp32 tensor, no host sync)."""
        return self._ramp(self.steps + 1)

    def set_steps_per_epoch(self, steps: int) -> None:
        """The optimiser steps of one training epoch, which ``config.aux_warmup_epochs`` counts the
        warm-up in (:func:`fsrf.training.fit` calls this; call it in a training loop of your own,
        e.g. with ``len(loader)``, or the ramp counts ``config.aux_warmup_steps`` steps)."""
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int (optimiser steps per epoch); got {steps!r}")
        self._steps_per_epoch = steps

    def warmup_steps(self) -> int:
        """The length of the auxiliary weights' ramp in steps: ``aux_warmup_epochs`` epochs when
        that is set and the epoch's length known (:meth:`set_steps_per_epoch`), else
        ``aux_warmup_steps``."""
        epochs = self.config.aux_warmup_epochs
        per_epoch = getattr(self, "_steps_per_epoch", None)
        # a loop that never says how long an epoch is keeps the ramp of config version 8 (200
        # steps, the same length on the 800-sample data the epoch count was chosen on)
        if epochs <= 0 or per_epoch is None:
            return self.config.aux_warmup_steps
        return max(1, round(epochs * per_epoch))

    def _ramp(self, step: Tensor) -> Tensor:
        warm = self.warmup_steps()
        if warm <= 0:
            return torch.ones((), dtype=torch.float32, device=step.device)
        return (step.float() / warm).clamp(max=1.0)

    # -- prediction ---------------------------------------------------------------------------
    def forward(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None,
                labels: Tensor | None = None, generator: torch.Generator | None = None) -> Any:
        """Predictions without ``labels`` — ``(B,)`` for regression, ``(B, C)`` logits for
        classification — and ``(loss, parts)`` of :meth:`training_loss` with them."""
        if labels is None:
            return self.predict(inputs, masks)[0]
        return self.training_loss(inputs, masks, labels, generator=generator)

    def predict(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None
                ) -> tuple[Tensor, FSRFOutput]:
        """The predictions and the layer's output (factors, availability) for one view."""
        feats, fmasks = self._encode(inputs, masks)
        out = self.layer(feats, fmasks)
        return self._prediction(self.head(out.fused), out.fused.shape[0]), out

    def _encode(self, inputs, masks) -> _Batch:
        if self.encoder is None:
            return inputs, masks
        got = self.encoder(inputs, masks)
        if isinstance(got, Mapping):
            feats, masks = dict(got), masks
        elif isinstance(got, tuple) and len(got) == 2 and isinstance(got[0], Mapping):
            feats, masks = dict(got[0]), (None if got[1] is None else dict(got[1]))
        else:
            raise TypeError(f"encoder must return {{name: (B, T, D) tensor}} or a pair (features, masks); "
                            f"got {type(got).__name__}")
        # named as the encoder's, so a user's bug is not reported as a bad input of theirs
        check_modality_batch(feats, masks, dims=self.layer.modality_dims, name="encoder output", finite=False)
        return feats, masks

    def _prediction(self, y: Tensor, batch: int) -> Tensor:
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"head must return a tensor; got {type(y).__name__}")
        if self.task == "regression":
            if y.dim() == 2 and y.shape[1] == 1:
                y = y.squeeze(-1)
            if tuple(y.shape) != (batch,):
                raise ValueError(f"head must return shape ({batch},) or ({batch}, 1) for task='regression'; "
                                 f"got {tuple(y.shape)}")
            return y
        if y.dim() != 2 or y.shape[0] != batch or y.shape[1] < 2:
            raise ValueError(f"head must return logits of shape ({batch}, C) with C >= 2 classes for "
                             f"task='classification'; got {tuple(y.shape)}")
        return y

    # -- the objective ------------------------------------------------------------------------
    def _labels(self, labels: Tensor, pred: Tensor) -> Tensor:
        B = pred.shape[0]
        if tuple(labels.shape) != (B,):
            raise ValueError(f"labels must have shape ({B},) (one per sample); got {tuple(labels.shape)}")
        if self.task == "regression":
            if labels.dtype == torch.bool:
                raise TypeError("labels must be real values for task='regression'; got dtype torch.bool")
            return labels.to(pred.device)
        if labels.is_floating_point() or labels.dtype == torch.bool or labels.is_complex():
            raise TypeError(f"labels must be integer class indices (e.g. torch.long) for task='classification'; "
                            f"got dtype {labels.dtype} (regression labels given to a classifier?)")
        labels = labels.to(pred.device)
        if not is_tracing():  # a range check reads the labels back to the host
            C = pred.shape[1]
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi >= C:
                raise ValueError(f"labels must be class indices in [0, {C - 1}] for a head with {C} logits; "
                                 f"got values in [{lo}, {hi}]")
        return labels.long()

    def _task(self, pred: Tensor, labels: Tensor) -> Tensor:
        if self.task == "classification":
            return F.cross_entropy(pred.float(), labels)
        if self.config.task_loss == "l1":
            return F.l1_loss(pred.float(), labels.float())
        return F.mse_loss(pred.float(), labels.float())

    def _distill_prediction(self, pred_b: Tensor, teacher: Tensor) -> Tensor:
        if self.task == "classification":
            # KL(p_A ‖ p_B), batch mean, from log-probabilities (log-sum-exp stable)
            log_b = F.log_softmax(pred_b.float(), dim=-1)
            log_a = F.log_softmax(teacher.float(), dim=-1)
            return F.kl_div(log_b, log_a, log_target=True, reduction="batchmean")
        return self._task(pred_b, teacher)

    def training_loss(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None, labels: Tensor,
                      generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """The §4 objective: ``L_task(A) + L_task(B) + aux_scale · Σ w·L_aux``.

        ``labels``: (B,) real values for regression (with ``config.dequantize_labels`` the task
        loss of both views sees them plus one draw of
        :class:`fsrf.models.label_grid.LabelDequantizer` noise, training mode only), or (B,)
        integer class indices in ``[0, C)`` for classification. View B and the modality dropout
        of view A are drawn from ``generator`` (or torch's default generator; the only choice
        inside ``torch.compile``). With ``das=False`` only view A is used.

        Returns ``(loss, parts)``; ``parts`` holds detached 0-dim tensors ``task_a``, ``task_b``,
        ``orth``, ``dered``, ``hom``, ``rec``, ``loo`` (0 unless ``recovery_loss="view+loo"``),
        ``kl``, ``dist``, ``recov``, ``pred`` (0 without DAS), ``aux_scale`` and ``total`` — no
        host sync: call ``.item()`` on them only when logging. Each call in training mode counts
        one warm-up step. The NaN/Inf input checks are skipped inside a compiled graph.
        """
        from fsrf.missing import corrupt

        if not isinstance(labels, torch.Tensor):
            raise TypeError(f"labels must be a torch.Tensor of shape (B,); got {type(labels).__name__}")
        cfg = self.config
        if cfg.modality_dropout > 0 and self.training:
            inputs, masks = corrupt(inputs, masks, rate=0.0, inter_prob=cfg.modality_dropout, generator=generator)
        pred_a, out_a = self.predict(inputs, masks)
        labels = self._labels(labels, pred_a)
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
            parts["pred"] = self._distill_prediction(pred_b, pred_a.detach())
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
        total = parts["task_a"] + parts["task_b"] + scale * cfg.weighted_aux(parts, zero=zero)
        parts["aux_scale"] = scale
        parts = {k: v.detach() for k, v in parts.items()}
        parts["total"] = total.detach()
        return total, parts

    def extra_repr(self) -> str:
        return f"task={self.task!r}"
