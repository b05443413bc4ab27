"""The analysis scripts behind docs/research-log/: scripts/paired_variants.py (a round's
before → after table, paired over data draws) and scripts/criterion_null.py (how often issue 10's
acceptance rule fails a model equal to its competitors). Checked against independent arithmetic
(numpy, scipy) on hand-made results."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def _script(name):
    spec = importlib.util.spec_from_file_location(f"_script_{name}", SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _result(mae_low, mae_high, mae_pattern):
    """One seed's results at r = 0.0 and 0.5 and in the pattern "l" (F1 = 1 - MAE / 2)."""
    def cell(v):
        return {"MAE": v, "Has0_F1_score": 1 - v / 2, "Non0_F1_score": 1 - v / 3}
    return {"intra": {"0.0": cell(mae_low), "0.5": cell(mae_high)}, "inter": {"l": cell(mae_pattern)}}


def _write_draw(root, draw, seed, values):
    res = {"models": {"FSRF": {"per_seed": {str(seed): _result(*values)}}},
           "meta": {"dataset": "mosei", "reference": "FSRF", "split": "test", "rates": [0.0, 0.5],
                    "patterns": ["l"], "data": f"{draw}.pkl", "seeds": [seed]}}
    (root / draw).mkdir(parents=True)
    (root / draw / "results.json").write_text(json.dumps(res))


