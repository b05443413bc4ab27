"""Training of :class:`fsrf.FSRFModel` on an MMSA split: LNLN missingness, early stopping on
validation, an atomic checkpoint every epoch, exact resume, and DDP (``torchrun``)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from fsrf.config import FSRFConfig
from fsrf.models import FSRFModel
from fsrf.runtime.io import atomic_write_text
from fsrf.training.checkpoint import load_checkpoint, save_checkpoint

__all__ = ["TrainSettings", "fit", "load_model", "set_deterministic", "SELECTIONS"]

SELECTIONS = ("valid", "lnln-test@0.5")


@dataclass
class TrainSettings:
    """Optimisation and protocol settings of :func:`fit` (model settings live in FSRFConfig).

    ``selection``: ``"valid"`` (default) keeps the epoch with the lowest validation MAE averaged
    over ``select_rates`` (frame-drop rates applied to the valid split with the evaluation seed);
    ``"lnln-test@0.5"`` reproduces LNLN's policy of selecting on the *test* split at rate 0.5 —
    comparable with LNLN's tables but optimistic; it is recorded in every output.
    ``train_missing``: ``"lnln"`` (per-sample U(0,1) rates, half the samples complete, redrawn each
    epoch) or ``"none"``.
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
    progress: bool = True

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
    """Routes the FSRF objective through ``forward`` so DDP synchronises its gradients."""

    def __init__(self, model: FSRFModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs, masks, labels, generator):
        return self.model.training_loss(inputs, masks, labels, generator=generator)


