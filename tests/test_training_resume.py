"""The checks of fsrf.training.resume on hand-made checkpoints: which last.pt a run may go on from,
and when best.pt is kept, rebuilt or refused (fit's own resume is tested in test_reliability)."""

import math

import pytest
import torch

from fsrf.training.checkpoint import save_checkpoint
from fsrf.training.resume import check_best_checkpoint, read_last_checkpoint
from fsrf.training.trainer import TrainSettings

IDENT = {"model_kind": "late_fusion", "model_name": "lf", "model_config": {"d_model": 8}}
DIMS = {"text": 4, "audio": 3}


def _last(out, *, epoch=1, best_epoch=1, best_score=1.0, seed=5, ema=False, dims=DIMS, **extra):
    ck = {"model": {"w": torch.zeros(1)}, **IDENT, "modality_dims": dict(dims), "seed": seed,
          "train": {"ema": ema}, "epoch": epoch, "best_epoch": best_epoch, "best_score": best_score, **extra}
    save_checkpoint(ck, out / "last.pt")
    return read_last_checkpoint(out, ident=IDENT, settings=TrainSettings(ema=ema), seed=5, dims=DIMS,
                                data_path="d.pkl")


def _best(out, *, epoch, best_score=1.0, seed=5):
    save_checkpoint({"model": {"w": torch.zeros(1)}, **IDENT, "modality_dims": DIMS, "seed": seed,
                     "epoch": epoch, "best_score": best_score}, out / "best.pt")


def _check(out, ck, epochs=3, logs=None):
    return check_best_checkpoint(out, ck, ident=IDENT, settings=TrainSettings(epochs=epochs, ema=False), seed=5,
                                 say=(logs if logs is not None else []).append)


def test_last_of_this_run_is_read(tmp_path):
    ck = _last(tmp_path)
    assert ck["epoch"] == 1 and ck["seed"] == 5


@pytest.mark.parametrize("kw, match", [
    (dict(seed=6), "another seed or model config"),
    (dict(dims={"text": 4, "audio": 2}), r"feature dims .* but d\.pkl has"),
])
def test_last_of_another_run_is_refused(tmp_path, kw, match):
    with pytest.raises(ValueError, match=match):
        _last(tmp_path, **kw)


def test_last_with_another_weight_average_setting_is_refused(tmp_path):
    _last(tmp_path, ema=True, weight_average={"decay": 0.9})
    with pytest.raises(ValueError, match="ema=True and this run asks ema=False"):
        read_last_checkpoint(tmp_path, ident=IDENT, settings=TrainSettings(ema=False), seed=5, dims=DIMS,
                             data_path="")


def test_a_damaged_last_says_what_to_do(tmp_path):
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"cannot resume: .* delete .*last\.pt to train"):
        read_last_checkpoint(tmp_path, ident=IDENT, settings=TrainSettings(ema=False), seed=5, dims=DIMS,
                             data_path="")


def test_the_best_recorded_in_last_is_kept(tmp_path):
    ck = _last(tmp_path, epoch=2, best_epoch=1)
    _best(tmp_path, epoch=1)
    assert _check(tmp_path, ck) is None


def test_no_best_epoch_yet_needs_no_best(tmp_path):
    assert _check(tmp_path, _last(tmp_path, best_epoch=-1, best_score=math.inf)) is None


def test_a_removed_best_restarts_selection(tmp_path):
    assert _check(tmp_path, _last(tmp_path)).endswith("best.pt was missing")


def test_the_best_of_an_interrupted_epoch_is_trained_again(tmp_path):
    ck = _last(tmp_path, epoch=1, best_epoch=1, best_score=1.0)
    _best(tmp_path, epoch=2, best_score=0.5)  # epoch 3 (0-based 2) saved best.pt, then was killed
    logs = []
    assert _check(tmp_path, ck, epochs=4, logs=logs) is None
    assert len(logs) == 1 and "interrupted before" in logs[0]
    # the same file, when that epoch lies beyond the run: selection restarts from last.pt
    assert "beyond the 2 epochs" in _check(tmp_path, ck, epochs=2)


@pytest.mark.parametrize("kw", [dict(epoch=0), dict(epoch=1, seed=6)])
def test_a_best_of_another_run_is_refused(tmp_path, kw):
    ck = _last(tmp_path, epoch=2, best_epoch=1)
    _best(tmp_path, **kw)
    with pytest.raises(ValueError, match="is not the best model recorded in"):
        _check(tmp_path, ck)
