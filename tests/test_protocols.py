"""The published protocols' tables (LNLN, CorrKD) and AUILC, against a hand-built results file."""

import json

import numpy as np
import pytest

from fsrf import cli
from fsrf.metrics import MOSI_KEYS
from fsrf.training.protocols import PROTOCOLS, auilc, auilc_summary, format_protocol_table

RATES = [f"{0.1 * i:.1f}" for i in range(11)]


def _metrics(base: float) -> dict:
    """A metric dict whose values are simple functions of ``base`` (distinct per key)."""
    return {k: base + 0.01 * i for i, k in enumerate(MOSI_KEYS)}


def _results(rates=RATES, patterns=("l", "a", "v", "la", "lv", "av")):
    # model A, seeds 1 and 2: metric value at rate r is 0.8 - 0.3 r (+0.02 for seed 2); model B 0.1 lower
    models = {}
    for name, shift in (("A", 0.0), ("B", -0.1)):
        per_seed = {}
        for seed, extra in (("1", 0.0), ("2", 0.02)):
            per_seed[seed] = {"intra": {r: _metrics(0.8 - 0.3 * float(r) + shift + extra) for r in rates},
                              "inter": {p: _metrics(0.5 + 0.05 * k + shift + extra) for k, p in enumerate(patterns)}}
        mean = {kind: {c: {m: np.mean([per_seed[s][kind][c][m] for s in per_seed]) for m in MOSI_KEYS}
                       for c in per_seed["1"][kind]} for kind in ("intra", "inter")}
        std = {kind: {c: {m: float(np.std([per_seed[s][kind][c][m] for s in per_seed], ddof=1)) for m in MOSI_KEYS}
                      for c in per_seed["1"][kind]} for kind in ("intra", "inter")}
        models[name] = {"per_seed": per_seed, "mean": mean, "std": std}
    return {"models": models, "meta": {"dataset": "mosei", "seeds": [1, 2], "split": "test",
                                       "settings": {"selection": "lnln-test@0.5"}}}


def test_auilc_is_the_trapezoid_over_the_rates_divided_by_their_span():
    assert auilc({"0.0": {"m": 1.0}, "0.5": {"m": 0.5}, "1.0": {"m": 0.0}})["m"] == pytest.approx(0.5)
    # uneven rates: (0.2 (0.9 + 0.7) / 2 + 0.8 (0.7 + 0.1) / 2) / 1.0 = 0.16 + 0.32
    assert auilc({0.0: {"m": 0.9}, 0.2: {"m": 0.7}, 1.0: {"m": 0.1}})["m"] == pytest.approx(0.48)
    # over 0.0-0.9: the span is 0.9; a straight line's AUILC is its value at the middle rate
    line = {f"{0.1 * i:.1f}": {"m": 0.8 - 0.3 * 0.1 * i} for i in range(10)}
    assert auilc(line)["m"] == pytest.approx(0.8 - 0.3 * 0.45)
    assert auilc({"0.3": {"m": 0.42}})["m"] == 0.42
    with pytest.raises(ValueError, match="at least one rate"):
        auilc({})


def test_auilc_summary_over_seeds():
    res = _results()
    au = auilc_summary(res)
    # seed 1 of A: the line 0.8 - 0.3 r + offset over 0..1 -> its value at r = 0.5
    assert au["A"]["per_seed"]["1"]["MAE"] == pytest.approx(0.8 - 0.15 + 0.01 * MOSI_KEYS.index("MAE"))
    assert au["A"]["mean"]["MAE"] == pytest.approx(0.8 - 0.15 + 0.01 * MOSI_KEYS.index("MAE") + 0.01)
    assert au["A"]["std"]["MAE"] == pytest.approx(np.std([0.0, 0.02], ddof=1))


