"""``torch.nn`` modules built on :mod:`fsrf.ops`.

* :class:`MaskedCrossModalAttention` — multi-head attention over the observed keys only;
* :class:`ShrinkagePool` — masked mean pooling shrunk by its own evidence (the layer's with ``pool_shrink``);
* :class:`FSRFLayer` / :class:`FSRFOutput` — the drop-in FSRF fusion layer and what it returns.
"""

from fsrf.nn.attention import MaskedCrossModalAttention
from fsrf.nn.layer import FSRFLayer, FSRFOutput
from fsrf.nn.pooling import ShrinkagePool

__all__ = ["MaskedCrossModalAttention", "ShrinkagePool", "FSRFLayer", "FSRFOutput"]
