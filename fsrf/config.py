"""``FSRFConfig``: every width, loss weight and switch of the method (docs/FSRF_METHOD.md)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = ["FSRFConfig", "AUX_WEIGHTS", "FIRST_RECONSTRUCTION", "KL_STOP_GRAD", "PRIVATE_POOLS", "REDUCTIONS", "RECOVERY_LOSSES",
           "SHARED_POOLS", "TASK_LOSSES"]

KL_STOP_GRAD = ("both", "none", "richer")
TASK_LOSSES = ("l1", "mse")
REDUCTIONS = ("sum", "mean")
RECOVERY_LOSSES = ("view", "view+loo")
SHARED_POOLS = ("mean", "gated")
PRIVATE_POOLS = ("same", "shrink", "wiener")

#: The weight field of each auxiliary term of the objective (docs/FSRF_METHOD.md §4), in the order
#: they are summed. The only place a term meets its weight: :meth:`FSRFConfig.weighted_aux` is used
#: by the layer's ``aux_loss`` and by :class:`fsrf.FSRFObjective`. The leave-one-out recovery
#: (``loo``) shares ``w_recov`` with the view-to-view recovery.
AUX_WEIGHTS: dict[str, str] = {
    "orth": "w_orth", "dered": "w_dered", "hom": "w_hom", "rec": "w_rec",
    "kl": "w_kl", "dist": "w_dist", "recov": "w_recov", "loo": "w_recov", "pred": "w_pred",
}

#: The fields whose defaults changed after the multi-seed studies of docs/FSRF_METHOD.md §7, with
#: the values of the first reconstruction. A saved config that lacks one of them was written
#: before the change and is read with these values (:meth:`FSRFConfig.from_saved`).
FIRST_RECONSTRUCTION: dict[str, Any] = {
    "rec_detach_target": False,
    "orth_reduction": "sum",
    "hom_reduction": "sum",
    "mmd_normalize": False,
    "aux_warmup_steps": 0,
    "modality_dropout": 0.0,
    "fusion_availability": False,
    "recovery_loss": "view",
    "pool_norm": False,
    "shared_pool": "mean",
    "private_pool": "same",
    "dequantize_labels": False,
    "w_pred": 0.0,
}


@dataclass
class FSRFConfig:
    """Configuration of :class:`fsrf.FSRFLayer` and :class:`fsrf.FSRFModel`.

    Defaults follow ``docs/FSRF_METHOD.md``; each field not fixed by the paper's abstract is a
    switch of our reconstruction (§6 there), so a correction from the paper text lands here.

    Architecture
        ``d_model`` (d), ``num_heads``, ``d_factor`` (d_f, default d), ``d_out`` (width of the
        fused output, default d), ``conv_kernel`` (temporal kernel of the input projection:
        an int for every modality or ``{name: int}``; 1 means a ``Linear``), ``encoder_layers``
        (0: one masked cross-modal attention per modality with a residual, the encoder of every
        round so far; L > 0: per modality L pre-norm transformer blocks of masked temporal
        self-attention, then L cross-modal blocks over the other modalities, each with a
        feed-forward network — the depth of the lineage's encoders, MulT's among them),
        ``dropout`` (inside the MLPs and the blocks), ``attn_dropout``.
    Ablation switches
        ``dhf`` (factorization and its constraints; ``False`` fuses the plain pooled features),
        ``das`` (two-view self-distillation in :meth:`FSRFModel.training_loss`),
        ``recovery`` (substitute recovered parts for missing modalities).
    Loss weights (§4 total)
        ``w_orth`` 0.3, ``w_dered`` 0.01, ``w_hom`` 1.0, ``w_rec`` 1.0, ``w_kl`` 0.5,
        ``w_dist`` 0.5, ``w_recov`` 1.0, ``w_pred`` 0.5 (prediction distillation: view B's
        prediction is pulled towards view A's detached prediction by the task loss's own form, L1
        or MSE, so the sparser view learns from the model's estimate on the richer one as well as
        from the label; default since §7's eleventh round; 0 = off, as before it).
    Loss details
        ``detach_norm``/``orth_eps`` (MISA DiffLoss), ``decor_eps``, ``mmd_num_kernels``,
        ``mmd_kernel_mul``, ``mmd_unbiased``, ``kl_temperature`` (T = 2), ``kl_stop_grad``
        (``"both"``: the target side of each KL direction is detached; ``"none"``: nothing is
        detached; ``"richer"``: only the richer view A is detached, so knowledge flows A → B in
        both directions), ``task_loss`` (``"l1"`` or ``"mse"``), ``dequantize_labels`` (in
        training, the task loss sees each label plus ``U(-h, h)`` noise, ``h`` half the step of the
        labels' annotation grid as estimated from the training labels,
        :class:`fsrf.models.label_grid.LabelDequantizer`; default, §7 eighth round; ``False``: the
        labels as given).
    Optimisation balance (§7; ``FSRFConfig.first_reconstruction()`` restores the first values)
        ``rec_detach_target`` (reconstruct a detached ``z_m``, default ``True``),
        ``orth_reduction`` / ``hom_reduction`` (``"mean"``: average the orthogonality pair terms
        and the homogeneous MMD pairs instead of summing them), ``mmd_normalize`` (divide each
        MMD by ``mmd_num_kernels``, so it lies in [0, 2] whatever the number of bandwidths),
        ``aux_warmup_steps`` (ramp every auxiliary weight linearly from 0 over this many
        training steps of :class:`fsrf.FSRFModel`; 0 = off; default 200), ``aux_warmup_epochs``
        (> 0: the ramp lasts this many epochs instead, whatever the data's size; the trainer
        tells the model the steps of an epoch, :meth:`fsrf.FSRFObjective.set_steps_per_epoch`;
        0, the default: ``aux_warmup_steps`` holds; issue 29's matrix decides between them).
    Whole-modality robustness (§7)
        ``modality_dropout`` (probability that a training sample of view A loses one or two
        whole modalities, as the evaluation's patterns do; default 0.3),
        ``fusion_availability`` (the availability flags ``a_m`` enter the fusion MLP),
        ``pool_norm`` (a LayerNorm on each pooled ``z_m``, so that a mean over few observed frames,
        which is noisier, does not come out larger and push the predictions outwards; default),
        ``pool_shrink`` (another answer to the same problem, not the default: each masked mean is
        shrunk towards the running mean of the pooled features by the James-Stein estimate of its
        noise share, :class:`fsrf.nn.ShrinkagePool`, so a well-observed mean keeps its size; needs
        ``pool_norm=False``; both off: the plain masked mean),
        ``private_pool`` (what the heterogeneous and noise encoders read: ``"shrink"``, the masked
        mean shrunk as ``pool_shrink`` shrinks it, while the homogeneous encoder and the
        reconstruction target keep ``z_m``, default; ``"wiener"``, the masked mean shrunk feature by
        feature by the posterior-mean factor of the population's running signal and noise variances,
        :class:`fsrf.nn.WienerPool` (a trial, not the default); or ``"same"``, the ``z_m`` the
        homogeneous encoder reads; no effect without ``dhf``, or with ``pool_shrink``, where every encoder reads
        the shrunk mean already),
        ``shared_pool`` (how the homogeneous codes of the available modalities combine into
        ``s̄``: ``"mean"``, or ``"gated"``, weights from a softmax over them of a learned score of
        each code, zero-initialised so that training starts from the mean; default),
        ``recovery_loss`` (``"view"``: recovery learns from the second view only;
        ``"view+loo"``: also leave-one-out — every available modality's heterogeneous part is
        predicted from the shared code of the others, for every pattern; default).
    Second view (DAS)
        ``view_rate`` (extra frame-drop rate; ``None`` draws one rate per sample from U(0, 1)),
        ``view_inter_prob`` (probability that a sample loses one or two whole modalities).
    Execution
        ``global_batch``: under ``torch.distributed`` (``torchrun``), compute the batch
        statistics — every MMD with its bandwidth, the KL batch mean, the centring and
        standardisation of the DHF constraints — over the rows of all processes, so that N
        processes on B/N rows each optimise what one process on B rows does (``None``, the
        default: on whenever there is more than one process; ``False``: per process, as before).
        ``backend``: ``"auto"`` (default), ``"torch"``, ``"cpp"``, ``"cuda"`` or ``"triton"``: the
        backend of every op the layer and model run (attention and every loss) where that op
        implements it; the others keep their automatic choice (see
        :meth:`fsrf.FSRFLayer.op_backend`). ``"torch"`` runs the whole model on the pure-PyTorch
        references.
    """

    d_model: int = 128
    num_heads: int = 4
    d_factor: int | None = None
    d_out: int | None = None
    conv_kernel: int | dict[str, int] = 1
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
    w_kl: float = 0.5
    w_dist: float = 0.5
    w_recov: float = 1.0
    w_pred: float = 0.5

    detach_norm: bool = True
    orth_eps: float = 1e-6
    decor_eps: float = 1e-5
    mmd_num_kernels: int = 5
    mmd_kernel_mul: float = 2.0
    mmd_unbiased: bool = False
    kl_temperature: float = 2.0
    kl_stop_grad: str = "both"
    task_loss: str = "l1"
    dequantize_labels: bool = True

    view_rate: float | None = None
    view_inter_prob: float = 0.3

    rec_detach_target: bool = True
    orth_reduction: str = "mean"
    hom_reduction: str = "mean"
    mmd_normalize: bool = True
    aux_warmup_steps: int = 200
    aux_warmup_epochs: float = 0.0
    modality_dropout: float = 0.3
    fusion_availability: bool = True
    recovery_loss: str = "view+loo"
    pool_norm: bool = True
    shared_pool: str = "gated"
    pool_shrink: bool = False
    private_pool: str = "shrink"

    global_batch: bool | None = None
    backend: str = "auto"
    extra: dict[str, Any] = field(default_factory=dict)

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
                     "mmd_normalize", "fusion_availability", "pool_norm", "pool_shrink", "dequantize_labels"):
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
        if self.pool_norm and self.pool_shrink:
            raise ValueError("FSRFConfig.pool_norm and FSRFConfig.pool_shrink are two ways to pool; set at most one "
                             "(pool_shrink=True needs pool_norm=False); got both True")
        if self.private_pool not in PRIVATE_POOLS:
            raise ValueError(f"FSRFConfig.private_pool must be one of {PRIVATE_POOLS}; got {self.private_pool!r}")
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
    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "FSRFConfig":
        """Build from a dict, rejecting unknown keys with the list of valid ones."""
        if not isinstance(d, Mapping):
            raise TypeError(f"config must be a mapping; got {type(d).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"unknown FSRFConfig field(s) {unknown}; valid fields: {sorted(names)}")
        return cls(**dict(d))

    @classmethod
    def from_saved(cls, d: Mapping[str, Any]) -> "FSRFConfig":
        """Like :meth:`from_dict`, for a config saved with a model: a field of
        :data:`FIRST_RECONSTRUCTION` that the saved dict lacks was written before its default
        changed, so it takes its first value and an old checkpoint behaves as it was trained."""
        if not isinstance(d, Mapping):
            raise TypeError(f"config must be a mapping; got {type(d).__name__}")
        return cls.from_dict({**{k: v for k, v in FIRST_RECONSTRUCTION.items() if k not in d}, **d})

    @classmethod
    def first_reconstruction(cls, **changes: Any) -> "FSRFConfig":
        """The method as first reconstructed, before the study of docs/FSRF_METHOD.md §7
        (:data:`FIRST_RECONSTRUCTION`), with ``changes`` applied."""
        return cls(**{**FIRST_RECONSTRUCTION, **changes})

    @classmethod
    def from_json(cls, path: str) -> "FSRFConfig":
        """Read a JSON file written by :meth:`to_json` (or by hand)."""
        with open(path, encoding="utf-8") as fh:
            try:
                data = json.load(fh)
            except json.JSONDecodeError as exc:
                raise ValueError(f"config file {path} is not valid JSON: {exc}") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "FSRFConfig":
        """A copy with ``changes`` applied (validated)."""
        return dataclasses.replace(self, **changes)