def test_the_lnln_table_has_every_rate_and_their_mean():
    res = _results(rates=RATES[:10], patterns=())
    md = format_protocol_table(res, "lnln", "md")
    # model A's Has0_acc_2 (first key) mean over the seeds at r = 0.3: 0.8 - 0.09 + 0.01 = 0.72 -> 72.00 %
    row = next(line for line in md.splitlines() if line.startswith("| 0.3 |"))
    assert row.split("|")[2].strip().startswith("72.00/")
    # the mean row over 0.0-0.9: 0.8 - 0.3 * 0.45 + 0.01 = 0.675 -> 67.50 for A; MAE (index 6) +0.06
    mean_row = next(line for line in md.splitlines() if line.startswith("| mean 0.0–0.9 |"))
    cells = [c.strip() for c in mean_row.strip("|").split("|")]
    assert cells[1].startswith("67.50/") and cells[5] == f"{0.675 + 0.06:.3f}"
    assert "**A: metrics by intra-modal missing rate**" in md and "**B:" in md
    assert "mean over 2 seeds (1, 2)" in md and "test MAE at r = 0.5" in md
    assert "true labels first" in md
    assert "AUILC" in md


def test_the_corrkd_table_has_rates_to_one_and_the_six_patterns_with_their_average():
    res = _results()
    md = format_protocol_table(res, "corrkd", "md")
    header = next(line for line in md.splitlines() if line.startswith("| model | 0.0"))
    assert header.count("|") == 1 + 1 + 11 + 1  # model, 11 rates, Avg
    pat = [line for line in md.splitlines() if line.startswith("| A |")][1]
    cells = [c.strip() for c in pat.strip("|").split("|")]
    # Has0_F1 (index 1) of A on pattern k: 0.5 + 0.05 k + 0.01 + 0.01 (seed mean); Avg over the six
    want = [100 * (0.5 + 0.05 * k + 0.02) for k in range(6)]
    assert [float(c) for c in cells[1:7]] == pytest.approx(want, abs=0.006)
    assert float(cells[7]) == pytest.approx(np.mean(want), abs=0.006)
    tex = format_protocol_table(res, "corrkd", "tex")
    assert tex.count(r"\begin{tabular}") == 3 and r"\caption{" in tex and r"\toprule" in tex
    assert "Has0\\_F1\\_score" in tex


def test_bad_protocol_or_format_is_refused():
    with pytest.raises(ValueError, match="protocol must be 'lnln' or 'corrkd'"):
        format_protocol_table(_results(), "fsrf")
    with pytest.raises(ValueError, match="fmt must be 'md' or 'tex'"):
        format_protocol_table(_results(), "lnln", "html")


def test_compare_and_evaluate_write_the_protocol_tables(tmp_path, capsys):
    from _helpers import write_tiny_mmsa

    data = write_tiny_mmsa(tmp_path / "tiny.pkl")
    out = tmp_path / "cmp"
    assert cli.main(["compare", "--data", str(data), "--models", "late-fusion", "--seeds", "1", "2", "--d-model", "8",
                     "--epochs", "1", "--batch-size", "16", "--protocol", "corrkd", "--legacy-f1", "--no-progress",
                     "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert list(res["models"]["late fusion"]["mean"]["intra"]) == [f"{r:.1f}" for r in PROTOCOLS["corrkd"].rates]
    assert list(res["models"]["late fusion"]["mean"]["inter"]) == list(PROTOCOLS["corrkd"].patterns)
    assert "Has0_F1_score_legacy" in res["models"]["late fusion"]["mean"]["intra"]["1.0"]
    assert set(res["auilc"]["late fusion"]["mean"]) >= {"MAE", "Has0_F1_score"}
    md = (out / "table_corrkd.md").read_text()
    assert "*_legacy F1 swaps the arguments" in md and (out / "table_corrkd.tex").is_file()
    assert "AUILC" in (out / "comparison.md").read_text()
    capsys.readouterr()
    assert cli.main(["compare", "--data", str(data), "--protocol", "lnln", "--rates", "0,0.5", "--out",
                     str(tmp_path / "x")]) == 2
    assert "--protocol lnln fixes the rates" in capsys.readouterr().err
    run = out / "late-fusion" / "seed_1"
    assert cli.main(["evaluate", "--checkpoint", str(run), "--data", str(data), "--protocol", "lnln",
                     "--no-progress", "--out", str(tmp_path / "ev")]) == 0
    assert "mean 0.0–0.9" in (tmp_path / "ev" / "table_lnln.md").read_text()
