"""Whole models: input projections, fusion and a regression head, with their training objective.

A *model* here is any ``nn.Module`` whose ``forward(inputs, masks)`` returns (B,) predictions,
optionally with ``training_loss(inputs, masks, labels, generator=None) -> (loss, parts)``; the
training loop (:func:`fsrf.training.trainer`) and the comparison harness
(:func:`fsrf.training.compare`) accept any of them. Built in:

* :class:`FSRFObjective` — the full FSRF objective around a user's :class:`fsrf.nn.FSRFLayer`,
  head and optional encoder, for regression or classification (a model in the sense above);
* :class:`FSRFModel` — the objective with a linear regression head;
* :class:`LateFusion` — masked mean pooling + MLP, optionally with modality dropout;
* :class:`MulT` — a MulT-style cross-modal transformer.

:class:`ModelSpec` names a model and how to build it; checkpoints of the built-in kinds record
``(kind, kwargs)`` so :func:`build_model` can rebuild them.

Every built-in model has ``model.save_pretrained(dir)`` and ``Kind.from_pretrained(dir)`` (a folder
with ``config.json`` and ``model.safetensors``, :mod:`fsrf.models.pretrained`);
:func:`from_pretrained` rebuilds whichever kind a folder holds.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from torch import nn

from fsrf.models.fsrf_model import FSRFModel
from fsrf.models.late_fusion import LateFusion
from fsrf.models.mult import MulT
from fsrf.models.objective import TASKS, FSRFObjective
from fsrf.models.pretrained import PretrainedMixin, _register_kind, from_pretrained, save_pretrained

__all__ = ["FSRFModel", "FSRFObjective", "TASKS", "LateFusion", "MulT", "MODEL_KINDS", "build_model", "rebuild_model", "ModelSpec",
           "PretrainedMixin", "save_pretrained", "from_pretrained"]


def _fsrf(dims, **config):
    from fsrf.config import FSRFConfig

    return FSRFModel(dims, FSRFConfig.from_dict(config))


def _fsrf_saved(dims, **config):
    from fsrf.config import FSRFConfig

    return FSRFModel(dims, FSRFConfig.from_saved(config))


#: Built-in model kinds: ``kind -> builder(modality_dims, **kwargs)``.
MODEL_KINDS: dict[str, Callable[..., nn.Module]] = {"fsrf": _fsrf, "late_fusion": LateFusion, "mult": MulT}

# what save_pretrained writes for each kind is what build_model takes: FSRF's config fields, or
# the constructor arguments of the baselines
_register_kind("fsrf", FSRFModel, _fsrf_saved, kwargs_of=lambda model: model.config.to_dict())
_register_kind("late_fusion", LateFusion, LateFusion)
_register_kind("mult", MulT, MulT)


def build_model(kind: str, modality_dims: Mapping[str, int], **kwargs: Any) -> nn.Module:
    """A built-in model of ``kind`` (one of :data:`MODEL_KINDS`) for ``modality_dims``."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"model kind must be one of {sorted(MODEL_KINDS)}; got {kind!r}")
    return MODEL_KINDS[kind](dict(modality_dims), **kwargs)


def rebuild_model(kind: str, modality_dims: Mapping[str, int], saved_kwargs: Mapping[str, Any]) -> nn.Module:
    """:func:`build_model` for ``(kind, kwargs)`` read from a file: an FSRF config saved before a
    default changed keeps the values it was trained with (:meth:`fsrf.FSRFConfig.from_saved`)."""
    if kind == "fsrf":
        return _fsrf_saved(dict(modality_dims), **dict(saved_kwargs))
    return build_model(kind, modality_dims, **dict(saved_kwargs))


@dataclass(frozen=True)
class ModelSpec:
    """One model of a comparison: a display ``name`` and how to build it.

    Either ``kind`` (a key of :data:`MODEL_KINDS`) with ``kwargs``, or ``build``, a callable
    ``build(modality_dims) -> nn.Module`` for a model of your own. ``train`` overrides fields of
    :class:`fsrf.training.TrainSettings` for this model only (e.g. ``{"lr": 3e-4}``).
    """

    name: str
    kind: str | None = None
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    build: Callable[[Mapping[str, int]], nn.Module] | None = None
    train: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"ModelSpec.name must be a non-empty str; got {self.name!r}")
        if (self.kind is None) == (self.build is None):
            raise ValueError(f"ModelSpec {self.name!r}: give exactly one of kind= (one of {sorted(MODEL_KINDS)}) "
                             f"or build= (a callable); got kind={self.kind!r}, build={self.build!r}")
        if self.kind is not None and self.kind not in MODEL_KINDS:
            raise ValueError(f"ModelSpec {self.name!r}: kind must be one of {sorted(MODEL_KINDS)}; got {self.kind!r}")
        if self.build is not None and not callable(self.build):
            raise TypeError(f"ModelSpec {self.name!r}: build must be callable; got {type(self.build).__name__}")
        if self.kind == "fsrf":
            # every field and the config version, so that what a run stores rebuilds the model it
            # trained whatever the defaults of a later fsrf are
            from fsrf.config import FSRFConfig

            object.__setattr__(self, "kwargs", FSRFConfig.from_dict(self.kwargs).to_dict())

    def instantiate(self, modality_dims: Mapping[str, int]) -> nn.Module:
        """A fresh model for ``modality_dims``."""
        if self.kind is not None:
            return build_model(self.kind, modality_dims, **dict(self.kwargs))
        model = self.build(dict(modality_dims))
        if not isinstance(model, nn.Module):
            raise TypeError(f"ModelSpec {self.name!r}: build must return an nn.Module; got {type(model).__name__}")
        return model
