"""``FSRFModel``: :class:`FSRFLayer` plus a linear regression head, trained with
:class:`~fsrf.models.objective.FSRFObjective`."""

from __future__ import annotations

from typing import Mapping

from torch import Tensor, nn

from fsrf.config import FSRFConfig
from fsrf.models.objective import FSRFObjective
from fsrf.models.pretrained import PretrainedMixin
from fsrf.nn.layer import FSRFLayer

__all__ = ["FSRFModel"]


class FSRFModel(PretrainedMixin, FSRFObjective):
    """The full FSRF model for sentiment regression: ``ŷ = w·f + b`` on the layer's fused output.

    Args:
        modality_dims: ``{name: feature_dim}`` (M >= 2), e.g. ``{"text": 768, "audio": 74, "vision": 35}``.
        config: :class:`FSRFConfig`; defaults to the method's defaults.

    This is :class:`fsrf.FSRFObjective` with ``head = nn.Linear(config.out_dim, 1)``, no encoder
    and ``task="regression"``: ``model(inputs, masks)`` returns predictions (B,) and
    ``model.training_loss(inputs, masks, labels)`` returns ``(loss, parts)``, the §4 total over
    both views.
    """

    def __init__(self, modality_dims: Mapping[str, int], config: FSRFConfig | None = None) -> None:
        layer = FSRFLayer(modality_dims, config=config)
        super().__init__(layer, nn.Linear(layer.config.out_dim, 1), task="regression")

    def forward(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> Tensor:
        """Predicted sentiment intensity, shape (B,)."""
        return self.predict(inputs, masks)[0]
