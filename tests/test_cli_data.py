"""Tests of the data subcommands `fsrf make-synthetic` and `fsrf describe`."""

import json
import os
import pickle

import pytest

from fsrf import cli, data


def test_parser_has_every_command_once():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == {"info", "make-synthetic", "describe", "train", "evaluate", "predict", "compare",
                                "export", "demo"}
    # building twice gives the same parser: no registration happens as an import side effect
    again = next(a for a in cli.build_parser()._actions if a.dest == "command")
    assert list(again.choices) == list(sub.choices)


def test_make_synthetic_then_describe(tmp_path, capsys):
    out = tmp_path / "syn.pkl"
    rc = cli.main(["make-synthetic", "--preset", "sims", "--out", str(out), "--n-train", "6", "--n-valid", "3",
                   "--n-test", "4", "--seed", "2"])
    assert rc == 0 and out.exists()
    assert f"wrote {out}" in capsys.readouterr().out
    ds = data.load_mmsa(out)
    assert [len(ds.split(s)) for s in ("train", "valid", "test")] == [6, 3, 4]
    assert not ds.aligned and ds.synthetic["seed"] == 2
    assert ds.dims == {"text": 768, "audio": 33, "vision": 709}

    assert cli.main(["describe", str(out)]) == 0
    text = capsys.readouterr().out
    assert "train: 6 samples" in text and "test: 4 samples" in text and "709" in text and "sims" in text

    assert cli.main(["describe", str(out), "--json", "--no-sha256"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["splits"]["valid"]["n"] == 3 and info["seq_lens"]["vision"] == 55
    assert info["sha256_status"] == "not-checked"


def test_aligned_flags(tmp_path):
    a, u = tmp_path / "a.pkl", tmp_path / "u.pkl"
    common = ["--preset", "mosi", "--n-train", "2", "--n-valid", "2", "--n-test", "2"]
    assert cli.main(["make-synthetic", *common, "--out", str(a), "--aligned"]) == 0
    assert cli.main(["make-synthetic", *common, "--out", str(u), "--unaligned"]) == 0
    assert data.load_mmsa(a).seq_lens == {"text": 50, "audio": 50, "vision": 50}
    assert data.load_mmsa(u).seq_lens == {"text": 50, "audio": 375, "vision": 500}
    with pytest.raises(SystemExit) as ei:
        cli.main(["make-synthetic", *common, "--out", str(a), "--aligned", "--unaligned"])
    assert ei.value.code == 2


def _one_line_error(capsys, command):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"fsrf {command}: error: ")
    return lines[0]


def test_describe_missing_file_exits_2(tmp_path, capsys):
    missing = tmp_path / "nope.pkl"
    assert cli.main(["describe", str(missing)]) == 2
    line = _one_line_error(capsys, "describe")
    assert "not found" in line and str(missing) in line


def test_describe_malicious_file_exits_2(tmp_path, capsys):
    marker = tmp_path / "m"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    p = tmp_path / "evil.pkl"
    p.write_bytes(pickle.dumps({"train": Evil()}))
    assert cli.main(["describe", str(p)]) == 2
    assert "refusing to load" in _one_line_error(capsys, "describe")
    assert not marker.exists()


def test_describe_malformed_file_exits_2(tmp_path, capsys):
    p = tmp_path / "bad.pkl"
    p.write_bytes(pickle.dumps({"train": {}, "valid": {}, "test": {}}))
    assert cli.main(["describe", str(p)]) == 2
    assert "split 'train', key 'regression_labels': missing" in _one_line_error(capsys, "describe")


def test_make_synthetic_bad_arguments_exit_2(tmp_path, capsys):
    assert cli.main(["make-synthetic", "--preset", "sims", "--out", str(tmp_path / "x.pkl"), "--aligned"]) == 2
    assert "no aligned variant" in _one_line_error(capsys, "make-synthetic")
    assert cli.main(["make-synthetic", "--preset", "mosi", "--out", str(tmp_path / "x.pkl"), "--n-train", "0"]) == 2
    assert "n_train must be >= 1" in _one_line_error(capsys, "make-synthetic")
    assert cli.main(["make-synthetic", "--preset", "mosi", "--out", str(tmp_path / "no" / "x.pkl")]) == 2
    assert "output folder does not exist" in _one_line_error(capsys, "make-synthetic")
    with pytest.raises(SystemExit) as ei:
        cli.main(["make-synthetic", "--preset", "iemocap", "--out", "x.pkl"])
    assert ei.value.code == 2
