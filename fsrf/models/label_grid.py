"""``LabelDequantizer``: training labels spread uniformly over their annotation grid cell.

MSA labels are means of a few annotators' integer scores, so they lie on a grid (CMU-MOSEI: thirds,
CMU-MOSI and CH-SIMS: fifths), with an atom at exactly 0. The L1 loss is minimised by the conditional
median, and the median of a grid-valued label is itself a grid point: it stays at 0 over a whole
range of evidence, so a model that fits it well has no reason to order the samples inside that
range, and the sign of its predictions there (what Acc-2 / F1 score) is left to chance. Adding
``U(-h, h)`` noise with ``h`` half the grid step turns the label into a variable with a density, whose
median moves strictly with the evidence (docs/research-log/08-dequantized-labels.md).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fsrf.runtime.checks import check_generator, check_tensor

__all__ = ["LabelDequantizer"]

#: Two labels closer than this count as the same grid value (float32 storage of thirds and fifths
#: differs by ~1e-7; real grids are >= 0.1 apart).
TIE_TOL = 1e-4


class LabelDequantizer(nn.Module):
    """Adds ``U(-h, h)`` to training labels, ``h`` = half the smallest gap between distinct labels seen.

    The grid step is estimated from the labels themselves: in training mode each call takes the
    smallest positive gap (above :data:`TIE_TOL`) between the batch's sorted labels and keeps the
    running minimum over all calls in the buffer ``step`` (``inf`` until two distinct labels have
    been seen, and then no noise is added). On a grid the running minimum reaches the step after a
    few batches and never goes below it; on continuous labels it falls towards 0 and the noise
    vanishes with it, so the module is harmless where there is no grid. In eval mode the labels
    pass unchanged and ``step`` is not updated. No host synchronisation (sort, ``where`` and a
    running minimum), so it runs inside ``torch.compile(fullgraph=True)``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("step", torch.full((), float("inf")))

    def half_width(self) -> Tensor:
        """``h``: half the estimated grid step, or 0 while no step is known (0-dim fp32)."""
        return torch.where(torch.isfinite(self.step), 0.5 * self.step, torch.zeros_like(self.step))

    def forward(self, labels: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The labels (float32), with ``U(-h, h)`` noise added in training mode.

        Args:
            labels: (B,) floating tensor.
            generator: a ``torch.Generator`` on the labels' device or on the CPU, or None (torch's
                default generator of the labels' device; the only choice inside ``torch.compile``).
        """
        check_tensor(labels, "labels", ndim=1, floating=False)
        if not labels.is_floating_point():
            raise ValueError(f"labels must be a 1-D floating tensor; got shape {tuple(labels.shape)}, {labels.dtype}")
        y = labels.float()
        if not self.training:
            return y
        gdev = check_generator(generator, y.device)
        if y.numel() > 1:
            s = torch.sort(y).values
            gap = s[1:] - s[:-1]
            self.step.copy_(torch.minimum(self.step, gap.masked_fill(gap <= TIE_TOL, float("inf")).min()))
        # no generator argument when there is none: rand's generator overload takes no symbolic sizes
        gen = {} if generator is None else {"generator": generator}
        u = torch.rand(y.shape, device=gdev, **gen).to(y.device)
        return y + (2.0 * u - 1.0) * self.half_width()
