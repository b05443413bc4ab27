"""Training of any model (:class:`fsrf.FSRFModel` by default) on an MMSA split: LNLN missingness, early stopping on
validation, an atomic checkpoint every epoch, exact resume, and DDP (``torchrun``)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from fsrf.config import FSRFConfig
from fsrf.models import ModelSpec, rebuild_model
from fsrf.runtime.progress import check_progress, show_bars
from fsrf.training.curves import CURVES_NAME, METRICS_NAME, TensorBoardLog, plot_training_curves, write_metrics_csv
from fsrf.runtime.io import atomic_write_text, ensure_dir, remove_stale_temps
from fsrf.training.averaging import WeightAverage, epoch_decay
from fsrf.training.checkpoint import load_checkpoint, save_checkpoint
from fsrf.training.lock import FolderLock, lock_folder

__all__ = ["TrainSettings", "fit", "load_model", "load_weights", "set_deterministic", "SELECTIONS", "model_task"]

SELECTIONS = ("valid", "lnln-test@0.5")

#: The progress bar's loss is read back from the device (a host sync) once per this many batches.
BAR_EVERY = 20


@dataclass
class TrainSettings:
    """Optimisation and protocol settings of :func:`fit` (model settings live in FSRFConfig).

    ``selection``: ``"valid"`` (default) keeps the epoch with the lowest validation MAE averaged
    over ``select_rates`` (frame-drop rates applied to the valid split with the evaluation seed);
    ``"lnln-test@0.5"`` reproduces LNLN's policy of selecting on the *test* split at rate 0.5 —
    comparable with LNLN's tables but optimistic; it is recorded in every output.
    ``train_missing``: ``"lnln"`` (per-sample U(0,1) rates, half the samples complete, redrawn each
    epoch) or ``"none"``.
    ``compile``: run the training step (the model's objective, forward and backward) through
    ``torch.compile``; the compilation time is logged once, after the first epoch, and returned as
    ``compile_seconds``. A compiled FSRF step is one graph without host syncs. Its second view is
    drawn from torch's default generator of the device (a ``torch.Generator`` cannot enter a
    compiled graph), so runs are reproducible per seed but differ from eager ones. The NaN/Inf
    check of the inputs, which the compiled graph leaves out, runs on each batch before the step
    (one host sync; off with ``fsrf.set_check_finite(False)`` or ``FSRF_CHECK_FINITE=0``).
    ``tensorboard``: also write each epoch's metrics as TensorBoard scalars to
    ``<run>/tensorboard`` (needs the ``tensorboard`` package; ``metrics.csv`` is written always).
    ``ema``: select, save (``best.pt``) and evaluate the exponential moving average of the
    parameters (:class:`fsrf.training.averaging.WeightAverage`) instead of the weights after the
    epoch's last step; ``last.pt`` keeps the live weights and the average, so a resumed run goes on
    exactly. ``ema_decay``: its decay; ``None`` (default) is ``1 − 1/(steps per epoch)``, a memory
    of about one epoch, whatever the size of the data. On by default since the tenth round of
    ``docs/FSRF_METHOD.md`` §7; ``ema=False`` trains as before it.
    ``progress``: a progress bar per epoch (``None``, the default: only when stderr is a
    terminal, :func:`fsrf.runtime.progress.show_bars`); its loss is read from the device every
    :data:`BAR_EVERY` batches (the values of an epoch are summed on the device and read once).
    """

    epochs: int = 30
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    grad_clip: float = 1.0
    patience: int = 6
    selection: str = "valid"
    select_rates: tuple[float, ...] = (0.0, 0.5)
    train_missing: str = "lnln"
    eval_seed: int = 1111
    eval_batch_size: int = 256
    device: str = "cpu"
    deterministic: bool = True
    progress: bool | None = None
    compile: bool = False
    tensorboard: bool = False
    ema: bool = True
    ema_decay: float | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "patience", "eval_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int; got {v!r}")
        for name in ("lr",):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not v > 0 or not math.isfinite(v):
                raise ValueError(f"{name} must be a positive number; got {v!r}")
        if not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0; got {self.weight_decay!r}")
        if self.selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {SELECTIONS}; got {self.selection!r}")
        if self.train_missing not in ("lnln", "none"):
            raise ValueError(f"train_missing must be 'lnln' or 'none'; got {self.train_missing!r}")
        check_progress(self.progress)
        if not isinstance(self.tensorboard, bool):
            raise TypeError(f"tensorboard must be a bool; got {type(self.tensorboard).__name__} {self.tensorboard!r}")
        if not isinstance(self.ema, bool):
            raise TypeError(f"ema must be a bool; got {type(self.ema).__name__} {self.ema!r}")
        if self.ema_decay is not None and (isinstance(self.ema_decay, bool)
                                           or not isinstance(self.ema_decay, (int, float))
                                           or not 0.0 <= self.ema_decay < 1.0):
            raise ValueError(f"ema_decay must be None or a number in [0, 1); got {self.ema_decay!r}")
        if not isinstance(self.compile, bool):
            raise TypeError(f"compile must be a bool; got {type(self.compile).__name__} {self.compile!r}")
        self.select_rates = tuple(float(r) for r in self.select_rates)
        if not self.select_rates or any(not 0.0 <= r <= 1.0 for r in self.select_rates):
            raise ValueError(f"select_rates must be rates in [0, 1]; got {self.select_rates!r}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        d = dataclasses.asdict(self)
        d["select_rates"] = list(self.select_rates)
        return d


def set_deterministic(seed: int) -> None:
    """Seed torch and make its kernels deterministic (MMSA's flags; CUBLAS workspace on CUDA)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


# -- distributed helpers ---------------------------------------------------------------------
def _dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed(device: str) -> tuple[int, int, str]:
    """Initialise torch.distributed from torchrun's environment (``gloo`` on CPU, ``nccl`` on CUDA).

    Returns ``(rank, world_size, device)``; without ``WORLD_SIZE`` > 1 nothing is initialised.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
    rank = dist.get_rank()
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = f"cuda:{local}"
    return rank, dist.get_world_size(), device


class _LossModule(nn.Module):
    """Routes the model's objective through ``forward`` so DDP synchronises its gradients.

    A model with ``training_loss(inputs, masks, labels, generator=None)`` uses it (returning
    ``(loss, parts)`` or just ``loss``); any other model is trained on the L1 loss of its
    predictions, MMSA's regression objective, or on the cross-entropy of its logits when it is a
    classifier (:func:`model_task`).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs, masks, labels, generator):
        fn = getattr(self.model, "training_loss", None)
        if fn is None:
            out = self.model(inputs, masks).float()
            if model_task(self.model) == "classification":
                loss = F.cross_entropy(out, labels)
            else:
                loss = F.l1_loss(out, labels.float())
            return loss, {"task_a": loss.detach(), "total": loss.detach()}
        out = fn(inputs, masks, labels, generator=generator)
        loss, parts = out if isinstance(out, tuple) else (out, {})
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise TypeError(f"{type(self.model).__name__}.training_loss must return a 0-dim loss tensor (or "
                            f"(loss, parts)); got {type(loss).__name__}")
        parts = dict(parts)
        parts.setdefault("total", loss.detach())
        return loss, parts


