"""An exponential moving average of a model's parameters, which training selects and saves.

At the study's size (25 steps an epoch) early stopping keeps an epoch 2–7, and the weights at the
end of one epoch carry the noise of its last few Adam steps; the average over about the last epoch
of steps has less of it (Polyak–Ruppert averaging). ``docs/research-log/10-weight-average.md`` has the
evidence that made it the default of :class:`fsrf.training.TrainSettings`.

The running estimates of the features' statistics that evaluation uses — the poolings' centre and
variances (:class:`fsrf.nn.ShrinkagePool`, :class:`fsrf.nn.WienerPool`, which name them in
``averaged_buffers``) and BatchNorm's running mean and variance — are averaged with the weights, so
that the averaged model is evaluated with statistics of features like its own rather than of the
live weights'. Every other buffer (step counters, the label-grid estimate, batch counts) stays the
live model's.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping

import torch
from torch import nn

__all__ = ["WeightAverage", "epoch_decay", "averaged_buffers"]


def averaged_buffers(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    """The floating buffers :class:`WeightAverage` averages: those a module names in its
    ``averaged_buffers`` attribute, and BatchNorm's ``running_mean`` / ``running_var``."""
    out = []
    for prefix, mod in model.named_modules():
        names = tuple(getattr(mod, "averaged_buffers", ()))
        if isinstance(mod, nn.modules.batchnorm._NormBase) and mod.track_running_stats:
            names += ("running_mean", "running_var")
        for name in names:
            buf = getattr(mod, name, None)
            if isinstance(buf, torch.Tensor) and buf.is_floating_point():
                out.append((f"{prefix}.{name}" if prefix else name, buf))
    return out


def epoch_decay(steps_per_epoch: int) -> float:
    """``1 − 1/steps_per_epoch``: an average whose memory is about one epoch of steps."""
    if isinstance(steps_per_epoch, bool) or not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be a positive int; got {steps_per_epoch!r}")
    return 1.0 - 1.0 / steps_per_epoch


class WeightAverage:
    """The moving average ``a ← d_t·a + (1 − d_t)·θ`` after every optimiser step ``t = 1, 2, …``.

    ``d_t = min(decay, (1 + t) / (10 + t))``: the warm-up keeps the first steps from being
    dominated by the initial weights (with the full decay at once, the average of a run stopped
    after two epochs would still hold ``decay^50`` of its initialisation, and of one epoch 0.36).
    The average is kept in float32 for parameters of lower precision. The buffers of
    :func:`averaged_buffers` are averaged alike (and swapped in by :meth:`applied`).

    Args:
        model: the module whose parameters are averaged; the average starts at its current values.
        decay: the decay the warm-up rises to, in [0, 1) (0: the average is the live weights).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if isinstance(decay, bool) or not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
            raise ValueError(f"decay must be a number in [0, 1); got {decay!r}")
        self.decay = float(decay)
        self.steps = 0
        self._names = [n for n, p in model.named_parameters()]
        self._avg = [self._master(p) for p in model.parameters()]
        bufs = averaged_buffers(model)
        self._buf_names = [n for n, _ in bufs]
        self._buf_avg = [self._master(b) for _, b in bufs]

    @staticmethod
    def _master(p: torch.Tensor) -> torch.Tensor:
        p = p.detach()
        return p.float().clone() if p.dtype in (torch.float16, torch.bfloat16) else p.clone()

    def current_decay(self) -> float:
        """``d_t`` of the next update."""
        t = self.steps + 1
        return min(self.decay, (1.0 + t) / (10.0 + t))

    def _params(self, model: nn.Module) -> list[torch.Tensor]:
        named = list(model.named_parameters())
        if [n for n, _ in named] != self._names:
            raise ValueError("model does not have the parameters this average was made for "
                             f"({len(named)} vs. {len(self._names)} tensors)")
        return [p for _, p in named]

    def _buffers(self, model: nn.Module) -> list[torch.Tensor]:
        bufs = averaged_buffers(model)
        if [n for n, _ in bufs] != self._buf_names:
            raise ValueError("model does not have the running statistics this average was made for "
                             f"({len(bufs)} vs. {len(self._buf_names)} buffers)")
        return [b for _, b in bufs]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Fold the model's current parameters (and running statistics) into the average (call
        after ``optimizer.step()``)."""
        d = self.current_decay()
        live = [p.detach().to(a.dtype) for p, a in zip(self._params(model), self._avg)]
        live += [b.detach().to(a.dtype) for b, a in zip(self._buffers(model), self._buf_avg)]
        avg = self._avg + self._buf_avg
        torch._foreach_mul_(avg, d)
        torch._foreach_add_(avg, live, alpha=1.0 - d)
        self.steps += 1

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Within the block the model holds the averaged parameters and running statistics; its own
        come back after it, also when the block raises."""
        params = self._params(model) + self._buffers(model)
        live = [p.detach().clone() for p in params]
        with torch.no_grad():
            for p, a in zip(params, self._avg + self._buf_avg):
                p.copy_(a)
        try:
            yield model
        finally:
            with torch.no_grad():
                for p, v in zip(params, live):
                    p.copy_(v)

    def state_dict(self) -> dict[str, Any]:
        """What resuming needs: the decay, the step count and the averaged tensors (on the CPU)."""
        return {"decay": self.decay, "steps": self.steps,
                "average": {n: a.detach().cpu() for n, a in zip(self._names, self._avg)},
                "buffers": {n: a.detach().cpu() for n, a in zip(self._buf_names, self._buf_avg)}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; the parameter names must be this model's. A state saved before
        running statistics were averaged has no ``"buffers"``: theirs then start from the model's
        current values (the live ones of the resumed run)."""
        avg = state.get("average") if isinstance(state, Mapping) else None
        if not isinstance(avg, Mapping) or list(avg) != self._names:
            raise ValueError("the saved weight average is not one of this model's parameters")
        bufs = state.get("buffers")
        if bufs is not None and (not isinstance(bufs, Mapping) or list(bufs) != self._buf_names):
            raise ValueError("the saved weight average's running statistics are not this model's")
        self.decay = float(state["decay"])
        self.steps = int(state["steps"])
        with torch.no_grad():
            for a, n in zip(self._avg, self._names):
                a.copy_(avg[n])
            for a, n in zip(self._buf_avg, self._buf_names):
                if bufs is not None:
                    a.copy_(bufs[n])
