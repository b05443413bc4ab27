"""The drop-in example runs end to end with tiny settings and scores both models."""

import importlib.util
import math
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "dropin_late_fusion.py"


def test_dropin_example_runs_tiny(capsys):
    spec = importlib.util.spec_from_file_location("dropin_late_fusion", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    scores = mod.main(["--tiny"])
    assert set(scores) == {"late fusion", "late fusion + FSRFLayer"}
    for per_condition in scores.values():
        assert set(per_condition) == {"complete", "intra r=0.5", "only L", "only A", "only V", "only AV"}
        assert all(math.isfinite(v) and v >= 0 for v in per_condition.values())
    out = capsys.readouterr().out
    assert "test MAE" in out and "late fusion + FSRFLayer" in out
