"""The evaluation table of fsrf.training.results.format_table: full names, aligned, 100 columns."""

import math

import matplotlib.image
import pytest

from fsrf.training.results import format_table, plot_robustness

MOSI_COLS = ["Has0_F1_score", "Non0_acc_2", "Mult_acc_7", "MAE", "Corr"]
SIMS_COLS = ["F1_score", "Mult_acc_2", "Mult_acc_3", "MAE", "Corr"]
LONG = "baseline (dhf, das off) with a name far longer than any column"


def _block(cols, conds, base, std=None):
    return {cond: {c: (std if std is not None else base + 0.01 * i + 0.001 * j) for j, c in enumerate(cols)}
            for i, cond in enumerate(conds)}


def _results(cols, dataset, names=("FSRF", "baseline (dhf, das off)", LONG), std=True):
    rates, pats = ["0.0", "0.5", "0.9"], ["l", "av", "lav"]
    models = {}
    for k, name in enumerate(names):
        entry = {"mean": {"intra": _block(cols, rates, 0.5 + k / 10), "inter": _block(cols, pats, 0.6 + k / 10)}}
        if std:
            entry["std"] = {"intra": _block(cols, rates, 0, std=0.0123), "inter": _block(cols, pats, 0, std=0.0456)}
        models[name] = entry
    return {"models": models, "meta": {"dataset": dataset}}


def test_names_are_never_truncated_and_lines_fit_100_columns():
    text = format_table(_results(MOSI_COLS, "mosei"))
    lines = text.splitlines()
    for name in ("FSRF", "baseline (dhf, das off)", LONG):
        assert any(line.endswith(f"] {name}") for line in lines), name
    headers = [line for line in lines if "Has0_F1_score" in line]
    assert len(headers) == 6  # one per model and protocol
    for h in headers:
        assert h.split()[0] in ("rate", "pattern") and h.split()[1:] == MOSI_COLS
    # the std is shown in full too, and every row of a 5-metric table with std fits in 100 columns
    assert "0.5000 ± 0.0123" in text and "± 0.0456" in text
    assert max(len(line) for line in lines) <= 100, max(lines, key=len)
    assert "intra-modal frame dropping (rate)" in text and "inter-modal availability (pattern)" in text


def test_values_line_up_under_their_column():
    lines = format_table(_results(MOSI_COLS, "mosi")).splitlines()
    ends, rows = None, 0
    for line in lines:
        if "Has0_F1_score" in line:  # a block's header: every value ends where its metric name ends
            ends = [line.index(c) + len(c) for c in MOSI_COLS]
            continue
        if ends is None or not line.startswith("  "):
            continue
        rows += 1
        for e in ends:
            assert line[e - 1] != " " and (e == len(line) or line[e] == " "), line
        assert len(line) == ends[-1], line
    assert rows == 2 * 3 * (3 + 1)  # 2 protocols x 3 models x (3 conditions + avg)
    # the avg row is the mean over the conditions of the model
    first_avg = next(row for row in lines if row.strip().startswith("avg"))
    assert first_avg.split()[1] == f"{(0.5 + 0.51 + 0.52) / 3:.4f}"


def test_sims_headline_and_single_seed():
    text = format_table(_results(SIMS_COLS, "sims", names=("FSRF",), std=False))
    assert "F1_score" in text and "Mult_acc_3" in text and "±" not in text
    assert "Has0_F1_score" not in text
    assert text.splitlines()[1] == "[1] FSRF"


def test_nan_values_do_not_break_the_table():
    res = _results(MOSI_COLS, "mosi", names=("FSRF",), std=False)
    for mets in res["models"]["FSRF"]["mean"]["inter"].values():
        mets["Corr"] = math.nan
    text = format_table(res)
    inter = text[text.index("inter-modal"):]
    assert "nan" in inter and inter.splitlines()[-1].split()[-1] == "nan"


def test_the_robustness_figure_has_a_row_for_the_binary_f1_and_one_for_mae(tmp_path):
    res = _results(MOSI_COLS, "mosi")
    both = matplotlib.image.imread(plot_robustness(res, tmp_path / "both.png"))
    one = matplotlib.image.imread(plot_robustness(res, tmp_path / "one.png", metric="MAE"))
    assert both.shape[0] == 2 * one.shape[0] and both.shape[1] == one.shape[1]
    no_mae = _results(["F1_score", "Corr"], "sims")  # a metric set without MAE: the F1 row only
    assert matplotlib.image.imread(plot_robustness(no_mae, tmp_path / "f1.png")).shape == one.shape


def test_the_robustness_figure_refuses_a_metric_the_results_lack(tmp_path):
    with pytest.raises(ValueError, match="metric must be one of.*'Mult_acc_3'"):
        plot_robustness(_results(MOSI_COLS, "mosi"), tmp_path / "x.png", metric="Mult_acc_3")
    assert not (tmp_path / "x.png").exists()
