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
from fsrf.runtime.checks import check_modality_batch
from fsrf.runtime.progress import check_progress, show_bars
from fsrf.training.curves import CURVES_NAME, METRICS_NAME, TensorBoardLog, plot_training_curves, write_metrics_csv
from fsrf.runtime.io import atomic_write_text, ensure_dir, remove_stale_temps
from fsrf.training.averaging import WeightAverage, epoch_decay
from fsrf.training.checkpoint import load_checkpoint, save_checkpoint
from fsrf.training.lock import FolderLock, lock_folder
from fsrf.training.resume import _epoch1, _identity, check_best_checkpoint, read_last_checkpoint

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
    of about one epoch, whatever the size of the data. On by default since round 10 of the research
    log (``docs/research-log/10-weight-average.md``); ``ema=False`` trains as before it.
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


@dataclass(eq=False)
class _Run:
    """One training run in progress: what the steps of :func:`_fit_locked` share.

    ``history``, ``best_score``, ``best_epoch`` and ``bad`` (epochs without improvement) are the
    selection state that ``last.pt`` stores and a resume restores.
    """

    data: Any
    out: Path
    model: nn.Module
    opt: torch.optim.Optimizer
    ident: Mapping[str, Any]
    settings: TrainSettings
    seed: int
    say: Callable[[str], None]
    device: str
    rank: int
    world: int
    avg: WeightAverage | None = None
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)
    start_epoch: int = 0
    best_score: float = math.inf
    best_epoch: int = -1
    bad: int = 0
    stopped_early: bool = False
    step_fn: Callable[..., Any] | None = None
    tb: TensorBoardLog | None = None
    sampler: Any = None
    # compilation is timed on the first step of each batch size, and logged once
    compile_s: float = 0.0
    compiled_shapes: set[int] = dataclasses.field(default_factory=set)
    compile_logged: bool = False
    # read once from the data and the model
    train: Any = dataclasses.field(init=False)
    dims: dict[str, int] = dataclasses.field(init=False)
    task: str = dataclasses.field(init=False)
    sel_key: str = dataclasses.field(init=False)
    sel_name: str = dataclasses.field(init=False)
    data_path: str = dataclasses.field(init=False)
    last_path: Path = dataclasses.field(init=False)
    best_path: Path = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.train = self.data.split("train")
        self.dims = {m: int(d) for m, d in self.data.dims.items()}
        self.task = model_task(self.model)
        self.sel_key = _select_key(self.task)
        self.sel_name = "select CE" if self.task == "classification" else "select MAE"
        self.data_path = str(getattr(self.data, "path", ""))
        self.last_path, self.best_path = self.out / "last.pt", self.out / "best.pt"

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files and prints (rank 0)."""
        return self.rank == 0


def _fit_locked(data, out: Path, model: nn.Module, opt, *, ident: Mapping[str, Any], settings: TrainSettings, seed: int,
                dataset: str | None, resume: bool, say: Callable[[str], None], device: str, rank: int,
                world: int) -> dict[str, Any]:
    """:func:`fit` once ``out`` is locked: resume, set up, train the epochs, verify the outputs."""
    run = _Run(data, out, model, opt, ident, settings, seed, say, device, rank, world)
    rebuild_reason, resumed_rng, resumed_avg = None, None, None
    if resume and run.last_path.exists():
        ck = read_last_checkpoint(out, ident=ident, settings=settings, seed=seed, dims=run.dims,
                                  data_path=run.data_path)
        rebuild_reason = check_best_checkpoint(out, ck, ident=ident, settings=settings, seed=seed, say=say)
        resumed_rng, resumed_avg = _restore(run, ck)
    elif resume:
        say(f"--resume: no {run.last_path} yet, starting from scratch")
    _set_up(run, dataset, resumed_avg)
    if rebuild_reason is not None:
        _rebuild_best(run, rebuild_reason, resumed_rng)
    _wrap_step(run)
    if settings.train_missing == "lnln":
        from fsrf.missing import LNLNSampler
        run.sampler = LNLNSampler(run.train, seed=seed)
    run.stopped_early = run.bad >= settings.patience and run.start_epoch > 0
    if run.stopped_early:
        say(f"{out} had already stopped early at epoch {run.start_epoch} (no improvement for {run.bad} epochs)")
    _train_epochs(run)
    return _finish(run)


def _restore(run: _Run, ck: Mapping[str, Any]) -> tuple[Any, Any]:
    """Load a checked ``last.pt`` into the run (weights, optimiser, torch RNG, selection state);
    returns its RNG state and weight average, which the set-up needs later."""
    run.model.load_state_dict(ck["model"])
    run.opt.load_state_dict(ck["optimizer"])
    torch.set_rng_state(ck["torch_rng"])
    resumed_rng, resumed_avg = ck["torch_rng"], ck.get("weight_average")
    run.start_epoch = int(ck["epoch"]) + 1
    run.best_score, run.best_epoch, run.bad = float(ck["best_score"]), int(ck["best_epoch"]), int(ck["bad_epochs"])
    run.history = list(ck["history"])
    run.say(f"resumed from {run.last_path} at epoch {run.start_epoch}")
    return resumed_rng, resumed_avg


def _set_up(run: _Run, dataset: str | None, resumed_avg: Mapping[str, Any] | None) -> None:
    """The weight average (restored on resume) and the run's meta, written to ``config.json``."""
    settings = run.settings
    if hasattr(run.model, "set_steps_per_epoch"):  # a warm-up counted in epochs needs their length
        run.model.set_steps_per_epoch(_steps_per_epoch(len(run.train), settings.batch_size, run.world))
    if settings.ema:
        decay = settings.ema_decay
        if decay is None:
            decay = epoch_decay(_steps_per_epoch(len(run.train), settings.batch_size, run.world))
        run.avg = WeightAverage(run.model, decay)
        if resumed_avg is not None:
            run.avg.load_state_dict(resumed_avg)
    run.meta = {**run.ident, "train": settings.to_dict(), "seed": int(run.seed),
                "dataset": dataset, "data_path": run.data_path, "modality_dims": run.dims,
                "selection": settings.selection, "eval_seed": settings.eval_seed, "world_size": run.world}
    if run.is_main:
        atomic_write_text(run.out / "config.json", json.dumps(run.meta, indent=2))


