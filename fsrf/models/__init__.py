"""Whole models: an encoder, a fusion and a regression head, with their training objective.

* :class:`FSRFModel` — :class:`fsrf.nn.FSRFLayer` plus a head and the full FSRF objective.
"""

from fsrf.models.fsrf_model import FSRFModel

__all__ = ["FSRFModel"]
