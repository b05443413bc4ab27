"""``torch.nn`` modules built on :mod:`fsrf.ops`.

* :class:`MaskedCrossModalAttention` — multi-head attention over the observed keys only;
* :class:`ShrinkagePool` — masked mean pooling shrunk by its own evidence (the layer's with ``pool_shrink``);
* :class:`WienerPool` — masked mean pooling shrunk feature by feature by the population's signal and noise
  variances (``private_pool="wiener"``);
* :class:`FSRFLayer` / :class:`FSRFOutput` — the drop-in FSRF fusion layer and what it returns.
"""

from fsrf.nn.attention import MaskedCrossModalAttention
from fsrf.nn.layer import FSRFLayer, FSRFOutput
from fsrf.nn.pooling import ShrinkagePool, WienerPool

__all__ = ["MaskedCrossModalAttention", "ShrinkagePool", "WienerPool", "FSRFLayer", "FSRFOutput"]