def test_paired_variants_pairs_the_draws_and_counts_the_better_ones(tmp_path, capsys):
    pv = _script("paired_variants")
    base = {"d1": (0.60, 0.80, 0.90), "d2": (0.70, 0.85, 0.95), "d3": (0.65, 0.90, 0.92)}
    var = {"d1": (0.58, 0.82, 0.85), "d2": (0.69, 0.80, 0.96), "d3": (0.61, 0.88, 0.90)}
    for i, d in enumerate(base):
        _write_draw(tmp_path / "base", d, 1110 + i, base[d])
        _write_draw(tmp_path / "var", d, 1110 + i, var[d])
    _write_draw(tmp_path / "var", "d9", 1119, (0.5, 0.5, 0.5))  # only in one root: not paired
    assert pv.main([str(tmp_path / "out"), str(tmp_path / "base"), str(tmp_path / "var"), "--label", "x"]) == 0
    joined = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(joined["models"]) == {"FSRF", "FSRF (x)"}
    a = np.array([base[d][1] for d in base])  # r >= 0.5 is the one rate 0.5
    b = np.array([var[d][1] for d in base])
    t = joined["tests"]["FSRF (x)"]["groups"]["intra r>=0.5"]["MAE"]
    assert t["n"] == 3 and t["diff"] == pytest.approx((a - b).mean())
    assert t["t_p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    out = capsys.readouterr().out
    mae_row = next(line for line in out.splitlines() if line.startswith("| MAE"))
    # lower MAE is better: at r >= 0.5 the variant wins on d2 and d3, at r < 0.5 on all three
    cells = mae_row.strip("|").split("|")[1:]
    assert "2 of 3" in cells[0] and "3 of 3" in cells[2]
    assert f"{a.mean():.3f} → **{b.mean():.3f}**" in cells[0]


def test_paired_variants_needs_two_shared_draws(tmp_path, capsys):
    pv = _script("paired_variants")
    _write_draw(tmp_path / "base", "d1", 1, (0.6, 0.7, 0.8))
    _write_draw(tmp_path / "var", "d1", 1, (0.6, 0.7, 0.8))
    assert pv.main([str(tmp_path / "o"), str(tmp_path / "base"), str(tmp_path / "var")]) == 2
    assert "at least two" in capsys.readouterr().err


def test_criterion_verdict_counts_conditions_behind_by_more_than_one_std():
    cn = _script("criterion_null")
    # candidate: 4 seeds x 3 columns (higher is better); std (ddof 1) of each column below
    cand = np.array([[0.70, 0.50, 0.90], [0.72, 0.52, 0.90], [0.74, 0.54, 0.91], [0.76, 0.56, 0.91]])
    sd = cand.std(0, ddof=1)
    mean = cand.mean(0)
    # competitors' means: column 0 ahead by 0.5 std, column 1 ahead by 2 std (from the better one), column 2 behind
    comp1 = np.tile(mean + np.array([0.5, 2.0, -1.0]) * sd, (3, 1))
    comp2 = np.tile(mean + np.array([0.2, 1.5, -2.0]) * sd, (3, 1))
    groups_c = np.array([[1.0, 2.0]] * 4)
    behind, held = cn.verdict(cand, groups_c, [comp1, comp2], [np.array([[0.9, 2.0]]), np.array([[1.0, 1.9]])])
    assert behind == 1 and held is True
    _, held = cn.verdict(cand, groups_c, [comp1], [np.array([[1.1, 1.0]])])
    assert held is False


def test_criterion_simulation_is_certain_far_from_the_null():
    cn = _script("criterion_null")
    rng = np.random.default_rng(0)
    cond = rng.normal(size=(15, 6))
    groups = rng.normal(size=(15, 4))
    far_ahead = cn.simulate(cond, groups, 3, 200, rng, disjoint=False, margin=50.0)
    far_behind = cn.simulate(cond, groups, 2, 200, rng, disjoint=True, margin=-50.0)
    assert far_ahead["p_pass"] == 1.0 and far_ahead["mean_behind"] == 0.0
    assert far_behind["p_pass"] == 0.0 and far_behind["mean_behind"] == 6.0
    # equal by construction: the rule passes sometimes, not always
    null = cn.simulate(cond, groups, 1, 2000, rng, disjoint=True)
    assert 0.0 < null["p_pass"] < 0.5 and 0.0 < null["p_none_behind"] < 1.0


def test_noninferiority_p_is_the_one_sided_t_test_of_the_shifted_differences():
    ni = _script("noninferiority")
    d = np.array([0.004, -0.012, 0.020, -0.003, 0.007, 0.001])
    for margin in (0.0, 0.01, 0.03):
        expected = stats.ttest_1samp(d + margin, 0.0, alternative="greater").pvalue
        assert ni.one_sided(d, margin) == pytest.approx(expected)
    assert ni.one_sided(np.full(4, -0.02), 0.01) == 1.0 and ni.one_sided(np.full(4, 0.0), 0.01) == 0.0
    assert np.isnan(ni.one_sided(np.array([0.1]), 0.01))


def test_noninferiority_signs_mae_so_that_positive_means_the_reference_is_better(tmp_path, capsys):
    ni = _script("noninferiority")
    pv = _script("paired_variants")
    for i, (mine, theirs) in enumerate([((0.6, 0.8, 0.9), (0.7, 0.9, 1.0)), ((0.65, 0.85, 0.9), (0.7, 0.95, 1.1))]):
        _write_draw(tmp_path / "a", f"d{i}", i, mine)
        _write_draw(tmp_path / "b", f"d{i}", i, theirs)
    joined = pv.join(pv._load(tmp_path / "a", ["d0", "d1"]), pv._load(tmp_path / "b", ["d0", "d1"]), "other")
    text = ni.table(joined, {"Has0_F1_score": 0.01, "MAE": 0.01})
    mae = next(line for line in text.splitlines() if "| MAE |" in line)
    assert mae.split("|")[3].strip().startswith("+0.100")   # r >= 0.5: 0.9 - 0.8 and 0.95 - 0.85
    path = tmp_path / "r.json"
    path.write_text(json.dumps(joined))
    assert ni.main([str(path), "--margin-mae", "-1"]) == 2
    assert "--margin-mae" in capsys.readouterr().err


def test_the_scripts_refuse_bad_arguments_by_name(tmp_path, capsys):
    cn = _script("criterion_null")
    ni = _script("noninferiority")
    absent = str(tmp_path / "absent.json")
    assert cn.main([absent, absent, "--draws", "0"]) == 2
    assert "--draws" in capsys.readouterr().err
    assert cn.main([absent, absent]) == 2
    assert "absent.json" in capsys.readouterr().err
    assert ni.main([absent]) == 2
    assert "absent.json" in capsys.readouterr().err
