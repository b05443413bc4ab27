"""``FSRFConfig``: every width, loss weight and switch of the method (docs/FSRF_METHOD.md), in
groups, with a version and explicit upgrades of every version ever saved."""

from __future__ import annotations

import dataclasses
import functools
import json
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping

__all__ = ["FSRFConfig", "ConfigGroup", "AUX_WEIGHTS", "CONFIG_VERSION", "CONV_MODES", "FIRST_RECONSTRUCTION", "GROUPS",
           "KL_STOP_GRAD", "POOLINGS", "PRIVATE_POOLS", "REDUCTIONS", "RECOVERY_LOSSES", "SHARED_POOLS", "TASK_LOSSES"]

KL_STOP_GRAD = ("both", "none", "richer")
TASK_LOSSES = ("l1", "mse")
REDUCTIONS = ("sum", "mean")
RECOVERY_LOSSES = ("view", "view+loo")
SHARED_POOLS = ("mean", "gated")
PRIVATE_POOLS = ("same", "shrink", "wiener")
#: Where a temporal window (``conv_kernel`` above 1) acts: ``"full"``, a ``Conv1d`` over the input
#: features (MulT's); ``"factorized"``, d x d taps over the projected frames (the default since
#: config version 8).
CONV_MODES = ("full", "factorized")

#: ``pooling`` -> (LayerNorm on each pooled z_m, James-Stein shrinkage of every pooled mean, what
#: the heterogeneous and noise encoders read). One choice, because the three switches it replaced
#: interacted: norm and shrink exclude each other, and the private choice is moot under "shrink".
POOLINGS: dict[str, tuple[bool, bool, str]] = {
    "norm": (True, False, "same"),
    "norm+private-shrink": (True, False, "shrink"),
    "norm+private-wiener": (True, False, "wiener"),
    "mean": (False, False, "same"),
    "mean+private-shrink": (False, False, "shrink"),
    "mean+private-wiener": (False, False, "wiener"),
    "shrink": (False, True, "same"),
}

#: The version :meth:`FSRFConfig.to_dict` writes. Version 1 (no ``config_version`` key) is every
#: config saved before versions existed; :data:`MIGRATIONS` upgrades it step by step.
CONFIG_VERSION = 9

#: The fields of each group, in the order the grouped form (:meth:`FSRFConfig.to_dict` with
#: ``grouped=True``, :meth:`FSRFConfig.to_json`) writes them.
GROUPS: dict[str, tuple[str, ...]] = {
    "architecture": ("d_model", "num_heads", "d_factor", "d_out", "conv_kernel", "conv_mode", "proj_norm",
                     "encoder_layers", "dropout", "attn_dropout"),
    "ablation": ("dhf", "das", "recovery"),
    "constraints": ("w_orth", "w_dered", "w_hom", "w_rec", "detach_norm", "orth_eps", "decor_eps", "rec_detach_target",
                    "orth_reduction", "hom_reduction", "mmd_num_kernels", "mmd_kernel_mul", "mmd_unbiased",
                    "mmd_normalize"),
    "distillation": ("w_kl", "w_dist", "w_recov", "w_pred", "kl_temperature", "kl_stop_grad", "view_rate",
                     "view_inter_prob", "recovery_loss"),
    "training": ("task_loss", "dequantize_labels", "aux_warmup_steps", "aux_warmup_epochs", "modality_dropout"),
    "fusion": ("pooling", "shared_pool", "fusion_availability"),
    "execution": ("global_batch", "backend"),
}

#: The weight field of each auxiliary term of the objective (docs/FSRF_METHOD.md §4), in the order
#: they are summed. The only place a term meets its weight: :meth:`FSRFConfig.weighted_aux` is used
#: by the layer's ``aux_loss`` and by :class:`fsrf.FSRFObjective`. The leave-one-out recovery
#: (``loo``) shares ``w_recov`` with the view-to-view recovery.
AUX_WEIGHTS: dict[str, str] = {
    "orth": "w_orth", "dered": "w_dered", "hom": "w_hom", "rec": "w_rec",
    "kl": "w_kl", "dist": "w_dist", "recov": "w_recov", "loo": "w_recov", "pred": "w_pred",
}

