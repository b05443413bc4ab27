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
    rule = (tmp_path / "rule.md").read_text(encoding="utf-8")
    assert "## FSRF enc2" in rule and "condition 2" in rule
    import matplotlib.image

    png = matplotlib.image.imread(tmp_path / "summary.png")
    assert png.ndim == 3 and png.shape[0] > 300 and png.shape[1] > 500


def test_first_draw_starts_the_data_seeds_elsewhere(tmp_path):
    mod = _module()
    assert mod.main([str(tmp_path), "--tiny", "--cells", "mosei-aligned-factor", "--draws", "2",
                     "--first-draw", "106", "--models", "fsrf,late-fusion"]) == 0
    cell = tmp_path / "mosei-aligned-factor"
    assert sorted(p.name for p in cell.glob("d*")) == ["d106", "d107"]
    from fsrf.data import load_mmsa

    assert [load_mmsa(cell / f"d{d}" / "data.pkl").synthetic["seed"] for d in (106, 107)] == [106, 107]


def test_the_figure_draws_fsrfs_paired_advantage_over_the_best_baseline_and_the_ablation():
    mod = _module()
    from fsrf.training.comparison import NO_AUX_NAME

    def model(f1s, maes):
        per = {f"d{i}": {"Has0_F1_score": f, "MAE": m} for i, (f, m) in enumerate(zip(f1s, maes))}
        return {g: {"per_seed": per, "mean": {"Has0_F1_score": sum(f1s) / len(f1s), "MAE": sum(maes) / len(maes)}}
                for g, _ in mod.GROUPS}

    # MulT has the better F1, late fusion the better MAE: each group and metric names its own best
    summ = {"FSRF": model([0.70, 0.72, 0.74], [1.0, 0.9, 0.8]), "MulT": model([0.75, 0.75, 0.78], [1.2, 1.2, 1.2]),
            "late fusion": model([0.60, 0.61, 0.62], [0.7, 0.8, 0.9]), NO_AUX_NAME: model([0.7, 0.7, 0.7], [1, 1, 1])}
    pts = mod.figure_points({"c": {"meta": {"dataset": "mosei"}, "summary": summ}})
    assert len(pts) == 2 * 2 * 2  # claimed groups x metrics x (best baseline, ablation)
    got = {(g, m, a): (name, d, h) for _, g, m, a, name, d, h in pts}
    # F1: FSRF - MulT per draw = -0.05, -0.03, -0.04; mean -0.04, sample std 0.01, t(0.975, 2) = 4.3027
    name, d, h = got["7 patterns", "F1", "best built-in baseline"]
    assert name == "MulT" and d == pytest.approx(-0.04) and h == pytest.approx(4.302653 * 0.01 / 3 ** 0.5, rel=1e-5)
    # MAE: late fusion - FSRF per draw = -0.3, -0.1, +0.1 (signed so that > 0 favours FSRF)
    name, d, h = got["r ≥ 0.5", "MAE", "best built-in baseline"]
    assert name == "late fusion" and d == pytest.approx(-0.1) and h == pytest.approx(4.302653 * 0.2 / 3 ** 0.5, rel=1e-5)
    assert got["r ≥ 0.5", "MAE", "FSRF w/o aux terms"][1] == pytest.approx(0.1)  # 1 - (1.0, 0.9, 0.8)


def test_the_rule_report_computes_the_paired_differences_and_both_conditions():
    mod = _module()

    def cell(dataset, deltas):
        # defaults at 0.5 / 1.0; the variant moved by deltas[group] = (dF1, dMAE) per draw
        per = lambda f1, mae: {"F1_score": f1, "Has0_F1_score": f1, "MAE": mae}
        summ = {"FSRF": {}, "FSRF v": {}}
        for group, _ in mod.GROUPS:
            summ["FSRF"][group] = {"per_seed": {s: per(0.5, 1.0) for s in ("d1", "d2", "d3")}}
            summ["FSRF v"][group] = {"per_seed": {s: per(0.5 + df, 1.0 + dm) for s, (df, dm)
                                                  in zip(("d1", "d2", "d3"), deltas[group])}}
        return {"meta": {"dataset": dataset}, "summary": summ}

    good = [(0.02, -0.02), (0.03, -0.01), (0.025, -0.015)]
    flat = [(0.0, 0.001), (0.001, 0.0), (-0.001, -0.001)]
    cells = {"a": cell("mosei", {g: good for g, _ in mod.GROUPS}), "b": cell("sims", {g: good for g, _ in mod.GROUPS})}
    text = "\n".join(mod.rule_report(cells))
    assert "The variant wins" in text and "+0.025 (n = 6)" in text
    assert "The defaults do not keep their place" in text and "not met: a r ≥ 0.5 F1" in text
    bad = [(-0.05, 0.05), (-0.06, 0.06), (-0.055, 0.055)]  # significantly worse at r < 0.5 on cell b
    cells["b"] = cell("sims", {"intra r>=0.5": good, "inter (7 patterns)": good, "intra r<0.5": bad})
    text = "\n".join(mod.rule_report(cells))
    assert "not met: b r < 0.5 F1, b r < 0.5 MAE" in text and "does not win" in text
    # the variant better at r >= 0.5 and over the patterns on both cells: the defaults lose there too
    assert "The defaults do not keep their place" in text
    cells = {"a": cell("mosei", {g: flat for g, _ in mod.GROUPS})}
    text = "\n".join(mod.rule_report(cells))
    assert text.count("condition 1 (better where the method claims to help): not met") == 2
    assert "The variant does not win" in text and "The defaults do not keep their place" in text
    worse = [(-0.02, 0.02), (-0.03, 0.01), (-0.025, 0.015)]  # the variant worse everywhere: the defaults keep
    text = "\n".join(mod.rule_report({"a": cell("mosei", {g: worse for g, _ in mod.GROUPS})}))
    assert "The defaults keep their place" in text and "The variant does not win" in text


@pytest.mark.parametrize("argv, match", [
    (["--cells", "nope"], "--cells takes 'all' or a comma list"),
    (["--draws", "1"], "--draws must be >= 2"),
    (["--first-draw", "0"], "--first-draw must be >= 1"),
    (["--scale", "0"], "--scale must be > 0"),
    (["--variant", "x"], "--variant takes NAME=JSON"),
    (["--variant", "x=[1]"], "JSON must be an object"),
    (["--models", "mult"], "--models must include fsrf"),
    (["--variant", "Z"], "--variant takes NAME=JSON"),
])
def test_bad_arguments_are_refused_by_name(tmp_path, argv, match):
    mod = _module()
    with pytest.raises((SystemExit, ValueError), match=match):
        mod.main([str(tmp_path), *argv])


def test_every_written_variant_is_a_valid_config_change():
    from fsrf.config import FSRFConfig

    variants = _module().VARIANTS
    for letter, (_, changes) in variants.items():
        assert set(changes) <= set(FSRFConfig().to_dict()), letter
        FSRFConfig(**changes)  # refused by name if a value is out of range
        # a variant differs from today's defaults (else it would compare the defaults with themselves)
        assert FSRFConfig(**changes) != FSRFConfig(), letter
    # the stored runs of K (version 7, a full window) count as today's K
    stored_k = {**FSRFConfig(conv_kernel=3, conv_mode="full").to_dict(), "config_version": 7}
    del stored_k["conv_mode"]
    assert FSRFConfig.from_saved(stored_k) == FSRFConfig(**variants["K"][1])
