"""A real full, read-only or vanished output folder is one line on every command that writes.

The disks here are real: a small tmpfs mounted for the test (root with CAP_SYS_ADMIN, as CI
runs; skipped with the reason elsewhere), filled to the last page with a filler file, so that the
write fails where the OS says so, inside whichever library is writing (``torch.save`` swallows the
disk's ``OSError`` and raises a ``RuntimeError`` of its own). Each test asserts the one-line
message, exit status 2 and that the files of the previous, successful run still load.
"""

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from _helpers import write_tiny_mmsa
from fsrf import cli
from fsrf.data import load_mmsa
from fsrf.models import from_pretrained
from fsrf.runtime import io as rio
from fsrf.training.checkpoint import load_checkpoint
from fsrf.training.results import read_results

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _can_mount() -> str | None:
    """None when this process may mount a tmpfs, else why not."""
    if os.name != "posix" or os.geteuid() != 0:
        return "mounting a tmpfs needs root (CI runs as root)"
    if shutil.which("mount") is None or shutil.which("umount") is None:
        return "mount/umount are not installed"
    return None


@pytest.fixture
def tmpfs(tmp_path):
    """Mount a fresh tmpfs; yields ``mount(size_kib, readonly=False) -> Path``; unmounts after."""
    why = _can_mount()
    if why:
        pytest.skip(why)
    mounted = []

    def mount(size_kib: int, readonly: bool = False) -> Path:
        path = tmp_path / f"disk{len(mounted)}"
        path.mkdir()
        opts = f"size={size_kib}k" + (",ro" if readonly else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in mounted:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(disk: Path, leave: int = 0) -> None:
    """Write a filler file until the disk is full, then free ``leave`` bytes (rounded up to pages)."""
    filler = disk / "filler"
    with open(filler, "wb", buffering=0) as fh:
        chunk = b"\0" * PAGE
        while True:
            try:
                if fh.write(chunk) == 0:
                    break
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                break
    if leave:
        size = filler.stat().st_size
        os.truncate(filler, max(0, size - -(-leave // PAGE) * PAGE))
    assert leave or os.statvfs(disk).f_bfree == 0


def _one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"fsrf {command}: error: "), err
    return lines[0]


def _no_temps(folder: Path) -> None:
    for root, dirs, files in os.walk(folder):
        assert not [n for n in dirs + files if n.endswith(rio.TEMP_SUFFIX)], (root, dirs, files)


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return write_tiny_mmsa(tmp_path_factory.mktemp("data") / "tiny.pkl")


@pytest.fixture(scope="module")
def cfg_json(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "cfg.json"
    path.write_text(json.dumps({"d_model": 16, "num_heads": 2}))
    return path


def _train_argv(data, cfg, out, epochs):
    return ["train", "--data", str(data), "--dataset", "mosei", "--config", str(cfg), "--epochs", str(epochs),
            "--batch-size", "16", "--no-progress", "--out", str(out)]


@pytest.fixture(scope="module")
def trained(tiny_data, cfg_json, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    assert cli.main(_train_argv(tiny_data, cfg_json, out, epochs=1)) == 0
    return out


# -- the writer itself -------------------------------------------------------------------------

def test_torch_save_on_a_full_disk_is_an_enospc_naming_the_target(tmpfs):
    disk = tmpfs(256)
    target = disk / "ckpt.pt"
    rio.atomic_write(target, lambda fh: torch.save({"w": torch.zeros(10)}, fh))
    _fill(disk)
    with pytest.raises(OSError) as ei:  # torch.save alone raises RuntimeError("... unexpected pos ...")
        rio.atomic_write(target, lambda fh: torch.save({"w": torch.randn(100_000)}, fh))
    assert ei.value.errno == errno.ENOSPC and ei.value.filename == str(target)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.zeros(10))
    _no_temps(disk)


def test_a_library_that_swallows_the_disk_error_still_reports_enospc(tmpfs):
    disk = tmpfs(256)
    _fill(disk)

    def swallowing(fh):  # what torch's zip writer does: catch the OSError, raise its own error
        try:
            fh.write(b"\0" * 4 * PAGE)
        except OSError:
            pass
        raise RuntimeError("unexpected pos 704 vs 598")

    with pytest.raises(OSError) as ei:
        rio.atomic_write(disk / "x.bin", swallowing)
    assert ei.value.errno == errno.ENOSPC and ei.value.filename == str(disk / "x.bin")
    assert isinstance(ei.value.__cause__, RuntimeError)
    _no_temps(disk)


def test_the_first_os_error_of_a_write_is_kept_when_a_library_swallows_it():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    with open("/dev/full", "wb", buffering=0) as raw:
        rec = rio._RecordingFile(raw)
        try:
            rec.write(b"x")
        except OSError:
            pass
    assert rec.error is not None and rec.error.errno == errno.ENOSPC


def test_a_library_error_on_a_disk_with_room_propagates_unchanged(tmp_path):
    def broken(fh):
        fh.write(b"partial")
        raise RuntimeError("the library's own bug")

    with pytest.raises(RuntimeError, match="the library's own bug"):
        rio.atomic_write(tmp_path / "f.bin", broken)
    assert os.listdir(tmp_path) == []


def test_a_vanished_folder_names_the_file_the_folder_and_the_reason(tmp_path):
    with pytest.raises(FileNotFoundError) as ei:
        rio.atomic_write_text(tmp_path / "gone" / "results.json", "{}")
    assert rio.describe_os_error(ei.value) == (f"cannot write {tmp_path / 'gone' / 'results.json'}: its folder "
                                               f"{tmp_path / 'gone'} does not exist (ENOENT)")


# -- every command that writes -------------------------------------------------------------------

def test_train_full_in_the_second_epoch(tmpfs, tiny_data, tmp_path, capsys):
    """Room for epoch 1's files and a new best.pt, but only half of a second last.pt.

    The method's default width, so that the checkpoint is large enough for the disk to fill
    inside ``torch.save`` (the case that used to end in a RuntimeError traceback).
    """
    first = tmp_path / "first"
    argv = lambda out, epochs: ["train", "--data", str(tiny_data), "--dataset", "mosei", "--epochs",  # noqa: E731
                                str(epochs), "--batch-size", "16", "--no-progress", "--out", str(out)]
    assert cli.main(argv(first, 1)) == 0
    sizes = {n: (first / n).stat().st_size for n in ("best.pt", "last.pt", "config.json", "history.json")}
    pages = lambda n: -(-n // PAGE) * PAGE  # noqa: E731
    disk = tmpfs(4 * sum(sizes.values()) // 1024 + 1024)
    _fill(disk, leave=sum(pages(s) for s in sizes.values()) + 4 * PAGE + pages(sizes["best.pt"])
          + sizes["last.pt"] // 2)
    run = disk / "run"
    capsys.readouterr()
    assert cli.main(argv(run, 3)) == 2
    line = _one_error_line(capsys, "train")
    assert f"cannot write {run}" in line and "No space left on device (ENOSPC)" in line
    assert load_checkpoint(run / "last.pt")["epoch"] == 0  # the first epoch's checkpoint is intact
    assert load_checkpoint(run / "best.pt")["epoch"] in (0, 1)
    _no_temps(run)


def _evaluate_argv(trained, data, out):
    return ["evaluate", "--checkpoint", str(trained), "--data", str(data), "--rates", "0,0.5",
            "--patterns", "l,lav", "--no-progress", "--out", str(out)]


def _compare_argv(data, out):
    return ["compare", "--data", str(data), "--models", "late-fusion", "--seeds", "1", "--d-model", "8",
            "--epochs", "1", "--batch-size", "16", "--rates", "0,0.5", "--patterns", "l,lav", "--no-progress",
            "--out", str(out)]


@pytest.mark.parametrize("command", ["evaluate", "compare", "export", "make-synthetic", "predict"])
def test_a_second_run_on_a_full_disk_keeps_the_first(command, tmpfs, tiny_data, trained, capsys):
    disk = tmpfs(8192)
    out = disk / "out"
    argv = {"evaluate": lambda: _evaluate_argv(trained, tiny_data, out),
            "compare": lambda: _compare_argv(tiny_data, out),
            "export": lambda: ["export", "--checkpoint", str(trained), "--out", str(out)],
            "predict": lambda: ["predict", "--model", str(trained), "--data", str(tiny_data), "--no-progress",
                                "--out", str(out)],
            "make-synthetic": lambda: ["make-synthetic", "--preset", "mosi", "--n-train", "8", "--n-valid", "4",
                                       "--n-test", "8", "--out", str(out)]}[command]()
    load = {"evaluate": lambda: read_results(out),
            "compare": lambda: read_results(out),
            "export": lambda: from_pretrained(out),
            "predict": lambda: json.loads((out / "predictions.json").read_text())["rows"][0]["prediction"],
            "make-synthetic": lambda: load_mmsa(out)}[command]
    assert cli.main(argv) == 0
    load()
    if command == "compare":  # the rerun resumes the trained run and rewrites the tables
        before = (out / "comparison.md").read_bytes()
    capsys.readouterr()
    _fill(disk)
    assert cli.main(argv) == 2
    line = _one_error_line(capsys, command)
    assert f"cannot write {disk}" in line and "No space left on device (ENOSPC)" in line, line
    os.unlink(disk / "filler")
    load()
    if command == "compare":
        assert (out / "comparison.md").read_bytes() == before
    _no_temps(disk)


@pytest.mark.parametrize("command", ["train", "evaluate", "export", "make-synthetic"])
def test_a_read_only_disk_is_one_line(command, tmpfs, tiny_data, cfg_json, trained, capsys):
    disk = tmpfs(1024, readonly=True)
    out = disk / ("out.pkl" if command == "make-synthetic" else "out")
    argv = {"train": _train_argv(tiny_data, cfg_json, out, epochs=1),
            "evaluate": _evaluate_argv(trained, tiny_data, out),
            "export": ["export", "--checkpoint", str(trained), "--out", str(out)],
            "make-synthetic": ["make-synthetic", "--preset", "mosi", "--n-train", "8", "--n-valid", "4",
                               "--n-test", "4", "--out", str(out)]}[command]
    assert cli.main(argv) == 2
    line = _one_error_line(capsys, command)
    assert str(disk) in line and "Read-only file system (EROFS)" in line, line
