"""The worked examples run end to end with tiny settings and score both of their models."""

import importlib.util
import math
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _run(name, tmp_path):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main(["--tiny", "--out", str(tmp_path / "runs")])


@pytest.mark.parametrize("name, models, metrics", [
    ("dropin_temporal", ["encoders + FSRFLayer", "encoders + concat fusion"], {"Has0_F1_score", "MAE"}),
    ("emotion_classifier", ["GRU + FSRFLayer", "GRU + mean pooling"],
     {"Acc", "WF1", "MacroF1", "sad_acc", "neutral_F1", "happy_F1", "angry_acc"}),
])
def test_example_runs_tiny(name, models, metrics, tmp_path):
    res = _run(name, tmp_path)
    assert list(res["models"]) == models
    for entry in res["models"].values():
        for kind, conds in entry["mean"].items():
            assert conds, kind
            for cond, values in conds.items():
                assert metrics <= set(values), (kind, cond)
                assert all(math.isfinite(values[m]) for m in metrics)
    md = (tmp_path / "runs" / "comparison.md").read_text(encoding="utf-8")
    assert all(m in md for m in models)
    if name == "emotion_classifier":
        assert "WF1 by intra-modal missing rate" in md and "Acc by available modalities" in md