#: The method as first reconstructed: the values of the fields whose defaults the studies of
#: docs/research-log/ changed (:meth:`FSRFConfig.first_reconstruction`). ``shared_pool`` is
#: back at its value since config version 5 (issue 29's regime matrix).
FIRST_RECONSTRUCTION: dict[str, Any] = {
    "rec_detach_target": False,
    "orth_reduction": "sum",
    "hom_reduction": "sum",
    "mmd_normalize": False,
    "aux_warmup_steps": 0,
    "modality_dropout": 0.0,
    "fusion_availability": False,
    "recovery_loss": "view",
    "pooling": "mean",
    "shared_pool": "mean",
    "dequantize_labels": False,
    "w_pred": 0.0,
    "proj_norm": True,
    "conv_kernel": 1,
    "aux_warmup_epochs": 0.0,
}

# Version 1 was upgraded by the absence of a key: a field a saved dict lacks was written before the
# field existed, and takes the value that reproduces the behaviour of that time (its own names).
_V1_BEFORE: dict[str, Any] = {
    **{k: v for k, v in FIRST_RECONSTRUCTION.items() if k != "pooling"},
    "pool_norm": False, "pool_shrink": False, "private_pool": "same",
    "global_batch": False, "encoder_layers": 0,
}
_LEGACY_POOLING = ("pool_norm", "pool_shrink", "private_pool")


def _pooling_of(pool_norm: Any, pool_shrink: Any, private_pool: Any) -> str:
    """The ``pooling`` choice of the three version-1 switches (validated by name)."""
    for name, value in (("pool_norm", pool_norm), ("pool_shrink", pool_shrink)):
        if not isinstance(value, bool):
            raise TypeError(f"FSRFConfig.{name} must be a bool; got {value!r}")
    if private_pool not in PRIVATE_POOLS:
        raise ValueError(f"FSRFConfig.private_pool must be one of {PRIVATE_POOLS}; got {private_pool!r}")
    if pool_norm and pool_shrink:
        raise ValueError("FSRFConfig.pool_norm and FSRFConfig.pool_shrink are two ways to pool; set at most one "
                         "(pool_shrink=True needs pool_norm=False); got both True")
    if pool_shrink:  # every encoder reads the shrunk mean: the private choice never applied
        return "shrink"
    return f"{'norm' if pool_norm else 'mean'}{'' if private_pool == 'same' else '+private-' + private_pool}"


def _v1_to_v2(d: dict[str, Any], *, fill_absent: bool) -> dict[str, Any]:
    """Version 1 -> 2: absent fields take their value from before they existed (saved dicts only),
    the three pooling switches become ``pooling``, and ``extra`` (read by nothing) goes."""
    if fill_absent:
        d = {**{k: v for k, v in _V1_BEFORE.items() if k not in d}, **d}
    if any(k in d for k in _LEGACY_POOLING):
        # the switches a dict leaves out keep their values of version 1's last default
        pooling = d.pop("pooling", "norm+private-shrink")
        if pooling not in POOLINGS:
            raise ValueError(f"FSRFConfig.pooling must be one of {tuple(POOLINGS)}; got {pooling!r}")
        base = POOLINGS[pooling]
        legacy = [d.pop(k, b) for k, b in zip(_LEGACY_POOLING, base)]
        d["pooling"] = _pooling_of(*legacy)
    extra = d.pop("extra", None)
    if extra:
        raise ValueError(f"FSRFConfig.extra was removed in config version 2 (nothing read it); got {extra!r}")
    return d