def _model_spec(config: FSRFConfig | None, model: ModelSpec | None) -> ModelSpec:
    if model is not None and config is not None:
        raise ValueError("give fit either config= (an FSRFModel) or model= (any ModelSpec), not both")
    if model is None:
        return ModelSpec("FSRF", kind="fsrf", kwargs=(config or FSRFConfig()).to_dict())
    if not isinstance(model, ModelSpec):
        raise TypeError(f"model must be an fsrf.models.ModelSpec; got {type(model).__name__}")
    return model


def _identity(spec: ModelSpec) -> dict[str, Any]:
    """What a checkpoint records to tell which model wrote it (kind and kwargs, or the name of a
    user-built model)."""
    if spec.kind is None:
        return {"model_kind": None, "model_name": spec.name, "model_config": {}}
    return {"model_kind": spec.kind, "model_name": spec.name, "model_config": dict(spec.kwargs)}


def _same_model(ck: Mapping[str, Any], ident: Mapping[str, Any]) -> bool:
    kind = ck.get("model_kind", "fsrf")  # checkpoints older than the model registry held FSRF only
    if kind != ident["model_kind"]:
        return False
    if kind is None:
        return ck.get("model_name") == ident["model_name"]
    saved, asked = ck.get("model_config"), ident["model_config"]
    if kind == "fsrf" and isinstance(saved, Mapping):
        # a config saved before a field existed holds the value it had then (FSRFConfig.from_saved):
        # a run of an older fsrf resumes, or is evaluated again, when it is the model asked for
        try:
            return FSRFConfig.from_saved(saved).to_dict() == FSRFConfig.from_saved(asked).to_dict()
        except (TypeError, ValueError):
            return False
    return saved == asked