def _rebuild_best(run: _Run, reason: str, resumed_rng: torch.Tensor) -> None:
    """Restart model selection from the resumed weights: they become the best epoch so far."""
    run.best_score, selected = _score_selected(run.model, run.avg, run.data, run.settings, run.device)
    run.best_epoch, run.bad = run.start_epoch - 1, 0
    if run.is_main:
        # last.pt keeps the RNG state it was resumed with, so the next epoch draws what it would have
        _save_checkpoints(run, run.best_epoch, selected, improved=True, torch_rng=resumed_rng)
    run.say(f"{reason}: model selection restarts from {run.last_path} (epoch {run.start_epoch}, "
            f"{run.sel_name} {run.best_score:.4f})")


def _save_checkpoints(run: _Run, epoch: int, selected: Mapping[str, torch.Tensor], *, improved: bool,
                      torch_rng: torch.Tensor | None = None) -> None:
    """Write ``best.pt`` (the ``selected`` weights, only when the epoch ``improved``), then
    ``last.pt`` (everything a resume needs; ``torch_rng`` None: the current torch RNG state)."""
    state = {k: v.detach().cpu() for k, v in run.model.state_dict().items()}
    # best.pt before last.pt: a run killed between the two is recognised on resume (check_best_checkpoint)
    if improved:
        save_checkpoint({"model": selected, **run.meta, "epoch": epoch, "best_score": run.best_score}, run.best_path)
    save_checkpoint({"model": state, "optimizer": run.opt.state_dict(), **run.meta, "epoch": epoch,
                     "best_score": run.best_score, "best_epoch": run.best_epoch, "bad_epochs": run.bad,
                     "history": run.history, "torch_rng": torch.get_rng_state() if torch_rng is None else torch_rng,
                     **_avg_entry(run.avg)}, run.last_path)


