"""A run that looks like success is one, and every failure says so in one line.

Empty or tiny splits, damaged checkpoints on resume, full disks and other OS errors, two runs on
one folder, mixed dtypes, a checkpoint evaluated on data with other dims, results written as one
unit, and stored lengths beyond the padded length.
"""

import errno
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import numpy as np
import pytest
import torch

from fsrf import FSRFConfig, FSRFLayer, FSRFModel, cli
from fsrf.data import load_mmsa, make_synthetic
from fsrf.data.mmsa import MMSALengthWarning, describe
from fsrf.runtime import io as rio
from fsrf.training.checkpoint import load_checkpoint
from fsrf.training.trainer import TrainSettings, fit
from fsrf.training.lock import LOCK_NAME, FolderLockedError, lock_folder
from fsrf.training.results import read_results, write_results

TINY_DIMS = {"text": 16, "audio": 6, "vision": 5}
TINY_LENS = {"text": 6, "audio": 6, "vision": 6}
CFG = FSRFConfig(d_model=16, num_heads=2, dropout=0.1)
ENV = dict(os.environ, OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.pkl"
    make_synthetic("mosei", path, n_train=40, n_valid=16, n_test=16, seed=3, dims=TINY_DIMS, seq_lens=TINY_LENS)
    return path


@pytest.fixture(scope="module")
def cfg_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "cfg.json"
    path.write_text(json.dumps({"d_model": 16, "num_heads": 2}))
    return path


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    """A finished 2-epoch run (copied by the tests that damage it)."""
    out = tmp_path_factory.mktemp("trained") / "run"
    fit(load_mmsa(tiny_data), out, config=CFG, settings=settings(epochs=2), seed=5, dataset="mosei", log=None)
    return out


def settings(**kw):
    base = dict(epochs=2, batch_size=16, progress=False, patience=5)
    base.update(kw)
    return TrainSettings(**base)


def _variant(src, dst, **sizes):
    """A copy of the pickle ``src`` with splits cut to the given sizes (``valid=0``: empty)."""
    with open(src, "rb") as fh:
        obj = pickle.load(fh)
    for split, n in sizes.items():
        obj[split] = {k: (v[:n] if isinstance(v, np.ndarray) else v) for k, v in obj[split].items()}
    with open(dst, "wb") as fh:
        pickle.dump(obj, fh, protocol=4)
    return dst


def _one_line_error(capsys, command):
    err = capsys.readouterr().err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines, "no error printed"
    assert "Traceback" not in err, err
    errors = [ln for ln in lines if ln.startswith(f"fsrf {command}: error: ")]
    assert len(errors) == 1, err
    return errors[0]


def _train_argv(data, cfg, out, *extra, epochs=1):
    return ["train", "--data", str(data), "--dataset", "mosei", "--config", str(cfg), "--epochs", str(epochs),
            "--batch-size", "16", "--no-progress", "--out", str(out), *extra]


# -- 1. empty and too-small splits ---------------------------------------------------------------

def test_empty_split_loads_and_describe_reports_it_without_nan(tiny_data, tmp_path, capsys):
    path = _variant(tiny_data, tmp_path / "empty_valid.pkl", valid=0)
    ds = load_mmsa(path)
    assert len(ds.split("valid")) == 0 and ds.dims == TINY_DIMS  # loading accepts it
    assert cli.main(["describe", str(path)]) == 0
    text = capsys.readouterr().out
    assert "valid: 0 samples (empty)" in text and "nan" not in text.lower()
    info = describe(path, quiet=True)
    assert info["splits"]["valid"] == {"n": 0, "label": None, "frames": None, "unimodal_labels": []}
    assert "NaN" not in json.dumps(info)


@pytest.mark.parametrize("sizes, split, fragment", [
    ({"valid": 0}, "valid", "has 0 samples; model selection"),
    ({"train": 0}, "train", "has 0 sample(s); training needs at least 2"),
    ({"train": 1}, "train", "has 1 sample(s); training needs at least 2"),
])
def test_fit_refuses_splits_too_small_before_writing(tiny_data, tmp_path, sizes, split, fragment):
    path = _variant(tiny_data, tmp_path / "small.pkl", **sizes)
    with pytest.raises(ValueError, match=f"split '{split}' {fragment}".replace("(", r"\(").replace(")", r"\)")) as ei:
        fit(load_mmsa(path), tmp_path / "run", config=CFG, settings=settings(), log=None)
    assert str(path) in str(ei.value)
    assert not (tmp_path / "run").exists()


def test_selection_on_test_needs_a_test_split(tiny_data, tmp_path):
    path = _variant(tiny_data, tmp_path / "no_test.pkl", test=0, valid=0)
    with pytest.raises(ValueError, match="split 'test' has 0 samples"):
        fit(load_mmsa(path), tmp_path / "run", config=CFG, settings=settings(selection="lnln-test@0.5"), log=None)


def test_cli_train_refuses_empty_valid_split(tiny_data, cfg_json, tmp_path, capsys):
    path = _variant(tiny_data, tmp_path / "empty_valid.pkl", valid=0)
    assert cli.main(_train_argv(path, cfg_json, tmp_path / "run")) == 2
    line = _one_line_error(capsys, "train")
    assert str(path) in line and "split 'valid' has 0 samples" in line
    assert not (tmp_path / "run").exists()


def test_evaluate_refuses_an_empty_split(tiny_data, trained, tmp_path, capsys):
    path = _variant(tiny_data, tmp_path / "empty_test.pkl", test=0)
    assert cli.main(["evaluate", "--checkpoint", str(trained), "--data", str(path), "--no-progress"]) == 2
    line = _one_line_error(capsys, "evaluate")
    assert str(path) in line and "split 'test' has 0 samples" in line


# -- 2. resume verifies the checkpoints it reports ------------------------------------------------

def _truncate(path):
    raw = path.read_bytes()
    path.write_bytes(raw[:len(raw) // 2])


def test_resume_with_truncated_best_is_refused_with_the_fix(trained, tmp_path, tiny_data, cfg_json, capsys):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    _truncate(run / "best.pt")
    data = load_mmsa(tiny_data)
    # the measured case: every epoch is done, so nothing would be rewritten
    with pytest.raises(ValueError, match="best.pt is corrupted") as ei:
        fit(data, run, config=CFG, settings=settings(epochs=2), seed=5, resume=True, log=None)
    msg = str(ei.value)
    assert "last.pt (epoch 2) is intact" in msg and f"delete {run / 'best.pt'}" in msg and "--resume" in msg
    # the same through the command line: exit 2 and one line
    run2 = tmp_path / "run2"
    assert cli.main(_train_argv(tiny_data, cfg_json, run2, epochs=2)) == 0
    _truncate(run2 / "best.pt")
    capsys.readouterr()
    assert cli.main(_train_argv(tiny_data, cfg_json, run2, "--resume", epochs=2)) == 2
    assert "best.pt is corrupted" in _one_line_error(capsys, "train")


def test_the_offered_fix_rebuilds_best_from_last(trained, tmp_path, tiny_data):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    _truncate(run / "best.pt")
    (run / "best.pt").unlink()
    data = load_mmsa(tiny_data)
    logs = []
    res = fit(data, run, config=CFG, settings=settings(epochs=2), seed=5, resume=True, log=logs.append)
    assert any("model selection restarts" in line for line in logs)
    best = load_checkpoint(run / "best.pt")
    assert best["epoch"] == 1 and res["best_epoch"] == 1
    assert load_checkpoint(run / "last.pt")["best_epoch"] == 1
    # the rebuilt pair is consistent: a further resume trains on without complaint
    res = fit(data, run, config=CFG, settings=settings(epochs=3), seed=5, resume=True, log=None)
    assert res["epochs_run"] == 3


def test_a_kill_between_best_and_last_is_resumed(tiny_data, tmp_path, monkeypatch):
    fit_mod = sys.modules["fsrf.training.trainer"]
    scores = iter([3.0, 2.0, 1.0])  # every epoch improves
    monkeypatch.setattr(fit_mod, "_selection_score", lambda *a, **k: next(scores))
    real_save, calls = fit_mod.save_checkpoint, []

    def save(obj, path):
        calls.append(path.name)
        if calls == ["best.pt", "last.pt", "best.pt", "last.pt", "best.pt", "last.pt"]:
            raise KeyboardInterrupt  # killed after epoch 3's best.pt, before its last.pt
        return real_save(obj, path)

    monkeypatch.setattr(fit_mod, "save_checkpoint", save)
    data = load_mmsa(tiny_data)
    with pytest.raises(KeyboardInterrupt):
        fit(data, tmp_path, config=CFG, settings=settings(epochs=4), seed=5, log=None)
    assert load_checkpoint(tmp_path / "best.pt")["epoch"] == 2 and load_checkpoint(tmp_path / "last.pt")["epoch"] == 1
    scores = iter([1.0, 0.5])
    monkeypatch.setattr(fit_mod, "_selection_score", lambda *a, **k: next(scores))
    logs = []
    res = fit(data, tmp_path, config=CFG, settings=settings(epochs=4), seed=5, resume=True, log=logs.append)
    assert any("interrupted before" in line for line in logs)
    assert res["best_epoch"] == 3 and load_checkpoint(tmp_path / "best.pt")["epoch"] == 3


def test_a_kill_between_best_and_last_resumed_as_a_shorter_run(tiny_data, tmp_path, monkeypatch):
    # the interrupted epoch lies beyond the resumed run, and its best.pt replaced the earlier best:
    # selection restarts from last.pt instead of ending with a best.pt from outside the run
    fit_mod = sys.modules["fsrf.training.trainer"]
    scores = iter([3.0, 2.0, 1.0])
    monkeypatch.setattr(fit_mod, "_selection_score", lambda *a, **k: next(scores))
    real_save, calls = fit_mod.save_checkpoint, []

    def save(obj, path):
        calls.append(path.name)
        if len(calls) == 6:
            raise KeyboardInterrupt  # epoch 3's best.pt written, its last.pt not
        return real_save(obj, path)

    monkeypatch.setattr(fit_mod, "save_checkpoint", save)
    data = load_mmsa(tiny_data)
    with pytest.raises(KeyboardInterrupt):
        fit(data, tmp_path, config=CFG, settings=settings(epochs=4), seed=5, log=None)
    monkeypatch.setattr(fit_mod, "save_checkpoint", real_save)
    monkeypatch.setattr(fit_mod, "_selection_score", lambda *a, **k: 1.5)
    logs = []
    res = fit(data, tmp_path, config=CFG, settings=settings(epochs=2), seed=5, resume=True, log=logs.append)
    assert any("beyond the 2 epochs" in line for line in logs), logs
    assert res["best_epoch"] == 1 and load_checkpoint(tmp_path / "best.pt")["epoch"] == 1


def test_best_of_another_run_is_refused(trained, tmp_path, tiny_data):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    data = load_mmsa(tiny_data)
    other = tmp_path / "other"
    fit(data, other, config=CFG, settings=settings(epochs=1), seed=6, log=None)
    shutil.copy(other / "best.pt", run / "best.pt")
    with pytest.raises(ValueError, match="is not the best model recorded in"):
        fit(data, run, config=CFG, settings=settings(epochs=3), seed=5, resume=True, log=None)


def test_truncated_last_is_refused_with_the_fix(trained, tmp_path, tiny_data):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    _truncate(run / "last.pt")
    with pytest.raises(ValueError, match=r"last.pt is corrupted.*delete .*last.pt to train .* from scratch"):
        fit(load_mmsa(tiny_data), run, config=CFG, settings=settings(epochs=3), seed=5, resume=True, log=None)


def test_resume_on_data_with_other_dims_names_both(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    other = tmp_path / "other.pkl"
    make_synthetic("mosei", other, n_train=8, n_valid=4, n_test=4, seed=1, dims={**TINY_DIMS, "audio": 8},
                   seq_lens=TINY_LENS)
    with pytest.raises(ValueError, match=r"feature dims .*'audio': 6.* but .*other.pkl has .*'audio': 8"):
        fit(load_mmsa(other), run, config=CFG, settings=settings(epochs=3), seed=5, resume=True, log=None)


def test_finished_run_is_verified_and_leaves_no_lock(trained):
    assert load_checkpoint(trained / "best.pt") and load_checkpoint(trained / "last.pt")
    assert not (trained / LOCK_NAME).exists()


# -- 3. disk and OS errors are one line, with the path -----------------------------------------

def test_atomic_write_names_the_target_of_an_unnamed_os_error(tmp_path):
    target = tmp_path / "f.bin"
    rio.atomic_write_bytes(target, b"old")

    def full(fh):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError) as ei:
        rio.atomic_write(target, full)
    assert ei.value.filename == str(target) and ei.value.errno == errno.ENOSPC
    assert rio.describe_os_error(ei.value) == (f"cannot write {target}: No space left on device (ENOSPC); "
                                               f"a previous version of it, if any, is intact")
    assert target.read_bytes() == b"old"
    assert rio.describe_os_error(FileNotFoundError("checkpoint x does not exist")) == "checkpoint x does not exist"
    assert rio.describe_os_error(PermissionError(errno.EACCES, "Permission denied", "/d/x.pkl")) == \
        "cannot access /d/x.pkl: Permission denied (EACCES)"


class _FullDisk:
    """os.fsync that fails with ENOSPC from its ``after``-th call on (0: at once)."""

    def __init__(self, after=0):
        self.after, self.calls = after, 0
        self.real = os.fsync

    def __call__(self, fd):
        self.calls += 1
        if self.calls > self.after:
            raise OSError(errno.ENOSPC, "No space left on device")
        return self.real(fd)


def test_full_disk_in_train_is_one_line_and_keeps_the_checkpoint(tiny_data, cfg_json, tmp_path, capsys,
                                                                   monkeypatch):
    run = tmp_path / "run"
    # the fsyncs of epoch 1: config.json, best.pt, last.pt, history.json (file + folder each)
    monkeypatch.setattr(os, "fsync", _FullDisk(after=8))
    assert cli.main(_train_argv(tiny_data, cfg_json, run, epochs=3)) == 2
    line = _one_line_error(capsys, "train")
    assert "No space left on device (ENOSPC)" in line and f"cannot write {run}" in line
    monkeypatch.undo()
    assert load_checkpoint(run / "best.pt")["epoch"] == 0
    assert not [n for n in os.listdir(run) if n.endswith(rio.TEMP_SUFFIX)]


@pytest.mark.parametrize("command", ["make-synthetic", "evaluate", "demo"])
def test_full_disk_in_other_commands_is_one_line(command, tiny_data, trained, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    argv = {"make-synthetic": ["make-synthetic", "--preset", "mosi", "--n-train", "4", "--n-valid", "2",
                               "--n-test", "2", "--out", str(tmp_path / "x.pkl")],
            "evaluate": ["evaluate", "--checkpoint", str(trained), "--data", str(tiny_data), "--rates", "0",
                         "--patterns", "none", "--no-progress", "--out", str(out)],
            "demo": ["demo", "--quick", "--no-progress", "--out", str(out)]}[command]
    monkeypatch.setattr(os, "fsync", _FullDisk())
    assert cli.main(argv) == 2
    line = _one_line_error(capsys, command)
    assert "cannot write" in line and "No space left on device (ENOSPC)" in line and str(tmp_path) in line


def test_permission_error_on_the_output_folder_is_one_line(tiny_data, cfg_json, tmp_path, capsys, monkeypatch):
    from pathlib import Path

    def denied(self, *a, **k):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    assert cli.main(_train_argv(tiny_data, cfg_json, tmp_path / "ro" / "run")) == 2
    line = _one_line_error(capsys, "train")
    assert f"cannot create the folder {tmp_path / 'ro' / 'run'}: Permission denied (EACCES)" in line


# -- 4. one run per output folder ------------------------------------------------------------------

_HOLDER = textwrap.dedent("""
    import sys, time
    from fsrf.training.lock import lock_folder
    lock = lock_folder(sys.argv[1])
    print("locked", flush=True)
    time.sleep(600)
""")


def _hold_lock(folder):
    folder.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(folder)], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def _kill(proc):
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_second_run_on_a_folder_is_refused_and_resume_takes_a_stale_lock_over(tiny_data, cfg_json, tmp_path,
                                                                                capsys):
    run = tmp_path / "run"
    holder = _hold_lock(run)
    try:
        assert cli.main(_train_argv(tiny_data, cfg_json, run)) == 2
        line = _one_line_error(capsys, "train")
        assert f"PID {holder.pid}" in line and "in use by another fsrf run" in line
        assert not (run / "config.json").exists()  # nothing of the second run was written
        # several seeds lock the parent folder as well
        assert cli.main(_train_argv(tiny_data, cfg_json, run, "--seeds", "1", "2")) == 2
        assert f"PID {holder.pid}" in _one_line_error(capsys, "train")
    finally:
        _kill(holder)
    assert (run / LOCK_NAME).exists()  # a killed holder cannot delete its lock file
    assert cli.main(_train_argv(tiny_data, cfg_json, run, "--resume")) == 0
    out = capsys.readouterr().out
    assert f"took over the lock of {run} from PID {holder.pid}" in out
    assert load_checkpoint(run / "best.pt") and not (run / LOCK_NAME).exists()


def test_a_real_training_run_holds_its_folder(tiny_data, cfg_json, tmp_path, capsys):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "fsrf", *_train_argv(tiny_data, cfg_json, run, "--seeds", "1", "--patience", "1000",
                                                      epochs=1000)]
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        deadline = time.time() + 120
        while not (run / "last.pt").exists():
            assert first.poll() is None and time.time() < deadline, "the first run did not start"
            time.sleep(0.2)
        assert cli.main(_train_argv(tiny_data, cfg_json, run, "--seeds", "2")) == 2
        assert f"PID {first.pid}" in _one_line_error(capsys, "train")
        assert json.loads((run / "config.json").read_text())["seed"] == 1
    finally:
        _kill(first)
    done = load_checkpoint(run / "last.pt")["epoch"] + 1
    assert cli.main(_train_argv(tiny_data, cfg_json, run, "--seeds", "1", "--patience", "1000", "--resume",
                                epochs=done)) == 0
    assert f"from PID {first.pid}" in capsys.readouterr().out


def test_lock_is_reentrant_in_one_process_and_refuses_others(tmp_path):
    with lock_folder(tmp_path) as outer:
        assert outer.held
        with lock_folder(tmp_path) as inner:
            assert inner.held
        assert (tmp_path / LOCK_NAME).exists()  # the outer hold is still there
        info = json.loads((tmp_path / LOCK_NAME).read_text())
        assert info["pid"] == os.getpid()
        code = ("import sys\nfrom fsrf.training.lock import lock_folder, FolderLockedError\n"
                "try:\n    lock_folder(sys.argv[1])\nexcept FolderLockedError as e:\n    print(e)\n")
        proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, env=ENV,
                              timeout=120)
        assert f"PID {os.getpid()}" in proc.stdout, proc.stderr
    assert not (tmp_path / LOCK_NAME).exists()
    assert issubclass(FolderLockedError, OSError)


# -- 5. dtypes ----------------------------------------------------------------------------------------

def _batch(dims, dtype=torch.float32, B=4):
    g = torch.Generator().manual_seed(0)
    return {m: torch.randn(B, 3, d, generator=g, dtype=torch.float32).to(dtype) for m, d in dims.items()}


def test_mixed_input_dtypes_name_both():
    layer = FSRFLayer({"text": 4, "audio": 3}, config=FSRFConfig(d_model=16, num_heads=2))
    x = _batch(layer.modality_dims)
    with pytest.raises(TypeError, match=r"inputs\['audio'\] has dtype torch.float64 but inputs\['text'\] has "
                                        r"dtype torch.float32"):
        layer({"text": x["text"], "audio": x["audio"].double()})


@pytest.mark.parametrize("cls", [FSRFLayer, FSRFModel])
def test_inputs_in_another_dtype_than_the_parameters_say_how_to_fix(cls):
    net = cls({"text": 4, "audio": 3}, config=FSRFConfig(d_model=16, num_heads=2))
    x = _batch({"text": 4, "audio": 3}, torch.float16)
    with pytest.raises(TypeError, match=r"inputs have dtype torch.float16 but the layer's parameters are "
                                        r"torch.float32; convert the model with .to\(torch.float16\).*autocast"):
        net(x)
    with pytest.raises(TypeError, match="torch.autocast does not cast"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            net(_batch({"text": 4, "audio": 3}, torch.float64))


def test_autocast_and_a_converted_model_run():
    layer = FSRFLayer({"text": 4, "audio": 3, "vision": 5}, config=FSRFConfig(d_model=16, num_heads=2))
    x = _batch(layer.modality_dims, torch.float16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
        assert torch.isfinite(out.fused.float()).all()
        # an absent modality's zero frame takes autocast's dtype, not the inputs'
        out = layer({"text": x["text"].float()})
        assert torch.isfinite(out.fused.float()).all()
    out = layer.double()(_batch(layer.modality_dims, torch.float64))
    assert out.fused.dtype == torch.float64


# -- 6. a checkpoint on data with other dims ---------------------------------------------------------

def test_evaluate_on_data_with_other_dims_names_both_files(trained, tmp_path, capsys):
    other = tmp_path / "other.pkl"
    make_synthetic("mosei", other, n_train=8, n_valid=4, n_test=4, seed=1, dims={**TINY_DIMS, "audio": 8},
                   seq_lens=TINY_LENS)
    assert cli.main(["evaluate", "--checkpoint", str(trained), "--data", str(other), "--no-progress"]) == 2
    line = _one_line_error(capsys, "evaluate")
    assert str(trained / "best.pt") in line and str(other) in line and "audio 6 vs 8" in line


# -- 7. results as one unit ------------------------------------------------------------------------

def _results(value):
    cond = {"Has0_F1_score": value, "Non0_acc_2": 0.5, "Mult_acc_7": 0.2, "MAE": 1.0, "Corr": 0.1}
    block = {"intra": {"0.0": cond, "0.5": cond}, "inter": {"l": cond}}
    return {"models": {"m": {"mean": block, "std": block, "per_seed": {"1": block}}}, "meta": {"dataset": "mosei"}}


def test_results_carry_one_run_id(tmp_path):
    write_results(_results(0.5), tmp_path)
    res = read_results(tmp_path)
    run_id = res["meta"]["run_id"]
    assert run_id and f",{run_id}\n" in (tmp_path / "results.csv").read_text().replace("\r\n", "\n")
    write_results(_results(0.7), tmp_path)
    assert read_results(tmp_path)["meta"]["run_id"] != run_id
    assert sorted(os.listdir(tmp_path)) == ["results.csv", "results.json", "robustness.png"]


def test_mixed_result_files_are_detected(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_results(_results(0.5), a)
    write_results(_results(0.7), b)
    shutil.copy(b / "results.csv", a / "results.csv")
    with pytest.raises(ValueError, match="results.csv comes from evaluation run"):
        read_results(a)
    shutil.copy(b / "results.json", a / "results.json")
    shutil.copy(b / "robustness.png", a / "robustness.png")
    assert read_results(a)["models"]["m"]["mean"]["intra"]["0.0"]["Has0_F1_score"] == 0.7


def test_a_failed_write_keeps_the_previous_unit(tmp_path, monkeypatch):
    write_results(_results(0.5), tmp_path)
    before = {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)}
    monkeypatch.setattr(os, "fsync", _FullDisk(after=3))  # results.json and .csv are staged, the plot fails
    with pytest.raises(OSError, match="No space left"):
        write_results(_results(0.7), tmp_path)
    monkeypatch.undo()
    assert {n: (tmp_path / n).read_bytes() for n in os.listdir(tmp_path)} == before
    read_results(tmp_path)


_KILLED_WRITER = textwrap.dedent("""
    import json, os, signal, sys
    from fsrf.training import results
    def die(*a, **k):
        os.kill(os.getpid(), signal.SIGKILL)
    results.plot_robustness = die  # killed after results.json and .csv are staged, before any rename
    results.write_results(json.loads(sys.argv[2]), sys.argv[1])
""")


def test_a_killed_evaluate_leaves_the_previous_unit_and_the_next_run_cleans_up(tmp_path):
    write_results(_results(0.5), tmp_path)
    first = read_results(tmp_path)["meta"]["run_id"]
    proc = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(tmp_path), json.dumps(_results(0.7))],
                          capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    left = [n for n in os.listdir(tmp_path) if n.endswith(rio.TEMP_SUFFIX)]
    assert left, "the killed writer should have left its temp folder"
    assert read_results(tmp_path)["meta"]["run_id"] == first  # the old unit, untouched
    # a temp file of a live writer (this process) must survive the clean-up
    live = tmp_path / f".results.json.{rio._owner_tag()}.abcd1234{rio.TEMP_SUFFIX}"
    live.write_bytes(b"in progress")
    write_results(_results(0.9), tmp_path)
    assert [n for n in os.listdir(tmp_path) if n.endswith(rio.TEMP_SUFFIX)] == [live.name]
    assert read_results(tmp_path)["models"]["m"]["mean"]["intra"]["0.0"]["Has0_F1_score"] == 0.9


def test_write_results_without_plot_drops_an_older_plot(tmp_path):
    write_results(_results(0.5), tmp_path)
    write_results(_results(0.7), tmp_path, plot=False)
    assert not (tmp_path / "robustness.png").exists()
    read_results(tmp_path)


# -- 8. lengths beyond the padded length -------------------------------------------------------------

@pytest.fixture(scope="module")
def long_lengths(tmp_path_factory):
    path = tmp_path_factory.mktemp("long") / "long.pkl"
    make_synthetic("sims", path, n_train=8, n_valid=4, n_test=4, seed=1, dims=TINY_DIMS, seq_lens=TINY_LENS)
    with open(path, "rb") as fh:
        obj = pickle.load(fh)
    obj["train"]["audio_lengths"] = np.array(obj["train"]["audio_lengths"]).copy()
    obj["train"]["audio_lengths"][:3] = 99
    obj["test"]["vision_lengths"] = np.array(obj["test"]["vision_lengths"]).copy()
    obj["test"]["vision_lengths"][0] = 7
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=4)
    return path


def test_lengths_beyond_T_warn_once_with_counts(long_lengths):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_mmsa(long_lengths)
    found = [w for w in caught if issubclass(w.category, MMSALengthWarning)]
    assert len(found) == 1
    msg = str(found[0].message)
    assert "4 stored length(s)" in msg and "split 'train', key 'audio_lengths': 3 (largest 99 > padded length 6)" \
        in msg and "split 'test', key 'vision_lengths': 1" in msg
    assert found[0].message.counts[("train", "audio_lengths")] == (3, 99, 6)
    assert ds.split("train").lengths["audio"].max() == 6  # still clipped


def test_strict_refuses_lengths_beyond_T(long_lengths):
    with pytest.raises(ValueError, match=r"4 stored length\(s\) exceed .*refused because strict=True"):
        load_mmsa(long_lengths, strict=True)


@pytest.mark.parametrize("command", ["describe", "train", "evaluate"])
def test_cli_strict_flag(command, long_lengths, trained, cfg_json, tmp_path, capsys):
    argv = {"describe": ["describe", str(long_lengths)],
            "train": ["train", "--data", str(long_lengths), "--config", str(cfg_json), "--epochs", "1", "--no-progress",
                      "--out", str(tmp_path / "run")],
            "evaluate": ["evaluate", "--checkpoint", str(trained), "--data", str(long_lengths), "--dataset", "mosei",
                         "--rates", "0", "--patterns", "none", "--no-progress"]}[command]
    assert cli.main([*argv, "--strict"]) == 2
    assert "refused because strict=True (--strict)" in _one_line_error(capsys, command)
    if command == "describe":  # without --strict: a one-line warning, and the command succeeds
        assert cli.main(argv) == 0
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("fsrf describe: warning: ") and "4 stored length(s)" in err[0]