def _v2_to_v3(d: dict[str, Any], *, fill_absent: bool) -> dict[str, Any]:
    """Version 2 -> 3: ``proj_norm``'s default became ``False`` (issue 29's regime matrix), so a
    version-2 dict without the field meant the LayerNorm. Every version-2 dict fsrf wrote has it;
    this keeps a hand-written one as its author read it."""
    return {"proj_norm": True, **d}


def _v3_to_v4(d: dict[str, Any], *, fill_absent: bool) -> dict[str, Any]:
    """Version 3 -> 4 (issue 29's regime matrix, run 2): ``pooling``'s default became ``"norm"``
    (the private shrinkage pooling did not keep its place), so a version-3 dict without the field
    meant ``"norm+private-shrink"``; ``aux_balance`` (a cap on each auxiliary term, on trial in
    version 3) changed nothing on the matrix and was removed. It only shaped the training loss, so a
    saved model that used it loads as trained, with a warning that further training runs without
    the cap; a hand-written dict asking for it is refused."""
    d = {"pooling": "norm+private-shrink", **d}
    balance = d.pop("aux_balance", 0.0)
    if balance:
        msg = (f"FSRFConfig.aux_balance was removed in config version 4 (it changed nothing on the regime matrix, "
               f"docs/research-log/14-regime-matrix.md); got aux_balance={balance!r}")
        if not fill_absent:
            raise ValueError(msg)
        warnings.warn(msg + ": the model loads as trained; training it further runs without the cap", stacklevel=4)
    return d


def _v4_to_v5(d: dict[str, Any], *, fill_absent: bool) -> dict[str, Any]:
    """Version 4 -> 5 (issue 29's regime matrix, run 3): ``shared_pool`` became ``"mean"`` and
    ``dequantize_labels`` ``False`` (neither default kept its place against the simplest choice), so
    a version-4 dict without them meant the gated shared pool and the dequantized labels."""
    return {"shared_pool": "gated", "dequantize_labels": True, **d}


def _v5_to_v6(d: dict[str, Any], *, fill_absent: bool) -> dict[str, Any]:
    """Version 5 -> 6 (issue 29's regime matrix, step 3): on fresh draws version 5 was significantly
    worse than version 3, so the change with the weakest evidence, ``dequantize_labels=False``, was
    reverted; a version-5 dict without the field meant False."""
    return {"dequantize_labels": False, **d}


def _v6_to_v7(d: dict[str, Any], *, fill_absent: bool) -> dict[str, Any]:
    """Version 6 -> 7 (issue 29's regime matrix, step 3): version 6 was still significantly worse
    than version 3 on fresh draws, so the change with the next weakest evidence,
    ``pooling="norm"``, was reverted; a version-6 dict without the field meant ``"norm"``."""
    return {"pooling": "norm", **d}


def _v7_to_v8(d: dict[str, Any], *, fill_absent: bool) -> dict[str, Any]:
    """Version 7 -> 8 (issue 29's encoder study): ``conv_kernel`` became 3 with ``conv_mode=
    "factorized"`` (a window of three projected frames), so a version-7 dict without them meant a
    per-frame projection, and one with a kernel above 1 meant the window over the input features."""
    return {"conv_kernel": 1, "conv_mode": "full", **d}


def _v8_to_v9(d: dict[str, Any], *, fill_absent: bool) -> dict[str, Any]:
    """Version 8 -> 9 (issue 29, item 3): the warm-up is counted in epochs (``aux_warmup_epochs=8``,
    the 200 steps' length on the matrix's 800-sample cells), so a version-8 dict without the field
    counted its ramp in ``aux_warmup_steps``."""
    return {"aux_warmup_epochs": 0.0, **d}


#: ``version -> step`` upgrading a dict of that version to the next (``fill_absent``: the dict was
#: saved with a model, so a missing field predates the field).
MIGRATIONS: dict[int, Callable[..., dict[str, Any]]] = {
    1: _v1_to_v2, 2: _v2_to_v3, 3: _v3_to_v4, 4: _v4_to_v5, 5: _v5_to_v6, 6: _v6_to_v7, 7: _v7_to_v8, 8: _v8_to_v9,
}


