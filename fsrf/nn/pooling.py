"""Masked mean pooling whose mean is shrunk by its own evidence (docs/FSRF_METHOD.md §1.3 and §7):
``ShrinkagePool`` (one James-Stein factor per sample; ``pool_shrink``, ``private_pool="shrink"``)
and ``WienerPool`` (one posterior-mean factor per sample and feature; ``private_pool="wiener"``)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fsrf.runtime.distributed import gather_rows, global_batch_active

__all__ = ["ShrinkagePool", "WienerPool", "shrunk_mean", "wiener_mean"]


def shrunk_mean(c: Tensor, mask: Tensor, center: Tensor, noise_var: Tensor) -> Tensor:
    """The masked mean of ``c`` (B, T, d) over the frames where ``mask`` (B, T) is True, shrunk
    towards ``center`` (d,) by the positive-part James-Stein estimator::

        mu = mean of the n observed frames,   delta = mu - center
        z  = center + f * delta,              f = max(0, 1 - (d - 2) / d * (noise_var / n) / |delta|^2)

    when the n frames carry independent noise of total variance ``noise_var`` (summed over the d
    features), so that ``noise_var / n`` is the noise of the mean. ``|delta|^2`` holds the
    sample's signal plus that noise; ``f`` is one minus the estimated share of noise in it, the
    empirical-Bayes posterior mean under an isotropic Gaussian prior around ``center``. A mean
    over many frames is kept nearly as it is; a mean over few is pulled in, the more the noisier
    the frames, down to the centre itself when it is no farther from it than noise would put it.
    ``d <= 2`` does not shrink. A row with no observed frame gets 0 (and a zero gradient).
    Computed in float32 at least; returned in ``c``'s dtype.
    """
    mu, n = _masked_mean(c, mask)
    return _shrink(mu, n, center, noise_var).to(c.dtype)


def _masked_mean(c: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """The mean (B, d) of the observed frames and their count (B, 1), in float32 at least."""
    acc = torch.promote_types(c.dtype, torch.float32)
    w = mask.to(acc)
    n = w.sum(dim=1, keepdim=True)
    return (c.to(acc) * w.unsqueeze(-1)).sum(dim=1) / n.clamp_min(1.0), n


def _shrink(mu: Tensor, n: Tensor, center: Tensor, noise_var: Tensor) -> Tensor:
    center = center.to(mu.dtype)
    delta = mu - center
    signal = delta.pow(2).sum(dim=-1, keepdim=True)
    noise = noise_var.to(mu.dtype) / n.clamp_min(1.0)
    d = mu.shape[-1]
    # positive-part James-Stein: 1 - (d - 2) sigma_1^2 / |delta|^2 with sigma_1^2 = noise / d the
    # variance of one feature of the mean. The floor keeps a mean at the centre (and an empty row)
    # finite with a zero gradient: there f is 0 and the row is the centre
    f = (1.0 - max(d - 2, 0) / d * noise / signal.clamp_min(torch.finfo(mu.dtype).eps)).clamp_min(0.0)
    return (center + f * delta) * (n > 0).to(mu.dtype)


class _RunningPool(nn.Module):
    """What both poolings share: argument checks, the running ``center`` and ``noise_var`` with
    their batch counts ``tracked``, the one pass that gives the masked mean, and its update. A
    subclass sets how the mean is shrunk (``_pool``) and may estimate more in ``_update``."""

    #: the frames' noise variance per feature (d,) or summed over features (a scalar)
    _per_feature_noise = False
    #: running estimates of the features' statistics, which a weight average averages with the
    #: weights (fsrf.training.averaging)
    averaged_buffers = ("center", "noise_var")

    def __init__(self, dim: int, momentum: float = 0.1, global_batch: bool | None = None) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int; got {dim!r}")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 < momentum <= 1.0:
            raise ValueError(f"momentum must be a number in (0, 1]; got {momentum!r}")
        self.dim, self.momentum, self.global_batch = dim, float(momentum), global_batch
        self.register_buffer("center", torch.zeros(dim))
        # a first guess (a LayerNorm'd frame's unit variance per feature): the first batch replaces it
        self.register_buffer("noise_var", torch.ones(dim) if self._per_feature_noise else torch.tensor(float(dim)))
        self.register_buffer("tracked", torch.zeros(2, dtype=torch.long))  # batches behind each estimate

    def forward(self, c: Tensor, mask: Tensor, return_mean: bool = False) -> Tensor | tuple[Tensor, Tensor]:
        """``c`` (B, T, d) frames, ``mask`` (B, T) bool (True = observed) → (B, d).

        ``return_mean=True`` returns ``(shrunk, mean)``, the plain masked mean (0 for a row with no
        frame) beside the output, for a caller that needs both: it is the pass the shrinkage makes
        anyway."""
        _check_pool_inputs(c, mask, return_mean, self.dim)
        mu, n = _masked_mean(c, mask)  # one pass, shared by the estimates and the output
        if self.training:
            self._update(c, mask, mu.detach(), n)
        z = self._pool(mu, n).to(c.dtype)
        return (z, mu.to(c.dtype)) if return_mean else z

    def _pool(self, mu: Tensor, n: Tensor) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def _update(self, c: Tensor, mask: Tensor, mu: Tensor, n: Tensor):
        """Updates ``center`` and ``noise_var``; returns what a subclass needs for its own
        estimates: the (gathered) counts and means, the batch's centre, its noise estimate and
        the momentum of each estimate."""
        acc = mu.dtype
        w, n = mask.to(acc), n.squeeze(-1)
        dev2 = (c.to(acc) - mu.unsqueeze(1)).pow(2)
        # (B, d) per feature, else (B, 1) summed over features first, as the scalar estimate always was
        dev2 = dev2 * w.unsqueeze(-1) if self._per_feature_noise else dev2.sum(dim=-1, keepdim=True) * w.unsqueeze(-1)
        within = dev2.sum(dim=1) / (n - 1.0).clamp_min(1.0).unsqueeze(-1)
        if global_batch_active(self.global_batch):
            n, mu, within = gather_rows(n), gather_rows(mu), gather_rows(within)
        has, two = (n > 0).to(acc), (n > 1).to(acc)
        got = torch.stack([has.sum(), two.sum()]) > 0  # does this batch inform each estimate?
        self.tracked += got.long()
        # cumulative average for the first 1/momentum batches, then exponential
        mom = torch.clamp(1.0 / self.tracked.clamp_min(1).to(acc), min=self.momentum) * got.to(acc)
        mean = (mu * has.unsqueeze(-1)).sum(dim=0) / has.sum().clamp_min(1.0)
        var = (within * two.unsqueeze(-1)).sum(dim=0) / two.sum().clamp_min(1.0)
        if not self._per_feature_noise:
            var = var.squeeze(0)
        self.center += (mom[0] * (mean - self.center.to(acc))).to(self.center.dtype)
        self.noise_var += (mom[1] * (var - self.noise_var.to(acc))).to(self.noise_var.dtype)
        return n, mu, has, two, mean, var, mom

    def extra_repr(self) -> str:
        return f"dim={self.dim}, momentum={self.momentum}"


class ShrinkagePool(_RunningPool):
    """Masked mean pooling with the empirical-Bayes shrinkage of :func:`shrunk_mean`.

    The centre and the frames' noise variance are running estimates kept as buffers, as
    :class:`torch.nn.BatchNorm1d` keeps its statistics, so the output of one sample never depends
    on the rest of its batch at inference: in training each forward updates

    * ``center``, the mean of the pooled vectors of the samples with at least one frame, and
    * ``noise_var``, the mean over samples with at least two frames of the unbiased within-sample
      variance of the frames, summed over features,

    each by an exponential average (``momentum``, as BatchNorm's) that starts as the cumulative
    average of the batches seen, so the first batch sets it whatever the initial value. Under
    ``torch.distributed`` with ``global_batch`` active the statistics are taken over the rows
    of every process. In eval mode nothing is updated.

    Args:
        dim: feature width d.
        momentum: weight of a new batch in the running estimates, in (0, 1].
        global_batch: as :attr:`fsrf.FSRFConfig.global_batch`.
    """

    def _pool(self, mu: Tensor, n: Tensor) -> Tensor:
        return _shrink(mu, n, self.center, self.noise_var)


def wiener_mean(c: Tensor, mask: Tensor, center: Tensor, noise_var: Tensor, signal_var: Tensor) -> Tensor:
    """The masked mean of ``c`` (B, T, d) over the frames where ``mask`` (B, T) is True, shrunk
    towards ``center`` (d,) feature by feature by the posterior mean of a Gaussian prior::

        mu = mean of the n observed frames
        z  = center + f * (mu - center),    f_j = signal_var_j / (signal_var_j + noise_var_j / n)

    when a feature's true per-sample mean varies between samples with variance ``signal_var_j``
    around ``center_j`` and each frame adds independent noise of variance ``noise_var_j``. Unlike
    :func:`shrunk_mean`, the factor is set by the population's statistics, not by the sample's own
    distance from the centre, and differs between features: a feature that hardly varies between
    samples is pulled in even over many frames, one that carries a strong per-sample signal is kept
    over few. It is the diagonal of the linear estimate that is optimal for Gaussian data (the
    Wiener filter of the mean). A row with no observed frame gets 0 (and a zero gradient); a
    feature with no estimated signal (``signal_var_j = 0``) gets the centre. Computed in float32 at
    least; returned in ``c``'s dtype.
    """
    mu, n = _masked_mean(c, mask)
    return _wiener(mu, n, center, noise_var, signal_var).to(c.dtype)


def _wiener(mu: Tensor, n: Tensor, center: Tensor, noise_var: Tensor, signal_var: Tensor) -> Tensor:
    center, tau2, sig2 = (t.to(mu.dtype) for t in (center, signal_var, noise_var))
    tau2 = tau2.clamp_min(0.0)
    denom = tau2 + sig2.clamp_min(0.0) / n.clamp_min(1.0)
    # a feature with neither signal nor noise is kept as it is (f = 1): nothing to shrink it by
    f = torch.where(denom > 0, tau2 / denom.clamp_min(torch.finfo(mu.dtype).tiny), torch.ones_like(denom))
    return (center + f * (mu - center)) * (n > 0).to(mu.dtype)


class WienerPool(_RunningPool):
    """Masked mean pooling with the per-feature posterior-mean shrinkage of :func:`wiener_mean`.

    Three running estimates are kept as buffers, as :class:`ShrinkagePool` keeps its two, so the
    output of one sample never depends on the rest of its batch at inference. Each training
    forward updates, by an exponential average (``momentum``) that starts as the cumulative average
    of the batches seen,

    * ``center`` (d,), the mean of the pooled vectors of the samples with at least one frame;
    * ``noise_var`` (d,), per feature the mean over samples with at least two frames of the
      unbiased within-sample variance of the frames;
    * ``signal_var`` (d,), per feature the between-sample variance of the pooled vectors less the
      part their frame noise explains (the mean over the samples of ``noise_var / n``): what is left
      estimates the variance of the samples' true means (averaged unfloored, so that the average is
      unbiased; floored at 0 where it is used).

    Under ``torch.distributed`` with ``global_batch`` active the statistics are taken over the rows
    of every process. In eval mode nothing is updated.

    Args:
        dim: feature width d.
        momentum: weight of a new batch in the running estimates, in (0, 1].
        global_batch: as :attr:`fsrf.FSRFConfig.global_batch`.
    """

    _per_feature_noise = True
    averaged_buffers = (*_RunningPool.averaged_buffers, "signal_var")

    def __init__(self, dim: int, momentum: float = 0.1, global_batch: bool | None = None) -> None:
        super().__init__(dim, momentum, global_batch)
        self.register_buffer("signal_var", torch.ones(dim))

    def _pool(self, mu: Tensor, n: Tensor) -> Tensor:
        return _wiener(mu, n, self.center, self.noise_var, self.signal_var)

    @torch.no_grad()
    def _update(self, c: Tensor, mask: Tensor, mu: Tensor, n: Tensor):
        n, mu, has, two, mean, var, mom = super()._update(c, mask, mu, n)
        acc = mu.dtype
        H = has.sum()
        # the batch's own noise estimate where it has one (a batch without one left noise_var as it was)
        sig2 = torch.where(two.sum() > 0, var, self.noise_var.to(acc))
        between = ((mu - mean).pow(2) * has.unsqueeze(-1)).sum(dim=0) / (H - 1.0).clamp_min(1.0)
        explained = (sig2.unsqueeze(0) / n.clamp_min(1.0).unsqueeze(-1) * has.unsqueeze(-1)).sum(dim=0) / H.clamp_min(1.0)
        # not floored here: the running average of the unfloored estimates is unbiased; the use floors it
        tau2 = between - explained
        # the between-sample variance needs two samples; one sample informs the centre only
        m_sig = mom[0] * (H > 1).to(acc)
        self.signal_var += (m_sig * (tau2 - self.signal_var.to(acc))).to(self.signal_var.dtype)


def _check_pool_inputs(c, mask, return_mean, dim: int) -> None:
    for name, x in (("c", c), ("mask", mask)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if not isinstance(return_mean, bool):
        raise TypeError(f"return_mean must be a bool; got {type(return_mean).__name__} {return_mean!r}")
    if c.dim() != 3 or c.shape[-1] != dim:
        raise ValueError(f"c must be (B, T, {dim}); got {tuple(c.shape)}")
    if mask.shape != c.shape[:2] or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of shape {tuple(c.shape[:2])}; "
                         f"got {mask.dtype} {tuple(mask.shape)}")