# -- evaluation helpers used during training ---------------------------------------------------
@torch.no_grad()
def predict_split(model: FSRFModel, split, *, batch_size: int = 256, device: str = "cpu") -> np.ndarray:
    """Predictions (N,) of ``model`` on every sample of ``split`` (eval mode, no aux losses)."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, len(split), batch_size):
        b = split.batch(np.arange(start, min(start + batch_size, len(split))))
        inputs = {m: x.to(device) for m, x in b["inputs"].items()}
        masks = {m: x.to(device) for m, x in b["masks"].items()}
        out.append(model(inputs, masks).float().cpu().numpy())
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)


def _selection_score(model, data, settings: TrainSettings, device: str) -> float:
    from fsrf.missing import corrupt_split

    if settings.selection == "valid":
        split, rates = data.split("valid"), settings.select_rates
    else:
        split, rates = data.split("test"), (0.5,)
    maes = []
    for r in rates:
        sp = corrupt_split(split, rate=r, seed=settings.eval_seed) if r > 0 else split
        pred = predict_split(model, sp, batch_size=settings.eval_batch_size, device=device)
        maes.append(float(np.mean(np.abs(pred.astype(np.float64) - sp.labels.astype(np.float64)))))
    return float(np.mean(maes))


def _to_device(b: dict, device: str):
    return ({m: x.to(device) for m, x in b["inputs"].items()}, {m: x.to(device) for m, x in b["masks"].items()},
            b["labels"].to(device))


# -- the loop -----------------------------------------------------------------------------------
def fit(data, out_dir: str | os.PathLike, *, config: FSRFConfig | None = None, settings: TrainSettings | None = None,
        seed: int = 1111, dataset: str | None = None, resume: bool = False,
        log: Callable[[str], None] | None = print) -> dict[str, Any]:
    """Train one FSRFModel on ``data`` (an :class:`fsrf.data.MMSADataset`) and keep the best epoch.

    Writes to ``out_dir``: ``last.pt`` (every epoch, atomically: model, optimizer, RNG state,
    history — what ``resume=True`` continues from, losing at most the epoch in progress),
    ``best.pt`` (the selected model with its config), ``config.json`` (model config, training
    settings, seed, dataset, selection policy) and ``history.json``.

    Returns a summary dict: ``best_epoch``, ``best_score``, ``epochs_run``, ``stopped_early``,
    ``history``, ``checkpoint`` (path of best.pt).
    """
    config = config or FSRFConfig()
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

    train = data.split("train")
    dims = {m: int(d) for m, d in data.dims.items()}
    model = FSRFModel(dims, config=config).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    history: list[dict[str, float]] = []
    start_epoch, best_score, best_epoch, bad = 0, math.inf, -1, 0

    last_path, best_path = out / "last.pt", out / "best.pt"
    if resume and last_path.exists():
        ck = load_checkpoint(last_path, map_location="cpu")
        if ck.get("seed") != seed or ck.get("model_config") != config.to_dict():
            raise ValueError(f"cannot resume from {last_path}: it was written with another seed or model config "
                             f"(seed {ck.get('seed')}); use a fresh --out directory or the same settings")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        torch.set_rng_state(ck["torch_rng"])
        start_epoch = int(ck["epoch"]) + 1
        best_score, best_epoch, bad = float(ck["best_score"]), int(ck["best_epoch"]), int(ck["bad_epochs"])
        history = list(ck["history"])
        say(f"resumed from {last_path} at epoch {start_epoch}")
    elif resume:
        say(f"--resume: no {last_path} yet, starting from scratch")

    meta = {"model_config": config.to_dict(), "train": settings.to_dict(), "seed": int(seed),
            "dataset": dataset, "data_path": str(getattr(data, "path", "")), "modality_dims": dims,
            "selection": settings.selection, "eval_seed": settings.eval_seed, "world_size": world}
    if is_main:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "config.json", json.dumps(meta, indent=2))

    net: nn.Module = _LossModule(model)
    if world > 1:
        net = nn.parallel.DistributedDataParallel(net, find_unused_parameters=True)

    sampler = None
    if settings.train_missing == "lnln":
        from fsrf.missing import LNLNSampler
        sampler = LNLNSampler(train, seed=seed)

    stopped_early = False
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        tqdm = None
    for epoch in range(start_epoch, settings.epochs):
        t0 = time.perf_counter()
        split = sampler.epoch(epoch) if sampler is not None else train
        order = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed * 100003 + epoch)).numpy()
        order = order[rank::world]
        view_gen = torch.Generator().manual_seed(seed * 7919 + epoch)
        model.train()
        batches = range(0, len(order), settings.batch_size)
        bar = None
        if tqdm is not None and settings.progress and is_main:
            bar = tqdm(total=len(batches), desc=f"epoch {epoch + 1}/{settings.epochs}", leave=False, unit="batch")
        sums: dict[str, float] = {}
        n_batches = 0
        for start in batches:
            idx = order[start:start + settings.batch_size]
            if len(idx) < 2:
                continue  # batch statistics (MMD, decorrelation) need two samples
            inputs, masks, labels = _to_device(split.batch(idx), device)
            loss, parts = net(inputs, masks, labels, view_gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if settings.grad_clip > 0:
                nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
            opt.step()
            n_batches += 1
            vals = {k: float(v) for k, v in parts.items()}
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + v
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{vals['total']:.3f}", task=f"{vals['task_a']:.3f}")
        if bar is not None:
            bar.close()
        if not math.isfinite(sums.get("total", 0.0)):
            raise FloatingPointError(f"training diverged at epoch {epoch + 1} (loss {sums.get('total')}); "
                                     f"lower --lr or check the data")
        score = _selection_score(model, data, settings, device)
        row = {"epoch": epoch, **{k: v / max(n_batches, 1) for k, v in sums.items()}, "select_mae": score,
               "seconds": time.perf_counter() - t0}
        history.append(row)
        improved = score < best_score - 1e-6
        if improved:
            best_score, best_epoch, bad = score, epoch, 0
        else:
            bad += 1
        if is_main:
            state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            if improved:
                save_checkpoint({"model": state, **meta, "epoch": epoch, "best_score": best_score}, best_path)
            save_checkpoint({"model": state, "optimizer": opt.state_dict(), **meta, "epoch": epoch,
                             "best_score": best_score, "best_epoch": best_epoch, "bad_epochs": bad,
                             "history": history, "torch_rng": torch.get_rng_state()}, last_path)
            atomic_write_text(out / "history.json", json.dumps(history, indent=2))
        say(f"epoch {epoch + 1}/{settings.epochs}: loss {row.get('total', float('nan')):.4f}  "
            f"task {row.get('task_a', float('nan')):.4f}  select MAE {score:.4f}"
            f"{'  *best*' if improved else ''}  ({row['seconds']:.1f}s)")
        if world > 1:
            dist.barrier()
        if bad >= settings.patience:
            stopped_early = True
            say(f"early stop: no improvement for {settings.patience} epochs (best epoch {best_epoch + 1})")
            break
    return {"best_epoch": best_epoch, "best_score": best_score, "epochs_run": len(history),
            "stopped_early": stopped_early, "history": history, "checkpoint": str(best_path)}


def load_model(path: str | os.PathLike, device: str = "cpu") -> tuple[FSRFModel, dict[str, Any]]:
    """Rebuild the model stored in a ``best.pt``/``last.pt``; returns ``(model in eval mode, meta)``."""
    ck = load_checkpoint(path, map_location=device)
    try:
        cfg = FSRFConfig.from_dict(ck["model_config"])
        model = FSRFModel(ck["modality_dims"], config=cfg).to(device)
        model.load_state_dict(ck["model"])
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        raise ValueError(f"checkpoint {path} does not match an FSRFModel: {str(exc).splitlines()[0]}") from None
    meta = {k: v for k, v in ck.items() if k not in ("model", "optimizer", "torch_rng")}
    return model.eval(), meta