def migrate(d: Mapping[str, Any], *, saved: bool) -> dict[str, Any]:
    """The flat, current-version dict of ``d``: grouped or flat, of any version ever written.

    ``saved``: ``d`` was written with a model, so a dict without ``config_version`` is version 1;
    otherwise (keyword arguments, a hand-written file) it is the current version.
    """
    if not isinstance(d, Mapping):
        raise TypeError(f"config must be a mapping; got {type(d).__name__}")
    d = dict(d)
    for group, names in GROUPS.items():
        if isinstance(d.get(group), Mapping):
            inner = dict(d.pop(group))
            stray = sorted(set(inner) - set(names))
            if stray:
                raise ValueError(f"FSRFConfig group {group!r} has no field(s) {stray}; its fields: {list(names)}")
            clash = sorted(set(inner) & set(d))
            if clash:
                raise ValueError(f"FSRFConfig field(s) {clash} given both flat and in group {group!r}")
            d.update(inner)
    version = d.pop("config_version", 1 if saved else CONFIG_VERSION)
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= CONFIG_VERSION:
        raise ValueError(f"config_version must be an int in [1, {CONFIG_VERSION}] (this fsrf writes "
                         f"{CONFIG_VERSION}); got {version!r}")
    for v in range(version, CONFIG_VERSION):
        d = MIGRATIONS[v](d, fill_absent=saved)
    if version == CONFIG_VERSION and any(k in d for k in (*_LEGACY_POOLING, "extra")):
        d = _v1_to_v2(d, fill_absent=False)  # keyword arguments of version 1 still work
    return d


class ConfigGroup:
    """A read-only view of one group of an :class:`FSRFConfig` (``config.architecture.d_model``)."""

    __slots__ = ("_config", "_name")

    def __init__(self, config: "FSRFConfig", name: str) -> None:
        object.__setattr__(self, "_config", config)
        object.__setattr__(self, "_name", name)

    def __getattr__(self, key: str) -> Any:
        if key in GROUPS[self._name]:
            return getattr(self._config, key)
        raise AttributeError(f"FSRFConfig group {self._name!r} has no field {key!r}; its fields: "
                             f"{list(GROUPS[self._name])}")

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"FSRFConfig groups are read-only views; use config.replace({key}=...)")

    def to_dict(self) -> dict[str, Any]:
        """The group's fields and values."""
        return {k: getattr(self._config, k) for k in GROUPS[self._name]}

    def __repr__(self) -> str:
        return f"{self._name}({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"


def _group_property(name: str) -> property:
    def view(self: "FSRFConfig") -> ConfigGroup:
        return ConfigGroup(self, name)

    view.__doc__ = f"The ``{name}`` fields, a read-only view (:data:`GROUPS`)."
    return property(view)