# -- evaluation helpers used during training ---------------------------------------------------
@torch.no_grad()
def predict_split(model: nn.Module, split, *, batch_size: int = 256, device: str = "cpu",
                  on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """Predictions (N,) — (N, C) logits for a classifier — of ``model`` on every sample of ``split``
    (eval mode, no aux losses); ``on_batch(n)`` is called after each batch of ``n`` samples."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(split), batch_size):
        b = split.batch(np.arange(start, min(start + batch_size, len(split))))
        inputs = {m: x.to(device) for m, x in b["inputs"].items()}
        masks = {m: x.to(device) for m, x in b["masks"].items()}
        out.append(model(inputs, masks).float().cpu().numpy())
        if on_batch is not None:
            on_batch(len(b["index"]))
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def model_task(model: nn.Module) -> str:
    """``"regression"`` or ``"classification"``: the model's ``task`` attribute
    (:class:`fsrf.FSRFObjective` has one), regression for a model without one."""
    task = getattr(model, "task", "regression")
    if task not in ("regression", "classification"):
        raise ValueError(f"{type(model).__name__}.task must be 'regression' or 'classification'; got {task!r}")
    return task


def _select_key(task: str) -> str:
    return "select_ce" if task == "classification" else "select_mae"


def _selection_score(model, data, settings: TrainSettings, device: str) -> float:
    """Validation MAE (regression) or mean cross-entropy of the logits (classification), averaged
    over ``settings.select_rates``: lower is better."""
    from fsrf.missing import corrupt_split

    if settings.selection == "valid":
        split, rates = data.split("valid"), settings.select_rates
    else:
        split, rates = data.split("test"), (0.5,)
    task = model_task(model)
    scores = []
    for r in rates:
        sp = corrupt_split(split, rate=r, seed=settings.eval_seed) if r > 0 else split
        pred = predict_split(model, sp, batch_size=settings.eval_batch_size, device=device).astype(np.float64)
        if task == "classification":
            # log-sum-exp with the row maximum taken out: exact for any finite logits
            top = pred.max(axis=1, keepdims=True)
            lse = top[:, 0] + np.log(np.exp(pred - top).sum(axis=1))
            scores.append(float(np.mean(lse - pred[np.arange(len(pred)), sp.class_labels])))
        else:
            scores.append(float(np.mean(np.abs(pred - sp.labels.astype(np.float64)))))
    return float(np.mean(scores))


def check_trainable(data, settings: TrainSettings, world_size: int = 1, task: str = "regression") -> None:
    """Refuse data that :func:`fit` cannot train on, naming the file and the split.

    The train split needs two samples per batch on every process (MMD and decorrelation are batch
    statistics); the split the model is selected on (``valid``, or ``test`` for
    ``selection="lnln-test@0.5"``) needs at least one. :func:`fsrf.data.load_mmsa` itself accepts
    empty splits, so that a file can still be described or evaluated on the splits it has.
    """
    source = getattr(data, "path", None) or "the data"
    need = 2 * world_size
    n_train = len(data.split("train"))
    if n_train < need:
        per = f" (two per batch on each of {world_size} processes)" if world_size > 1 else " (two per batch)"
        raise ValueError(f"{source}: split 'train' has {n_train} sample(s); training needs at least {need}{per}")
    sel = "valid" if settings.selection == "valid" else "test"
    if len(data.split(sel)) == 0:
        raise ValueError(f"{source}: split '{sel}' has 0 samples; model selection (selection="
                         f"{settings.selection!r}) needs at least one")
    if task == "classification":
        for name in ("train", sel):
            if data.split(name).class_labels is None:
                raise ValueError(f"{source}: split '{name}' has no usable classification_labels (non-negative "
                                 f"integer class indices); a classifier needs them (fsrf make-synthetic --classes C "
                                 f"writes a class-labelled file)")


def _load_for_resume(path: Path, fix: str) -> dict[str, Any]:
    try:
        return load_checkpoint(path, map_location="cpu")
    except ValueError as exc:
        raise ValueError(f"cannot resume: {exc}; {fix}") from None


def _to_device(b: dict, device: str, task: str = "regression"):
    labels = b["class_labels"] if task == "classification" else b["labels"]
    return ({m: x.to(device) for m, x in b["inputs"].items()}, {m: x.to(device) for m, x in b["masks"].items()},
            labels.to(device))


# -- the loop -----------------------------------------------------------------------------------
def fit(data, out_dir: str | os.PathLike, *, config: FSRFConfig | None = None, settings: TrainSettings | None = None,
        seed: int = 1111, dataset: str | None = None, resume: bool = False,
        log: Callable[[str], None] | None = print, model: ModelSpec | None = None) -> dict[str, Any]:
    """Train one model on ``data`` (an :class:`fsrf.data.MMSADataset`) and keep the best epoch.

    The model is an :class:`fsrf.FSRFModel` with ``config`` (default), or any model described by
    ``model`` (an :class:`fsrf.models.ModelSpec`: a built-in kind, or your own builder); give one
    of the two. Models without a ``training_loss`` are trained on the L1 loss.

    Writes to ``out_dir``: ``last.pt`` (every epoch, atomically: model, optimizer, RNG state,
    history — what ``resume=True`` continues from, losing at most the epoch in progress),
    ``best.pt`` (the selected model with its config), ``config.json`` (model config, training
    settings, seed, dataset, selection policy), ``history.json`` and ``metrics.csv`` (every epoch:
    each loss part, the selection MAE, learning rate and time; :mod:`fsrf.training.curves`), and
    ``training_curves.png`` when the run ends.

    Returns a summary dict: ``best_epoch``, ``best_score``, ``epochs_run``, ``stopped_early``,
    ``history``, ``checkpoint`` (path of best.pt).

    Before anything is written, :func:`check_trainable` refuses a train split too small to train on
    or an empty selection split. ``out_dir`` is locked for the run (:func:`fsrf.training.lock.lock_folder`,
    rank 0 only): a second run on it fails at once naming the holder's PID, and the lock of a
    run that died is taken over. With ``resume=True`` every checkpoint the run will report is
    verified first: a damaged ``last.pt`` or ``best.pt``, or one written for other data, seed or
    config, is a ``ValueError`` that says what to do; a missing ``best.pt`` next to an intact
    ``last.pt`` (the fix for a damaged one) restarts model selection from ``last.pt``. The run
    ends by loading ``best.pt`` and ``last.pt`` back, so a returned summary always points at
    loadable files.
    """
    spec = _model_spec(config, model)
    settings = settings or TrainSettings()
    out = Path(out_dir)
    rank, world, device = init_distributed(settings.device)
    is_main = rank == 0
    say = (log if (log is not None and is_main) else (lambda s: None))
    if settings.deterministic:
        set_deterministic(seed)
    else:
        torch.manual_seed(seed)
    if settings.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {settings.device!r} requested but CUDA is not available")

    dims = {m: int(d) for m, d in data.dims.items()}
    net_model = spec.instantiate(dims).to(device)
    check_trainable(data, settings, world, task=model_task(net_model))
    opt = torch.optim.AdamW(net_model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)

    lock: FolderLock | None = None
    if is_main:
        ensure_dir(out)
        lock = lock_folder(out)
        if lock.previous:
            say(f"took over the lock of {out} from PID {lock.previous.get('pid')}, which is no longer running")
        elif not lock.held:
            say(f"warning: {out} is not locked ({lock.reason}); do not start a second run on it")
    try:
        if is_main:
            remove_stale_temps(out)
        return _fit_locked(data, out, net_model, opt, ident=_identity(spec), settings=settings, seed=seed,
                           dataset=dataset, resume=resume, say=say, device=device, rank=rank, world=world)
    finally:
        if lock is not None:
            lock.release()


def _fit_locked(data, out: Path, model: nn.Module, opt, *, ident: Mapping[str, Any], settings: TrainSettings, seed: int,
                dataset: str | None, resume: bool, say: Callable[[str], None], device: str, rank: int,
                world: int) -> dict[str, Any]:
    is_main = rank == 0
    train = data.split("train")
    dims = {m: int(d) for m, d in data.dims.items()}
    task = model_task(model)
    sel_key = _select_key(task)
    sel_name = "select CE" if task == "classification" else "select MAE"
    history: list[dict[str, float]] = []
    start_epoch, best_score, best_epoch, bad = 0, math.inf, -1, 0
    last_path, best_path = out / "last.pt", out / "best.pt"
    data_path = str(getattr(data, "path", ""))
    rebuild_best, rebuild_reason, resumed_rng, resumed_avg = False, "", None, None
    if resume and last_path.exists():
        ck = _load_for_resume(last_path, f"delete {last_path} to train {out} from scratch, "
                                         f"or use another output folder")
        ck_ema = bool(dict(ck.get("train") or {}).get("ema", False))  # runs before the switch had none
        if ck_ema != settings.ema or (ck_ema and not isinstance(ck.get("weight_average"), Mapping)):
            raise ValueError(f"cannot resume from {last_path}: it was trained with ema={ck_ema} and this run asks "
                             f"ema={settings.ema}; resume with the same setting (--no-ema turns the weight "
                             f"average off) or use a fresh --out directory")
        if ck.get("seed") != seed or not _same_model(ck, ident):
            raise ValueError(f"cannot resume from {last_path}: it was written with another seed or model config "
                             f"(seed {ck.get('seed')}); use a fresh --out directory or the same settings")
        ck_dims = {m: int(d) for m, d in dict(ck.get("modality_dims") or {}).items()}
        if ck_dims != dims:
            raise ValueError(f"cannot resume from {last_path}: it was trained on feature dims {ck_dims} "
                             f"(data {ck.get('data_path') or 'unknown'}) but {data_path or 'the data'} has {dims}; "
                             f"resume with the same data file or use a fresh --out directory")
        last_epoch, ck_best = int(ck["epoch"]), int(ck["best_epoch"])
        if ck_best >= 0 and best_path.exists():
            bk = _load_for_resume(best_path,
                                  f"{last_path} (epoch {last_epoch + 1}) is intact: delete {best_path} and rerun with "
                                  f"--resume to continue from it (model selection then restarts at epoch "
                                  f"{last_epoch + 1})")
            # best.pt is saved before last.pt, so a run killed between the two leaves the best.pt of the
            # epoch that is about to be trained again: it is rewritten when that epoch improves again
            in_flight = (bk.get("epoch") == last_epoch + 1
                         and float(bk.get("best_score", math.inf)) < float(ck["best_score"]))
            if in_flight and last_epoch + 1 >= settings.epochs:
                # that epoch lies beyond this run, and its best.pt has replaced the earlier best
                rebuild_reason = (f"{best_path} is from epoch {last_epoch + 2}, beyond the {settings.epochs} "
                                  f"epochs of this run, and replaced the earlier best")
                rebuild_best = True
            elif in_flight:
                say(f"{best_path} is from epoch {last_epoch + 2}, which was interrupted before {last_path} was saved; "
                    f"that epoch is trained again")
            if (bk.get("seed") != seed or not _same_model(bk, ident)
                    or (bk.get("epoch") != ck_best and not in_flight)):
                raise ValueError(f"cannot resume: {best_path} (epoch {_epoch1(bk.get('epoch'))}, "
                                 f"seed {bk.get('seed')}) is not the best model recorded in {last_path} "
                                 f"(epoch {ck_best + 1}, seed {seed}); "
                                 f"another run wrote into {out}: delete {best_path} and rerun with --resume to "
                                 f"restart model selection from {last_path}, or use a fresh --out directory")
        elif ck_best >= 0:
            # best.pt is written before last.pt within an epoch, so it is missing only when removed
            rebuild_best = True
            rebuild_reason = f"{best_path} was missing"
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["torch_rng"])
        resumed_rng = ck["torch_rng"]
        resumed_avg = ck.get("weight_average")
        start_epoch = last_epoch + 1
        best_score, best_epoch, bad = float(ck["best_score"]), ck_best, int(ck["bad_epochs"])
        history = list(ck["history"])
        say(f"resumed from {last_path} at epoch {start_epoch}")
    elif resume:
        say(f"--resume: no {last_path} yet, starting from scratch")

    if hasattr(model, "set_steps_per_epoch"):  # a warm-up counted in epochs needs their length
        model.set_steps_per_epoch(_steps_per_epoch(len(train), settings.batch_size, world))
    avg = None
    if settings.ema:
        decay = settings.ema_decay
        if decay is None:
            decay = epoch_decay(_steps_per_epoch(len(train), settings.batch_size, world))
        avg = WeightAverage(model, decay)
        if resumed_avg is not None:
            avg.load_state_dict(resumed_avg)
    meta = {**ident, "train": settings.to_dict(), "seed": int(seed),
            "dataset": dataset, "data_path": data_path, "modality_dims": dims,
            "selection": settings.selection, "eval_seed": settings.eval_seed, "world_size": world}
    if is_main:
        atomic_write_text(out / "config.json", json.dumps(meta, indent=2))
    if rebuild_best:
        best_score, selected = _score_selected(model, avg, data, settings, device)
        best_epoch, bad = start_epoch - 1, 0
        if is_main:
            # best.pt first, then last.pt with the new selection state: the order of every epoch
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            save_checkpoint({"model": selected, **meta, "epoch": best_epoch, "best_score": best_score}, best_path)
            save_checkpoint({"model": state, "optimizer": opt.state_dict(), **meta, "epoch": best_epoch,
                             "best_score": best_score, "best_epoch": best_epoch, "bad_epochs": bad,
                             "history": history, "torch_rng": resumed_rng, **_avg_entry(avg)}, last_path)
        say(f"{rebuild_reason}: model selection restarts from {last_path} (epoch {start_epoch}, "
            f"{sel_name} {best_score:.4f})")

    net: nn.Module = _LossModule(model)
    if world > 1:
        net = nn.parallel.DistributedDataParallel(net, find_unused_parameters=True)
    step_fn = net
    tb = TensorBoardLog(out / "tensorboard") if settings.tensorboard and is_main else None
    if settings.compile:
        # static shapes: a run has two batch sizes at most (full and trailing), each compiled once
        step_fn = torch.compile(net, dynamic=False)
    compile_s, compiled_shapes, compile_logged = 0.0, set(), False

    sampler = None
    if settings.train_missing == "lnln":
        from fsrf.missing import LNLNSampler
        sampler = LNLNSampler(train, seed=seed)

    stopped_early = bad >= settings.patience and start_epoch > 0
    if stopped_early:
        say(f"{out} had already stopped early at epoch {start_epoch} (no improvement for {bad} epochs)")
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        tqdm = None
    for epoch in range(start_epoch, settings.epochs if not stopped_early else start_epoch):
        t0 = time.perf_counter()
        split = sampler.epoch(epoch) if sampler is not None else train
        order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed * 100003 + epoch)).numpy()
        order = _rank_shard(order, rank, world)
        # on the training device, so that drawing the second view copies nothing to it
        view_gen = None if settings.compile else torch.Generator(device=device).manual_seed(seed * 7919 + epoch)
        model.train()
        batches = range(0, len(order), settings.batch_size)
        bar = None
        if tqdm is not None and show_bars(settings.progress) and is_main:
            bar = tqdm(total=len(batches), desc=f"epoch {epoch + 1}/{settings.epochs}", leave=False, unit="batch")
        # summed on the device and read once per epoch: no host sync per batch
        sums: dict[str, torch.Tensor] = {}
        n_batches = 0
        for start in batches:
            idx = order[start:start + settings.batch_size]
            if len(idx) < 2:
                continue  # batch statistics (MMD, decorrelation) need two samples
            inputs, masks, labels = _to_device(split.batch(idx), device, task)
            timed = settings.compile and len(idx) not in compiled_shapes
            if settings.compile:
                _check_batch_finite(inputs, labels)
                if timed:
                    _sync(device)
                    t_c = time.perf_counter()
            loss, parts = step_fn(inputs, masks, labels, view_gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if settings.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            opt.step()
            if avg is not None:
                avg.update(model)
            if timed:
                _sync(device)
                compile_s += time.perf_counter() - t_c
                compiled_shapes.add(len(idx))
            n_batches += 1
            for k, v in parts.items():
                v = v.detach().float()
                sums[k] = v if k not in sums else sums[k] + v
            if bar is not None:
                bar.update(1)
                if n_batches % BAR_EVERY == 1 or n_batches == len(batches):
                    bar.set_postfix(loss=f"{float(parts['total']):.3f}",
                                    task=f"{float(parts.get('task_a', parts['total'])):.3f}")
        if bar is not None:
            bar.close()
        sums = _read_sums(sums)
        if settings.compile and not compile_logged and compiled_shapes:
            compile_logged = True
            say(f"torch.compile: {compile_s:.1f} s in the first step of each batch size "
                f"({', '.join(str(b) for b in sorted(compiled_shapes))}), compilation included")
        if not math.isfinite(sums.get("total", 0.0)):
            raise FloatingPointError(f"training diverged at epoch {epoch + 1} (loss {sums.get('total')}); "
                                     f"lower --lr or check the data")
        score, selected = _score_selected(model, avg, data, settings, device)
        if not math.isfinite(score):
            raise FloatingPointError(f"the selection score ({sel_name}) is {score} at epoch {epoch + 1}: the model "
                                     f"predicts non-finite values; lower --lr or check the data")
        row = {"epoch": epoch, **{k: v / max(n_batches, 1) for k, v in sums.items()}, sel_key: score,
               "lr": float(opt.param_groups[0]["lr"]), "seconds": time.perf_counter() - t0}
        history.append(row)
        improved = score < best_score - 1e-6
        if improved:
            best_score, best_epoch, bad = score, epoch, 0
        else:
            bad += 1
        if is_main:
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            if improved:
                save_checkpoint({"model": selected, **meta, "epoch": epoch, "best_score": best_score}, best_path)
            save_checkpoint({"model": state, "optimizer": opt.state_dict(), **meta, "epoch": epoch,
                             "best_score": best_score, "best_epoch": best_epoch, "bad_epochs": bad,
                             "history": history, "torch_rng": torch.get_rng_state(), **_avg_entry(avg)},
                            last_path)
            atomic_write_text(out / "history.json", json.dumps(history, indent=2))
            write_metrics_csv(history, out / METRICS_NAME)
            if tb is not None:
                tb.log_epoch(row)
        say(f"epoch {epoch + 1}/{settings.epochs}: loss {row.get('total', float('nan')):.4f}  "
            f"task {row.get('task_a', float('nan')):.4f}  {sel_name} {score:.4f}"
            f"{'  *best*' if improved else ''}  ({row['seconds']:.1f}s)")
        if world > 1:
            dist.barrier()
        if bad >= settings.patience:
            stopped_early = True
            say(f"early stop: no improvement for {settings.patience} epochs (best epoch {best_epoch + 1})")
            break
    if tb is not None:
        tb.close()
    if is_main and history:
        plot_training_curves(history, out / CURVES_NAME, best_epoch=best_epoch,
                             title=f"{ident.get('model_name') or 'model'}, seed {seed}")
    if is_main:
        for path in (best_path, last_path):
            try:
                ck_end = load_checkpoint(path, map_location="cpu")
            except (FileNotFoundError, ValueError) as exc:
                raise ValueError(f"training in {out} ended but a checkpoint it reports does not load: {exc}") from None
            if path == best_path and ck_end.get("epoch") != best_epoch:
                raise ValueError(f"training in {out} ended with best epoch {best_epoch + 1}, but {best_path} holds "
                                 f"epoch {_epoch1(ck_end.get('epoch'))} (a resumed epoch did not repeat exactly); "
                                 f"delete {best_path} and rerun with --resume to select again from {last_path}")
    result = {"best_epoch": best_epoch, "best_score": best_score, "epochs_run": len(history),
              "stopped_early": stopped_early, "history": history, "checkpoint": str(best_path)}
    if settings.compile:
        result["compile_seconds"] = compile_s
    return result


def _steps_per_epoch(n: int, batch_size: int, world: int) -> int:
    """The optimiser steps of one epoch on each rank (:func:`_rank_shard`'s share, batches of at
    least two samples); at least 1."""
    per_rank = (n - n % world) // world if world > 1 else n
    full, rest = divmod(per_rank, batch_size)
    return max(1, full + (1 if rest >= 2 else 0))


def _score_selected(model: nn.Module, avg: WeightAverage | None, data, settings: TrainSettings,
                    device: str) -> tuple[float, dict[str, torch.Tensor]]:
    """The selection MAE of the weights that ``best.pt`` would hold (the average when there is
    one), and those weights as a CPU state dict."""
    if avg is None:
        return (_selection_score(model, data, settings, device),
                {k: v.detach().cpu() for k, v in model.state_dict().items()})
    with avg.applied(model):
        score = _selection_score(model, data, settings, device)
        # cloned: on the CPU the state dict shares storage with the parameters restored below
        return score, {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _avg_entry(avg: WeightAverage | None) -> dict[str, Any]:
    return {} if avg is None else {"weight_average": avg.state_dict()}


def _rank_shard(order, rank: int, world: int):
    """This rank's share of an epoch's sample order: every rank gets the same number of samples
    (the last ``len(order) % world`` of the permutation sit the epoch out, as with
    ``DistributedSampler(drop_last=True)``), so every rank runs the same batches with the same
    sizes and skips the same too-small trailing batch — the collectives of a step never mismatch."""
    if world > 1:
        order = order[:len(order) - len(order) % world]
    return order[rank::world]


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize(device)


def _read_sums(sums: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """The epoch's summed loss parts as floats: one read from the device for all of them."""
    if not sums:
        return {}
    values = torch.stack([v.reshape(()) for v in sums.values()]).tolist()
    return dict(zip(sums, values))


def _check_batch_finite(inputs: Mapping[str, torch.Tensor], labels: torch.Tensor) -> None:
    """The NaN/Inf check that a compiled step leaves out, once per batch before it (one host
    sync for the whole batch; switched with :func:`fsrf.set_check_finite`)."""
    from fsrf.runtime.backend import check_finite_enabled

    if not check_finite_enabled():
        return
    flags = torch.stack([torch.isfinite(x).all() for x in (*inputs.values(), labels)])
    if not bool(flags.all()):
        names = [*inputs, "labels"]
        bad = [n for n, ok in zip(names, flags.tolist()) if not ok]
        raise ValueError(f"the batch holds NaN or Inf in {bad}; clean the features first "
                         f"(MMSA audio uses -inf padding: set it to 0)")


def _epoch1(epoch) -> str:
    return str(int(epoch) + 1) if isinstance(epoch, int) else "unknown"


def load_model(path: str | os.PathLike, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model stored in a ``best.pt``/``last.pt``; returns ``(model in eval mode, meta)``.

    Works for every built-in model kind (:data:`fsrf.models.MODEL_KINDS`; checkpoints written
    before the registry are FSRF). A model built by your own ``ModelSpec.build`` cannot be
    rebuilt from a file: use :func:`load_weights` with the same spec.
    """
    ck = load_checkpoint(path, map_location=device)
    kind = ck.get("model_kind", "fsrf")
    if kind is None:
        raise ValueError(f"checkpoint {path} holds {ck.get('model_name')!r}, a model built by user code; "
                         f"rebuild it with fsrf.training.load_weights(spec, dims, path)")
    try:
        model = rebuild_model(kind, ck["modality_dims"], ck["model_config"]).to(device)
        model.load_state_dict(ck["model"])
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"checkpoint {path} does not match a {kind!r} model: {str(exc).splitlines()[0]}") from None
    meta = {k: v for k, v in ck.items() if k not in ("model", "optimizer", "torch_rng")}
    return model.eval(), meta


def load_weights(spec: ModelSpec, modality_dims: Mapping[str, int], path: str | os.PathLike,
                 device: str = "cpu") -> nn.Module:
    """A fresh model of ``spec`` with the weights of the checkpoint ``path``, in eval mode."""
    ck = load_checkpoint(path, map_location=device)
    model = spec.instantiate(modality_dims).to(device)
    try:
        model.load_state_dict(ck["model"])
    except RuntimeError as exc:
        raise ValueError(f"checkpoint {path} does not hold weights of {spec.name!r}: "
                         f"{str(exc).splitlines()[0]}") from None
    return model.eval()
