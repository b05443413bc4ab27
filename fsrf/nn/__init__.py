"""``torch.nn`` modules built on :mod:`fsrf.ops`.

* :class:`MaskedCrossModalAttention` — multi-head attention over the observed keys only;
* :class:`FSRFLayer` / :class:`FSRFOutput` — the drop-in FSRF fusion layer and what it returns.
"""

from fsrf.nn.attention import MaskedCrossModalAttention
from fsrf.nn.layer import FSRFLayer, FSRFOutput

__all__ = ["MaskedCrossModalAttention", "FSRFLayer", "FSRFOutput"]
