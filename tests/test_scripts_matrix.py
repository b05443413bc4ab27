"""scripts/regime_matrix.py runs end to end at tiny size and refuses bad arguments by name."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "regime_matrix.py"


def _module():
    spec = importlib.util.spec_from_file_location("regime_matrix", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_one_cell_runs_tiny_and_writes_the_summary(tmp_path):
    mod = _module()
    assert mod.main([str(tmp_path), "--tiny", "--cells", "sims-content", "--draws", "2",
                     "--variant", 'FSRF enc2={"encoder_layers": 1}']) == 0
    summary = (tmp_path / "summary.md").read_text(encoding="utf-8")
    assert "## sims-content" in summary and "| 7 patterns | F1_score |" in summary
    assert "FSRF w/o aux terms" in summary
    merged = (tmp_path / "sims-content" / "comparison.md").read_text(encoding="utf-8")
    assert "2 replicates" in merged and "FSRF enc2" in merged
    assert sorted(p.name for p in (tmp_path / "sims-content").glob("d*")) == ["d101", "d102"]


@pytest.mark.parametrize("argv, match", [
    (["--cells", "nope"], "--cells takes 'all' or a comma list"),
    (["--draws", "1"], "--draws must be >= 2"),
    (["--scale", "0"], "--scale must be > 0"),
    (["--variant", "x"], "--variant takes NAME=JSON"),
    (["--variant", "x=[1]"], "JSON must be an object"),
    (["--models", "mult"], "--models must include fsrf"),
])
def test_bad_arguments_are_refused_by_name(tmp_path, argv, match):
    mod = _module()
    with pytest.raises((SystemExit, ValueError), match=match):
        mod.main([str(tmp_path), *argv])