@dataclass
class FSRFConfig:
    """Configuration of :class:`fsrf.FSRFLayer`, :class:`fsrf.FSRFObjective` and :class:`fsrf.FSRFModel`.

    Every field is a keyword (``FSRFConfig(d_model=64, w_orth=0.3)``) and an attribute; each also
    belongs to one group (:data:`GROUPS`), readable as a view (``config.distillation.w_kl``) and
    written so by :meth:`to_json`. Fields the paper's abstract does not fix are switches of our
    reconstruction; docs/FSRF_METHOD.md has their table with the evidence for each default.

    architecture
        ``d_model`` (d), ``num_heads``, ``d_factor`` (d_f, default d), ``d_out`` (width of the fused
        output, default d), ``conv_kernel`` (odd temporal kernel of the input projection, one int or
        ``{modality: int}``; 1 is a ``Linear``; 3 since config version 8), ``conv_mode`` (with a
        kernel above 1: ``"factorized"``, the default, a per-frame ``Linear`` to d, then a d x d
        window over the projected frames initialised to the identity, so that it starts as the
        kernel-1 projection and adds (k - 1) d^2 weights; ``"full"``, a ``Conv1d`` over the input
        features, MulT's, (k - 1) D d more weights), ``proj_norm`` (``True``: a LayerNorm on every
        projected frame, ``u_m = LN(W x_m)``, as first reconstructed and before config version 3;
        the default ``False`` is the projection alone, decided on issue 29's regime matrix),
        ``encoder_layers`` (0: one masked cross-modal
        attention per modality with a residual; L > 0: per modality L pre-norm blocks of masked
        temporal self-attention, then L cross-modal blocks, each with a feed-forward network),
        ``dropout`` (MLPs and blocks), ``attn_dropout``.
    ablation
        ``dhf`` (factorization and its constraints; ``False`` fuses the pooled features),
        ``das`` (the second view and its self-distillation), ``recovery`` (recovered parts stand in
        for missing modalities).
    constraints (DHF)
        weights ``w_orth`` 0.3, ``w_dered`` 0.01, ``w_hom`` 1.0, ``w_rec`` 1.0; ``detach_norm`` and
        ``orth_eps`` (MISA's difference loss), ``decor_eps``, ``rec_detach_target`` (reconstruct a
        detached ``z_m``), ``orth_reduction`` / ``hom_reduction`` (``"mean"`` averages the pair
        terms, ``"sum"`` adds them), ``mmd_num_kernels``, ``mmd_kernel_mul``, ``mmd_unbiased``,
        ``mmd_normalize`` (divide each MMD by the number of bandwidths, so it lies in [0, 2]).
    distillation (DAS)
        weights ``w_kl`` 0.5, ``w_dist`` 0.5, ``w_recov`` 1.0 (also the leave-one-out recovery),
        ``w_pred`` 0.5 (view B's prediction pulled towards view A's detached one by the task loss's
        own form); ``kl_temperature``; ``kl_stop_grad`` (``"both"``: each KL direction's target is
        detached; ``"none"``; ``"richer"``: only view A is detached); ``view_rate`` (view B's extra
        frame-drop rate; ``None`` draws one per sample from U(0, 1)); ``view_inter_prob``
        (probability that a view-B sample loses one or two whole modalities); ``recovery_loss``
        (``"view"``: recovery learns from view B only; ``"view+loo"``: also leave-one-out over every
        available modality of every batch).
    training
        ``task_loss`` (``"l1"`` or ``"mse"``; classification always uses cross-entropy),
        ``dequantize_labels`` (regression: the task loss sees each label plus U(-h, h) noise, h half
        the annotation grid's step, :class:`fsrf.models.label_grid.LabelDequantizer`),
        ``aux_warmup_epochs`` (every auxiliary weight ramps linearly from 0 over this many epochs,
        whatever the data's size; the trainer gives the epoch's length, and where none was given
        the ramp counts ``aux_warmup_steps`` steps), ``aux_warmup_steps`` (the ramp in steps, used
        when ``aux_warmup_epochs`` is 0 or the epoch's length unknown; both 0: no warm-up),
        ``modality_dropout`` (probability that a view-A training sample loses one or two whole
        modalities).
    fusion
        ``pooling`` (a key of :data:`POOLINGS`: ``"norm"``, a LayerNorm on each pooled ``z_m`` so
        that a mean over few frames is not larger; ``"mean"``, the plain masked mean; ``"shrink"``,
        the masked mean shrunk towards the running mean by the James-Stein estimate of its noise
        share, :class:`fsrf.nn.ShrinkagePool`; ``"…+private-shrink"`` / ``"…+private-wiener"``: only
        the heterogeneous and noise encoders read a shrunk mean, per sample or per feature,
        :class:`fsrf.nn.WienerPool`), ``shared_pool`` (``"mean"`` or ``"gated"``: how the
        homogeneous codes of the available modalities combine into ``s̄``), ``fusion_availability``
        (the availability flags enter the fusion MLP).
    execution
        ``global_batch`` (under ``torch.distributed``, batch statistics over the rows of all
        processes; ``None``: on with more than one process), ``backend`` (``"auto"``, ``"torch"``,
        ``"cpp"``, ``"cuda"`` or ``"triton"`` for every op that implements it,
        :meth:`fsrf.FSRFLayer.op_backend`).

    Version-1 keywords still work: ``pool_norm``, ``pool_shrink`` and ``private_pool`` set
    ``pooling`` (and read back as properties); ``config_version`` is accepted when it is current.
    """

    d_model: int = 128
    num_heads: int = 4
    d_factor: int | None = None
    d_out: int | None = None
    conv_kernel: int | dict[str, int] = 3
    conv_mode: str = "factorized"
    proj_norm: bool = False
    encoder_layers: int = 0
    dropout: float = 0.1
    attn_dropout: float = 0.0

    dhf: bool = True
    das: bool = True
    recovery: bool = True

    w_orth: float = 0.3
    w_dered: float = 0.01
    w_hom: float = 1.0
    w_rec: float = 1.0
    detach_norm: bool = True
    orth_eps: float = 1e-6
    decor_eps: float = 1e-5
    rec_detach_target: bool = True
    orth_reduction: str = "mean"
    hom_reduction: str = "mean"
    mmd_num_kernels: int = 5
    mmd_kernel_mul: float = 2.0
    mmd_unbiased: bool = False
    mmd_normalize: bool = True

    w_kl: float = 0.5
    w_dist: float = 0.5
    w_recov: float = 1.0
    w_pred: float = 0.5
    kl_temperature: float = 2.0
    kl_stop_grad: str = "both"
    view_rate: float | None = None
    view_inter_prob: float = 0.3
    recovery_loss: str = "view+loo"

    task_loss: str = "l1"
    dequantize_labels: bool = True
    aux_warmup_steps: int = 200
    aux_warmup_epochs: float = 8.0
    modality_dropout: float = 0.3

    pooling: str = "norm+private-shrink"
    shared_pool: str = "mean"
    fusion_availability: bool = True

    global_batch: bool | None = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        self.validate()

    # -- validation -------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``TypeError``/``ValueError`` naming the first field that is out of range."""
        def _int(name, lo=1):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"FSRFConfig.{name} must be an int; got {type(v).__name__} {v!r}")
            if v < lo:
                raise ValueError(f"FSRFConfig.{name} must be >= {lo}; got {v}")

        def _num(name, lo=0.0, hi=None, lo_open=False):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"FSRFConfig.{name} must be a number; got {type(v).__name__} {v!r}")
            if (v <= lo if lo_open else v < lo) or (hi is not None and v > hi) or v != v:
                rng = f"{'(' if lo_open else '['}{lo}, {hi if hi is not None else 'inf'}]"
                raise ValueError(f"FSRFConfig.{name} must be in {rng}; got {v}")

        _int("d_model")
        _int("num_heads")
        _int("encoder_layers", 0)
        if self.d_model % self.num_heads:
            raise ValueError(f"FSRFConfig.d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        for name in ("d_factor", "d_out"):
            if getattr(self, name) is not None:
                _int(name)
        ks = self.conv_kernel.values() if isinstance(self.conv_kernel, Mapping) else [self.conv_kernel]
        for k in ks:
            if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k % 2 == 0:
                raise ValueError(f"FSRFConfig.conv_kernel must be odd positive ints; got {self.conv_kernel!r}")
        _num("dropout", 0.0, 1.0)
        _num("attn_dropout", 0.0, 1.0)
        for name in ("dhf", "das", "recovery", "detach_norm", "mmd_unbiased", "rec_detach_target",
                     "mmd_normalize", "fusion_availability", "dequantize_labels", "proj_norm"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"FSRFConfig.{name} must be a bool; got {getattr(self, name)!r}")
        for name in ("w_orth", "w_dered", "w_hom", "w_rec", "w_kl", "w_dist", "w_recov", "w_pred"):
            _num(name, 0.0)
        _num("orth_eps", 0.0, lo_open=True)
        _num("decor_eps", 0.0, lo_open=True)
        _int("mmd_num_kernels")
        _num("mmd_kernel_mul", 0.0, lo_open=True)
        _num("kl_temperature", 0.0, lo_open=True)
        if self.kl_stop_grad not in KL_STOP_GRAD:
            raise ValueError(f"FSRFConfig.kl_stop_grad must be one of {KL_STOP_GRAD}; got {self.kl_stop_grad!r}")
        if self.task_loss not in TASK_LOSSES:
            raise ValueError(f"FSRFConfig.task_loss must be one of {TASK_LOSSES}; got {self.task_loss!r}")
        if self.view_rate is not None:
            _num("view_rate", 0.0, 1.0)
        _num("view_inter_prob", 0.0, 1.0)
        for name in ("orth_reduction", "hom_reduction"):
            if getattr(self, name) not in REDUCTIONS:
                raise ValueError(f"FSRFConfig.{name} must be one of {REDUCTIONS}; got {getattr(self, name)!r}")
        if not isinstance(self.pooling, str) or self.pooling not in POOLINGS:
            raise ValueError(f"FSRFConfig.pooling must be one of {tuple(POOLINGS)}; got {self.pooling!r}")
        if self.conv_mode not in CONV_MODES:
            raise ValueError(f"FSRFConfig.conv_mode must be one of {CONV_MODES}; got {self.conv_mode!r}")
        if self.shared_pool not in SHARED_POOLS:
            raise ValueError(f"FSRFConfig.shared_pool must be one of {SHARED_POOLS}; got {self.shared_pool!r}")
        if self.recovery_loss not in RECOVERY_LOSSES:
            raise ValueError(f"FSRFConfig.recovery_loss must be one of {RECOVERY_LOSSES}; got {self.recovery_loss!r}")
        _int("aux_warmup_steps", 0)
        _num("aux_warmup_epochs", 0.0)
        if self.global_batch is not None and not isinstance(self.global_batch, bool):
            raise TypeError(f"FSRFConfig.global_batch must be True, False or None; got {self.global_batch!r}")
        _num("modality_dropout", 0.0, 1.0)
        from fsrf.runtime.backend import BACKENDS  # here: the rest of this module needs no torch

        if self.backend not in BACKENDS:
            raise ValueError(f"FSRFConfig.backend must be one of {BACKENDS}; got {self.backend!r}")

    # -- derived ----------------------------------------------------------------------------
    @property
    def pool_norm(self) -> bool:
        """A LayerNorm on each pooled ``z_m`` (from ``pooling``; a version-1 keyword)."""
        return POOLINGS[self.pooling][0]

    @property
    def pool_shrink(self) -> bool:
        """Every pooled mean shrunk by its evidence (``pooling="shrink"``; a version-1 keyword)."""
        return POOLINGS[self.pooling][1]

    @property
    def private_pool(self) -> str:
        """What the heterogeneous and noise encoders read (from ``pooling``; a version-1 keyword)."""
        return POOLINGS[self.pooling][2]

    @property
    def factor_dim(self) -> int:
        """d_f: width of the homogeneous / heterogeneous / noise factors."""
        return self.d_factor or self.d_model

    @property
    def out_dim(self) -> int:
        """Width of the fused output ``f``."""
        return self.d_out or self.d_model

    def kernel_for(self, name: str) -> int:
        """Temporal kernel size of modality ``name``'s input projection."""
        if isinstance(self.conv_kernel, Mapping):
            return int(self.conv_kernel.get(name, 1))
        return int(self.conv_kernel)

    def weighted_aux(self, terms: Mapping[str, Any], zero: Any = 0.0) -> Any:
        """``Σ w_k · terms[k]`` over the auxiliary terms of :data:`AUX_WEIGHTS` present in ``terms``
        (tensors or numbers; other keys, such as the task terms, are ignored); ``zero`` when none is."""
        total = zero
        for key, weight in AUX_WEIGHTS.items():
            if key in terms:
                total = total + getattr(self, weight) * terms[key]
        return total

    # -- (de)serialisation ------------------------------------------------------------------
    def to_dict(self, grouped: bool = False) -> dict[str, Any]:
        """Plain-dict form (JSON-serialisable) with ``config_version``: flat (the constructor's
        keywords), or ``grouped`` as :data:`GROUPS` orders them."""
        flat = dataclasses.asdict(self)
        if not grouped:
            return {"config_version": CONFIG_VERSION, **flat}
        return {"config_version": CONFIG_VERSION, **{g: {k: flat[k] for k in names} for g, names in GROUPS.items()}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FSRFConfig":
        """Build from a flat or grouped dict; without ``config_version`` it is read as the current
        version (keyword arguments, a hand-written file), and unknown keys are refused by name."""
        return cls._build(migrate(d, saved=False))

    @classmethod
    def from_saved(cls, d: Mapping[str, Any]) -> "FSRFConfig":
        """Like :meth:`from_dict`, for a config saved with a model: a dict without
        ``config_version`` is version 1 and goes through every step of :data:`MIGRATIONS`, so a
        checkpoint or model folder of any earlier fsrf loads as it was trained."""
        return cls._build(migrate(d, saved=True))

    @classmethod
    def _build(cls, d: Mapping[str, Any]) -> "FSRFConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown FSRFConfig field(s) {unknown}; valid fields: {sorted(names)}")
        return cls(**dict(d))

    @classmethod
    def first_reconstruction(cls, **changes: Any) -> "FSRFConfig":
        """The method as first reconstructed (:data:`FIRST_RECONSTRUCTION`), with ``changes``."""
        return cls(**{**FIRST_RECONSTRUCTION, **changes})

    @classmethod
    def from_json(cls, path: str) -> "FSRFConfig":
        """Read a JSON file written by :meth:`to_json` (or by hand; grouped or flat)."""
        with open(path, encoding="utf-8") as fh:
            try:
                data = json.load(fh)
            except json.JSONDecodeError as exc:
                raise ValueError(f"config file {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def to_json(self, path: str) -> None:
        """Write the grouped form atomically (:func:`fsrf.runtime.io.atomic_write_text`)."""
        from fsrf.runtime.io import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_dict(grouped=True), indent=2) + "\n")

    def replace(self, **changes: Any) -> "FSRFConfig":
        """A copy with ``changes`` applied (validated; version-1 pooling keywords work too)."""
        return type(self)(**{**dataclasses.asdict(self), **changes})