def _wrap_step(run: _Run) -> None:
    """The training step: the model's objective behind DDP (several processes) and
    ``torch.compile`` (``settings.compile``); and the TensorBoard log when asked for."""
    net: nn.Module = _LossModule(run.model)
    if run.world > 1:
        net = nn.parallel.DistributedDataParallel(net, find_unused_parameters=True)
    run.step_fn = net
    run.tb = TensorBoardLog(run.out / "tensorboard") if run.settings.tensorboard and run.is_main else None
    if run.settings.compile:
        # static shapes: a run has two batch sizes at most (full and trailing), each compiled once
        run.step_fn = torch.compile(net, dynamic=False)


def _train_epochs(run: _Run) -> None:
    """Train from ``run.start_epoch`` until ``settings.epochs`` or the early stop."""
    settings = run.settings
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        tqdm = None
    for epoch in range(run.start_epoch, settings.epochs if not run.stopped_early else run.start_epoch):
        t0 = time.perf_counter()
        sums, n_batches = _train_epoch(run, epoch, tqdm)
        if settings.compile and not run.compile_logged and run.compiled_shapes:
            run.compile_logged = True
            run.say(f"torch.compile: {run.compile_s:.1f} s in the first step of each batch size "
                    f"({', '.join(str(b) for b in sorted(run.compiled_shapes))}), compilation included")
        if not math.isfinite(sums.get("total", 0.0)):
            raise FloatingPointError(f"training diverged at epoch {epoch + 1} (loss {sums.get('total')}); "
                                     f"lower --lr or check the data")
        if _end_epoch(run, epoch, sums, n_batches, t0):
            break


def _train_epoch(run: _Run, epoch: int, tqdm) -> tuple[dict[str, float], int]:
    """One pass over this rank's share of the training split; returns the summed loss parts
    (read from the device once) and the number of steps."""
    settings = run.settings
    split = run.sampler.epoch(epoch) if run.sampler is not None else run.train
    order = torch.randperm(len(split), generator=torch.Generator().manual_seed(run.seed * 100003 + epoch)).numpy()
    order = _rank_shard(order, run.rank, run.world)
    # on the training device, so that drawing the second view copies nothing to it
    view_gen = None if settings.compile else torch.Generator(device=run.device).manual_seed(run.seed * 7919 + epoch)
    run.model.train()
    batches = range(0, len(order), settings.batch_size)
    bar = None
    if tqdm is not None and show_bars(settings.progress) and run.is_main:
        bar = tqdm(total=len(batches), desc=f"epoch {epoch + 1}/{settings.epochs}", leave=False, unit="batch")
    # summed on the device and read once per epoch: no host sync per batch
    sums: dict[str, torch.Tensor] = {}
    n_batches = 0
    for start in batches:
        idx = order[start:start + settings.batch_size]
        if len(idx) < 2:
            continue  # batch statistics (MMD, decorrelation) need two samples
        parts = _train_batch(run, split, idx, view_gen)
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
    return _read_sums(sums), n_batches


def _train_batch(run: _Run, split, idx, view_gen: torch.Generator | None) -> dict[str, torch.Tensor]:
    """One optimiser step on the samples ``idx`` of ``split``; returns the loss parts (on the device)."""
    settings = run.settings
    inputs, masks, labels = _to_device(split.batch(idx), run.device, run.task)
    timed = settings.compile and len(idx) not in run.compiled_shapes
    if settings.compile:
        _check_batch_finite(inputs, labels, masks)
        if timed:
            _sync(run.device)
            t_c = time.perf_counter()
    loss, parts = run.step_fn(inputs, masks, labels, view_gen)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if settings.grad_clip > 0:
        nn.utils.clip_grad_norm_(run.model.parameters(), settings.grad_clip)
    run.opt.step()
    if run.avg is not None:
        run.avg.update(run.model)
    if timed:
        _sync(run.device)
        run.compile_s += time.perf_counter() - t_c
        run.compiled_shapes.add(len(idx))
    return parts


