"""fsrf.runtime.io.atomic_write: the one file writer (atomic, durable, permissions from the umask)."""

import os
import stat

import pytest

from fsrf.runtime.io import TEMP_SUFFIX, atomic_write, atomic_write_bytes, atomic_write_text, current_umask


@pytest.fixture
def umask():
    """Set a umask for the test and restore the previous one afterwards."""
    saved = os.umask(0o022)
    os.umask(saved)

    def set_(mask):
        os.umask(mask)
        return mask

    yield set_
    os.umask(saved)


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o077, 0o002, 0o027])
def test_mode_follows_the_umask_like_open(tmp_path, umask, mask):
    umask(mask)
    assert current_umask() == mask
    atomic_write_text(tmp_path / "a.txt", "x")
    with open(tmp_path / "b.txt", "w") as fh:  # what any other file the user creates gets
        fh.write("x")
    assert _mode(tmp_path / "a.txt") == _mode(tmp_path / "b.txt") == 0o666 & ~mask


def test_content_and_replacement(tmp_path):
    p = tmp_path / "f.bin"
    atomic_write_bytes(p, b"old")
    atomic_write(p, lambda fh: fh.write(b"new"))
    assert p.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_failing_writer_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "old")

    def broken(fh):
        fh.write(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        atomic_write(p, broken)
    assert p.read_text() == "old"
    assert [n for n in os.listdir(tmp_path) if n.endswith(TEMP_SUFFIX)] == []


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        atomic_write_text(tmp_path / "nope" / "f.txt", "x")


def test_results_files_follow_the_umask(tmp_path, umask):
    from fsrf.training.results import write_results

    cond = {"Has0_F1_score": 0.5, "Non0_acc_2": 0.5, "Mult_acc_7": 0.2, "MAE": 1.0, "Corr": 0.1}
    block = {"intra": {"0.0": cond}, "inter": {"l": cond}}
    results = {"models": {"m": {"mean": block, "std": block, "per_seed": {"1": block}}},
               "meta": {"dataset": "mosei"}}
    umask(0o022)
    paths = write_results(results, tmp_path)
    assert sorted(p.name for p in paths.values()) == ["results.csv", "results.json", "robustness.png"]
    for p in paths.values():
        assert _mode(p) == 0o644, p.name
    assert [n for n in os.listdir(tmp_path) if n.startswith(".")] == []