def _accept_version_1_keywords(init: Callable[..., None]) -> Callable[..., None]:
    # A wrapper, not InitVars: dataclasses.replace reads InitVars back from the instance, which
    # would feed the derived pooling properties in again over a new ``pooling``.
    @functools.wraps(init)
    def __init__(self, *args: Any, config_version: Any = None, pool_norm: Any = None, pool_shrink: Any = None,
                 private_pool: Any = None, extra: Any = None, **kwargs: Any) -> None:
        if config_version is not None and config_version != CONFIG_VERSION:
            raise ValueError(f"FSRFConfig(config_version={config_version!r}): the constructor takes version "
                             f"{CONFIG_VERSION}; read older dicts with FSRFConfig.from_saved")
        legacy = {k: v for k, v in zip(_LEGACY_POOLING, (pool_norm, pool_shrink, private_pool)) if v is not None}
        if legacy or extra is not None:
            kwargs.update(_v1_to_v2({"pooling": kwargs.get("pooling", FSRFConfig.pooling), **legacy, "extra": extra},
                                    fill_absent=False))
        init(self, *args, **kwargs)

    return __init__


FSRFConfig.__init__ = _accept_version_1_keywords(FSRFConfig.__init__)  # type: ignore[method-assign]
for _group in GROUPS:
    setattr(FSRFConfig, _group, _group_property(_group))