def _end_epoch(run: _Run, epoch: int, sums: Mapping[str, float], n_batches: int, t0: float) -> bool:
    """Score the epoch's weights, keep the best, save and log; True when training stops early."""
    settings = run.settings
    score, selected = _score_selected(run.model, run.avg, run.data, settings, run.device)
    if not math.isfinite(score):
        raise FloatingPointError(f"the selection score ({run.sel_name}) is {score} at epoch {epoch + 1}: the model "
                                 f"predicts non-finite values; lower --lr or check the data")
    row = {"epoch": epoch, **{k: v / max(n_batches, 1) for k, v in sums.items()}, run.sel_key: score,
           "lr": float(run.opt.param_groups[0]["lr"]), "seconds": time.perf_counter() - t0}
    run.history.append(row)
    improved = score < run.best_score - 1e-6
    if improved:
        run.best_score, run.best_epoch, run.bad = score, epoch, 0
    else:
        run.bad += 1
    if run.is_main:
        _save_checkpoints(run, epoch, selected, improved=improved)
        atomic_write_text(run.out / "history.json", json.dumps(run.history, indent=2))
        write_metrics_csv(run.history, run.out / METRICS_NAME)
        if run.tb is not None:
            run.tb.log_epoch(row)
    run.say(f"epoch {epoch + 1}/{settings.epochs}: loss {row.get('total', float('nan')):.4f}  "
            f"task {row.get('task_a', float('nan')):.4f}  {run.sel_name} {score:.4f}"
            f"{'  *best*' if improved else ''}  ({row['seconds']:.1f}s)")
    if run.world > 1:
        dist.barrier()
    if run.bad >= settings.patience:
        run.stopped_early = True
        run.say(f"early stop: no improvement for {settings.patience} epochs (best epoch {run.best_epoch + 1})")
        return True
    return False


def _finish(run: _Run) -> dict[str, Any]:
    """Close the logs, plot the curves, check the checkpoints load; returns :func:`fit`'s summary."""
    if run.tb is not None:
        run.tb.close()
    if run.is_main and run.history:
        plot_training_curves(run.history, run.out / CURVES_NAME, best_epoch=run.best_epoch,
                             title=f"{run.ident.get('model_name') or 'model'}, seed {run.seed}")
    if run.is_main:
        _verify_outputs(run)
    result = {"best_epoch": run.best_epoch, "best_score": run.best_score, "epochs_run": len(run.history),
              "stopped_early": run.stopped_early, "history": run.history, "checkpoint": str(run.best_path)}
    if run.settings.compile:
        result["compile_seconds"] = run.compile_s
    return result


def _verify_outputs(run: _Run) -> None:
    """Load ``best.pt`` and ``last.pt`` back, and check that ``best.pt`` holds the best epoch, so
    that the summary :func:`fit` returns never points at a file that does not load."""
    for path in (run.best_path, run.last_path):
        try:
            ck_end = load_checkpoint(path, map_location="cpu")
        except (FileNotFoundError, ValueError) as exc:
            raise ValueError(f"training in {run.out} ended but a checkpoint it reports does not load: {exc}") from None
        if path == run.best_path and ck_end.get("epoch") != run.best_epoch:
            raise ValueError(f"training in {run.out} ended with best epoch {run.best_epoch + 1}, but {run.best_path} "
                             f"holds epoch {_epoch1(ck_end.get('epoch'))} (a resumed epoch did not repeat exactly); "
                             f"delete {run.best_path} and rerun with --resume to select again from {run.last_path}")


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


def _check_batch_finite(inputs: Mapping[str, torch.Tensor], labels: torch.Tensor, masks=None) -> None:
    """The batch check that a compiled step leaves out (the layer's, with the labels), once per
    batch before it: one host sync; NaN/Inf switched with :func:`fsrf.set_check_finite`."""
    check_modality_batch(inputs, masks, labels=labels)


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
