"""A run's training record (metrics.csv, training_curves.png, TensorBoard) and quiet logs."""

import csv
import io
import json
import sys

import pytest

from fsrf import cli
from _helpers import write_tiny_mmsa
from fsrf.data import load_mmsa
from fsrf.runtime.progress import show_bars
from fsrf.training import TrainSettings, fit
from fsrf.training.curves import CURVES_NAME, METRICS_NAME

CFG = {"d_model": 8, "num_heads": 2}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_mmsa(tmp_path_factory.mktemp("curves") / "tiny.pkl", n=(32, 12, 12), seed=2)


def _settings(**kw):
    return TrainSettings(**{"epochs": 2, "batch_size": 16, "progress": False, "patience": 5, **kw})


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_every_epoch_is_a_row_of_metrics_csv_and_the_curves_are_drawn(tiny, tmp_path):
    from fsrf import FSRFConfig

    out = tmp_path / "run"
    res = fit(load_mmsa(tiny), out, config=FSRFConfig(**CFG), settings=_settings(epochs=2), seed=3, log=None)
    rows = _read_csv(out / METRICS_NAME)
    history = json.loads((out / "history.json").read_text())
    assert len(rows) == len(history) == res["epochs_run"] == 2
    for row, h in zip(rows, history):
        assert int(row["epoch"]) == h["epoch"] + 1   # 1-based in the file
        for key in ("total", "task_a", "task_b", "orth", "hom", "kl", "select_mae", "seconds"):
            assert float(row[key]) == pytest.approx(h[key], rel=1e-12), key
        assert float(row["lr"]) == pytest.approx(_settings().lr)
    assert list(rows[0])[:2] == ["epoch", "total"]
    png = (out / CURVES_NAME).read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_a_resumed_run_continues_metrics_csv(tiny, tmp_path):
    from fsrf import FSRFConfig

    out = tmp_path / "run"
    data = load_mmsa(tiny)
    fit(data, out, config=FSRFConfig(**CFG), settings=_settings(epochs=1), seed=3, log=None)
    fit(data, out, config=FSRFConfig(**CFG), settings=_settings(epochs=3), seed=3, resume=True, log=None)
    assert [int(r["epoch"]) for r in _read_csv(out / METRICS_NAME)] == [1, 2, 3]


def test_a_baseline_without_training_loss_has_its_loss_column(tiny, tmp_path):
    from fsrf.models import ModelSpec

    out = tmp_path / "lf"
    fit(load_mmsa(tiny), out, model=ModelSpec("lf", kind="late_fusion", kwargs={"d_model": 8}),
        settings=_settings(epochs=1), seed=3, log=None)
    row = _read_csv(out / METRICS_NAME)[0]
    assert float(row["select_mae"]) > 0 and len(row) >= 4


def test_tensorboard_without_the_package_says_how_to_install_it(tiny, tmp_path, monkeypatch):
    from fsrf import FSRFConfig

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if not installed
    with pytest.raises(ImportError, match="pip install tensorboard"):
        fit(load_mmsa(tiny), tmp_path / "tb", config=FSRFConfig(**CFG), settings=_settings(epochs=1,
            tensorboard=True), seed=3, log=None)


def test_tensorboard_writes_an_event_file(tiny, tmp_path):
    pytest.importorskip("torch.utils.tensorboard", reason="the optional tensorboard package is not installed")
    from fsrf import FSRFConfig

    out = tmp_path / "tb"
    fit(load_mmsa(tiny), out, config=FSRFConfig(**CFG), settings=_settings(epochs=1, tensorboard=True), seed=3,
        log=None)
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))


# -- progress bars only on a terminal --------------------------------------------------------
class _Stream(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self._tty = tty

    def isatty(self):
        return self._tty


def test_bars_follow_the_terminal_unless_asked():
    assert show_bars(None, _Stream(True)) and not show_bars(None, _Stream(False))
    assert show_bars(True, _Stream(False)) and not show_bars(False, _Stream(True))
    assert not show_bars(None, object())  # a stream without isatty is no terminal
    with pytest.raises(TypeError, match="progress"):
        show_bars("yes")
    with pytest.raises(TypeError, match="progress"):
        TrainSettings(progress="yes")


def test_train_to_a_log_prints_epoch_lines_and_no_bars(tiny, tmp_path, capsys):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps(CFG))
    argv = ["train", "--data", str(tiny), "--dataset", "mosei", "--config", str(cfg), "--epochs", "2",
            "--batch-size", "16", "--seeds", "1"]
    assert cli.main([*argv, "--out", str(tmp_path / "quiet")]) == 0
    out = capsys.readouterr()
    assert "epoch 1/2" in out.out and "epoch 2/2" in out.out   # the one-line summaries
    assert "batch/s" not in out.err and "batch]" not in out.err  # captured output is not a terminal
    assert cli.main([*argv, "--progress", "--out", str(tmp_path / "bars")]) == 0
    assert "batch" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main([*argv, "--progress", "--no-progress", "--out", str(tmp_path / "both")])


def test_bad_record_arguments_are_refused_by_name(tmp_path):
    from fsrf.training.curves import plot_training_curves

    with pytest.raises(TypeError, match="tensorboard"):
        TrainSettings(tensorboard="yes")
    with pytest.raises(ValueError, match="at least one epoch"):
        plot_training_curves([], tmp_path / "c.png")
