"""Golden tests of fsrf.metrics: every expected value is worked out by hand in the comments."""

import math
import warnings

import numpy as np
import pytest
import torch

from fsrf import metrics

# ----------------------------------------------------------------------------- MOSI / MOSEI
# Six samples chosen so that half-to-even rounding, clipping and the strict `p > 0` of Non0 matter.
Y = [2.0, -1.0, 0.0, 0.5, -2.5, 3.4]
P = [1.5, 0.0, -0.5, 0.4, -2.6, 2.6]


@pytest.mark.parametrize("kind", ["list", "float64", "float32", "torch32"])
def test_mosi_golden(kind):
    conv = {"list": lambda a: a, "float64": lambda a: np.array(a, np.float64),
            "float32": lambda a: np.array(a, np.float32), "torch32": lambda a: torch.tensor(a, dtype=torch.float32)}[kind]
    r = metrics.compute(conv(P), conv(Y), "mosi")
    # Has0: y >= 0 -> [T F T T F T]; p >= 0 -> [T T F T F T]; equal at 0, 3, 4, 5 -> 4/6.
    assert r["Has0_acc_2"] == pytest.approx(4 / 6)
    # Has0 F1 (true = y >= 0 first): class 1: TP 3 (0,3,5), FP 1 (1), FN 1 (2) -> 6/8 = 0.75, support 4;
    # class 0: TP 1 (4), FP 1 (2), FN 1 (1) -> 2/4 = 0.5, support 2. Weighted: (4*.75 + 2*.5)/6 = 2/3.
    assert r["Has0_F1_score"] == pytest.approx(2 / 3)
    # Non0: drop index 2 (y = 0). y > 0 -> [T F T F T]; p > 0 on [1.5, 0.0, 0.4, -2.6, 2.6] -> [T F T F T]
    # (p = 0.0 counts as negative and so matches y = -1): 5/5, and F1 = 1.
    assert r["Non0_acc_2"] == pytest.approx(1.0)
    assert r["Non0_F1_score"] == pytest.approx(1.0)
    # Mult_acc_5: clip to [-2, 2]: p [1.5, 0, -.5, .4, -2, 2] -> round [2, 0, -0, 0, -2, 2] (1.5 -> 2, -0.5 -> -0);
    # y [2, -1, 0, .5, -2, 2] -> [2, -1, 0, 0, -2, 2] (0.5 -> 0). Equal except index 1: 5/6.
    assert r["Mult_acc_5"] == pytest.approx(5 / 6)
    # Mult_acc_7: clip to [-3, 3]: p [1.5, 0, -.5, .4, -2.6, 2.6] -> [2, 0, -0, 0, -3, 3];
    # y [2, -1, 0, .5, -2.5, 3] -> [2, -1, 0, 0, -2, 3] (-2.5 -> -2, half to even). Equal at 0, 2, 3, 5: 4/6.
    # (Half-away-from-zero would give y[4] -> -3 and 5/6; half-up would give y[3] -> 1 and 3/6.)
    assert r["Mult_acc_7"] == pytest.approx(4 / 6)
    # MAE on unclipped values: |p - y| = [.5, 1, .5, .1, .1, .8], sum 3.0 -> 0.5.
    assert r["MAE"] == pytest.approx(0.5, abs=1e-6)
    # Corr: Pearson on unclipped values; np.corrcoef is MMSA's own formula.
    assert r["Corr"] == pytest.approx(np.corrcoef(np.array(P), np.array(Y))[0, 1], abs=1e-6)


def test_mosi_keys_and_order():
    r = metrics.compute(P, Y, "mosei")
    assert list(r) == ["Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "Mult_acc_5", "Mult_acc_7",
                       "MAE", "Corr"]
    assert all(isinstance(v, float) for v in r.values())
    assert metrics.compute(P, Y, "mosi") == r  # MOSI is an alias of the MOSEI evaluation
    assert metrics.keys_for("MOSI") == tuple(r)


def test_f1_argument_order_trap():
    # y >= 0 -> [1 1 1 1 1 0], p >= 0 -> [1 1 1 0 0 0].
    y = [1.0, 2.0, 0.5, 1.0, 3.0, -1.0]
    p = [1.0, 1.0, 1.0, -1.0, -1.0, -1.0]
    # True labels first: class 1: TP 3, FP 0, FN 2 -> 6/8 = .75, support 5; class 0: TP 1, FP 2, FN 0 -> 2/4 = .5,
    # support 1. Weighted: (5*.75 + 1*.5)/6 = 4.25/6 = 0.708333.
    # Swapped (the old MMSA bug) weights by the prediction counts 3/3: (3*.75 + 3*.5)/6 = 0.625.
    r = metrics.compute(p, y, "mosi")
    assert r["Has0_F1_score"] == pytest.approx(4.25 / 6)
    assert metrics.weighted_f1([1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]) == pytest.approx(4.25 / 6)
    assert metrics.weighted_f1([1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]) == pytest.approx(0.625)


def test_non0_prediction_exactly_zero_and_absent_class():
    y = [1.0, -1.0, 0.0]
    p = [0.0, 0.0, 5.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a class missing from the predictions must not warn
        r = metrics.compute(p, y, "mosi")
    # Has0: p >= 0 -> [T T T], y >= 0 -> [T F T]: 2/3.
    assert r["Has0_acc_2"] == pytest.approx(2 / 3)
    # Has0 F1: class 1: TP 2, FP 1, FN 0 -> 4/5, support 2; class 0 never predicted: F1 0, support 1 -> 1.6/3.
    assert r["Has0_F1_score"] == pytest.approx(1.6 / 3)
    # Non0 keeps indices 0, 1; p > 0 is strict: p = 0 -> negative -> [F F] vs y > 0 [T F]: 1/2.
    assert r["Non0_acc_2"] == pytest.approx(0.5)
    # Non0 F1: class 1: TP 0 -> F1 0, support 1; class 0: TP 1, FP 1, FN 0 -> 2/3, support 1 -> (2/3)/2.
    assert r["Non0_F1_score"] == pytest.approx(1 / 3)


def test_constant_predictions_give_nan_corr_without_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = metrics.compute([0.3, 0.3, 0.3, 0.3], [1.0, -1.0, 2.0, 0.0], "mosei")
        s = metrics.compute([0.3, 0.3, 0.3], [0.2, -0.4, 0.8], "sims")
    assert math.isnan(r["Corr"]) and math.isnan(s["Corr"])
    # Everything else is still defined: p >= 0 all True, y >= 0 [T F T T] -> 3/4.
    assert r["Has0_acc_2"] == pytest.approx(0.75)
    # MAE |0.3 - y| = [.7, 1.3, 1.7, .3] -> 4/4 = 1.
    assert r["MAE"] == pytest.approx(1.0)


def test_all_zero_labels_make_non0_nan():
    r = metrics.compute([0.5, -0.5], [0.0, 0.0], "mosi")
    assert math.isnan(r["Non0_acc_2"]) and math.isnan(r["Non0_F1_score"])
    assert r["Has0_acc_2"] == pytest.approx(0.5)


# ----------------------------------------------------------------------------------- SIMS
# Pairs (p, y) probing the bin edges; bins (lo, hi] with lowest bound -1.01.
#   2 classes: 0 = [-1, 0], 1 = (0, 1]
#   3 classes: 0 = [-1, -.1], 1 = (-.1, .1], 2 = (.1, 1]
#   5 classes: 0 = [-1, -.7], 1 = (-.7, -.1], 2 = (-.1, .1], 3 = (.1, .7], 4 = (.7, 1]
#      p      y     b2 (p,y)   b3 (p,y)   b5 (p,y)
# 1  -1.0   -0.8    0,0 ok     0,0 ok     0,0 ok     (-1.0 is in class 0)
# 2  -0.7   -0.8    0,0 ok     0,0 ok     0,0 ok     (-0.7 closes class 0)
# 3  -0.1   -0.2    0,0 ok     0,0 ok     1,1 ok     (-0.1 closes 3-class 0 and 5-class 1)
# 4   0.1    0.0    1,0 no     1,1 ok     2,2 ok     (0.1 closes the middle class; 0.0 is negative in b2)
# 5   0.0    0.2    0,1 no     1,2 no     2,3 no
# 6   0.7    0.8    1,1 ok     2,2 ok     3,4 no     (0.7 closes 5-class 3)
# 7   1.5    1.0    1,1 ok     2,2 ok     4,4 ok     (p clipped to 1)
# 8  -1.3   -0.6    0,0 ok     0,0 ok     0,1 no     (p clipped to -1)
SP = [-1.0, -0.7, -0.1, 0.1, 0.0, 0.7, 1.5, -1.3]
SY = [-0.8, -0.8, -0.2, 0.0, 0.2, 0.8, 1.0, -0.6]


@pytest.mark.parametrize("dtype", [np.float64, np.float32, torch.float32])
def test_sims_golden_bin_edges(dtype):
    if isinstance(dtype, torch.dtype):
        p, y = torch.tensor(SP, dtype=dtype), torch.tensor(SY, dtype=dtype)
    else:
        p, y = np.array(SP, dtype), np.array(SY, dtype)
    # float32 edges are compared in float32 (as MMSA's float32 arrays are): 0.1f lands in (-0.1, 0.1] and -0.7f
    # in [-1, -0.7], exactly like the decimal values. Casting to float64 first would move both.
    r = metrics.compute(p, y, "sims")
    assert list(r) == ["Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "F1_score", "MAE", "Corr"]
    assert r["Mult_acc_2"] == pytest.approx(6 / 8)
    assert r["Mult_acc_3"] == pytest.approx(7 / 8)
    assert r["Mult_acc_5"] == pytest.approx(5 / 8)
    # F1 on 2-class bins, true first: y_b2 = [0 0 0 0 1 1 1 0], p_b2 = [0 0 0 1 0 1 1 0].
    # class 0: TP 4 (1,2,3,8), FP 1 (5), FN 1 (4) -> 8/10, support 5; class 1: TP 2, FP 1, FN 1 -> 4/6, support 3.
    # Weighted: (5*.8 + 3*(2/3))/8 = 6/8.
    assert r["F1_score"] == pytest.approx(0.75)
    # MAE on clipped values: |p - y| = [.2, .1, .1, .1, .2, .1, 0, .4] -> 1.2/8 = 0.15.
    assert r["MAE"] == pytest.approx(0.15, abs=1e-6)
    pc, yc = np.clip(np.array(SP), -1, 1), np.clip(np.array(SY), -1, 1)
    assert r["Corr"] == pytest.approx(np.corrcoef(pc, yc)[0, 1], abs=1e-6)


def test_sims_labels_on_the_grid_separate_as_documented():
    # Labels are multiples of 0.2: +-0.1 and +-0.7 separate {0}, {+-.2, +-.4, +-.6}, {+-.8, +-1}.
    grid = np.round(np.arange(-1.0, 1.01, 0.2), 1).astype(np.float32)
    # Predict each grid value by the neighbouring value towards zero; 5-class accuracy counts pairs in the same
    # group. Groups (5-class): -1,-.8 | -.6,-.4,-.2 | 0 | .2,.4,.6 | .8,1.
    pred = np.where(grid > 0, grid - 0.2, np.where(grid < 0, grid + 0.2, grid)).astype(np.float32)
    pred[np.abs(pred) < 1e-6] = 0.0
    # grid -> pred: -1->-.8 same, -.8->-.6 diff, -.6->-.4 same, -.4->-.2 same, -.2->0 diff, 0->0 same,
    # .2->0 diff, .4->.2 same, .6->.4 same, .8->.6 diff, 1->.8 same: 7/11 equal.
    assert metrics.compute(pred, grid, "sims")["Mult_acc_5"] == pytest.approx(7 / 11)


# ------------------------------------------------------------------------------- options/errors
def test_ndigits_rounds_like_mmsa():
    r = metrics.compute(P, Y, "mosi", ndigits=4)
    assert r["Has0_acc_2"] == 0.6667 and r["Mult_acc_5"] == 0.8333


def test_column_vectors_accepted():
    r1 = metrics.compute(np.array(P)[:, None], torch.tensor(Y)[:, None], "mosi")
    assert r1 == pytest.approx(metrics.compute(P, Y, "mosi"))


@pytest.mark.parametrize("preds,labels,dataset,match", [
    ([0.1, 0.2], [0.1], "mosi", "same number of samples"),
    ([0.1], [0.1], "iemocap", "dataset must be one of"),
    ([0.1, float("nan")], [0.1, 0.2], "mosi", "preds contains 1 non-finite"),
    ([0.1, 0.2], [0.1, float("inf")], "sims", "labels contains 1 non-finite"),
    ([], [], "mosi", "preds is empty"),
    (np.zeros((2, 2)), np.zeros((2, 2)), "mosi", r"shape \(N,\)"),
])
def test_bad_inputs(preds, labels, dataset, match):
    with pytest.raises(ValueError, match=match):
        metrics.compute(preds, labels, dataset)


def test_non_numeric_input():
    with pytest.raises(TypeError, match="preds must be numeric"):
        metrics.compute(np.array(["a", "b"]), [0.1, 0.2], "mosi")


def test_weighted_f1_cross_check_with_sklearn():
    sk = pytest.importorskip("sklearn.metrics", reason="scikit-learn is not installed; golden tests above stand alone")
    rng = np.random.default_rng(0)
    for _ in range(20):
        t = rng.integers(0, 3, 30)
        p = rng.integers(0, 3, 30)
        assert metrics.weighted_f1(t, p) == pytest.approx(sk.f1_score(t, p, average="weighted", zero_division=0))


# ------------------------------------------------------------------------- MMSA's two roundings
# MMSA 2.2.1 writes round(x, 4) for every key, but x is a Python float for what scikit-learn returns
# (accuracy_score: Has0_acc_2, Non0_acc_2; f1_score: every F1 key) and a numpy float for what its
# own numpy code returns (np.sum(...) / float(n): Mult_acc_*; np.mean(...): MAE; np.corrcoef: Corr),
# and round() on a numpy float is np.round. Listed here independently of metrics.ROUNDING.
PYTHON_ROUNDED = {"Has0_acc_2", "Has0_F1_score", "Non0_acc_2", "Non0_F1_score", "F1_score"}
NUMPY_ROUNDED = {"Mult_acc_2", "Mult_acc_3", "Mult_acc_5", "Mult_acc_7", "MAE", "Corr"}

# Values where the two roundings disagree: x * 1e4 lands on .5 in floating point (numpy rounds that
# to even) while the exact binary x lies on the other side of the half (Python rounds that).
DIFFERING = [5e-05, 0.00025, 0.00035, 0.60015, 0.60045]


def _differs(v, nd=4):
    return round(v, nd) != float(np.round(v, nd))


def test_the_pinned_values_do_round_differently():
    assert all(_differs(v) for v in DIFFERING)
    # round(5e-05, 4): the binary value is 5.00000000000000023960868e-05, above the half -> 0.0001;
    # np.round: 5e-05 * 1e4 == 0.5 exactly, half to even -> 0.0
    assert (round(5e-05, 4), float(np.round(5e-05, 4))) == (0.0001, 0.0)
    assert (round(0.60015, 4), float(np.round(0.60015, 4))) == (0.6001, 0.6002)
    # and such values are common among accuracies k / n: odd k over n = 20000
    found = [k / 20000 for k in range(1, 20000, 2) if _differs(k / 20000)]
    assert len(found) > 1000


def test_every_key_has_its_mmsa_rounding():
    assert PYTHON_ROUNDED | NUMPY_ROUNDED == set(metrics.MOSI_KEYS) | set(metrics.SIMS_KEYS)
    for key in PYTHON_ROUNDED | NUMPY_ROUNDED:
        for v in DIFFERING:
            want = round(v, 4) if key in PYTHON_ROUNDED else float(np.round(v, 4))
            assert metrics.round_metric(key, v, 4) == want, (key, v)
    assert math.isnan(metrics.round_metric("Corr", float("nan"), 4))


@pytest.mark.parametrize("dataset", ["mosi", "sims"])
def test_compute_rounds_each_key_with_its_rule(dataset, monkeypatch):
    # every key gets the same raw value, on which the two roundings disagree
    for v in DIFFERING:
        fake = {k: v for k in metrics.keys_for(dataset)}
        monkeypatch.setattr(metrics, "_sims" if dataset == "sims" else "_mosi", lambda p, y, fake=fake: dict(fake))
        r = metrics.compute([0.1, 0.2], [0.3, 0.4], dataset, ndigits=4)
        assert list(r) == list(metrics.keys_for(dataset))
        for k, got in r.items():
            want = round(v, 4) if k in PYTHON_ROUNDED else float(np.round(v, 4))
            assert got == want and type(got) is float, (k, v, got, want)


def test_rounding_on_real_accuracies():
    # 20000 labels of 1.0; 12003 predictions 1.0 (right for every accuracy) and the rest -1.0: every
    # accuracy is 12003 / 20000 = 0.60015, yet MMSA reports 0.6001 for the scikit-learn accuracies
    # and 0.6002 for its own numpy ones.
    n, k = 20000, 12003
    y = np.ones(n)
    p = np.where(np.arange(n) < k, 1.0, -1.0)
    raw = metrics.compute(p, y, "mosi")
    assert raw["Has0_acc_2"] == raw["Non0_acc_2"] == raw["Mult_acc_5"] == raw["Mult_acc_7"] == k / n
    r = metrics.compute(p, y, "mosi", ndigits=4)
    assert r["Has0_acc_2"] == r["Non0_acc_2"] == 0.6001
    assert r["Mult_acc_5"] == r["Mult_acc_7"] == 0.6002
    # SIMS: 0.5 is in the positive bin of every binning, -0.5 in a negative one
    s = metrics.compute(p * 0.5, y * 0.5, "sims", ndigits=4)
    assert s["Mult_acc_2"] == s["Mult_acc_3"] == s["Mult_acc_5"] == 0.6002


def test_rounding_on_a_real_mae():
    # |p - y| = [v, v, 2v, 0]: the mean is exactly v = 5e-05, which numpy (MMSA's np.mean) rounds to 0
    v = 5e-05
    p, y = [v, v, 2 * v, -2.0], [0.0, 0.0, 0.0, -2.0]
    assert metrics.compute(p, y, "mosi")["MAE"] == v
    assert metrics.compute(p, y, "mosi", ndigits=4)["MAE"] == 0.0


def test_rounding_arguments_are_checked():
    with pytest.raises(TypeError, match="ndigits must be an int"):
        metrics.compute(P, Y, "mosi", ndigits=4.0)
    with pytest.raises(KeyError, match="metric name must be one of"):
        metrics.round_metric("Acc_9", 0.5, 4)


# -- classification (IEMOCAP-style) ------------------------------------------------------------

def test_classification_metrics_against_a_hand_computation():
    from fsrf.metrics import classification

    y = np.array([0, 0, 1, 2, 2, 2])
    pred = np.array([0, 1, 1, 2, 0, 2])
    logits = np.eye(3)[pred] * 2.0 - 0.5  # argmax is pred
    m = classification(logits, y, class_names=["neu", "hap", "ang"])
    # per class (TP, FP, FN): 0 -> (1, 1, 1) F1 1/2, support 2; 1 -> (1, 1, 0) F1 2/3, support 1;
    # 2 -> (2, 0, 1) F1 4/5, support 3
    assert m["Acc"] == pytest.approx(4 / 6)
    assert m["WF1"] == pytest.approx((2 * 0.5 + 1 * 2 / 3 + 3 * 0.8) / 6)
    assert m["MacroF1"] == pytest.approx((0.5 + 2 / 3 + 0.8) / 3)
    # "neu" against the rest: t = 110000, p = 100010 -> 4 of 6 agree; F1(True) = 1/2 (support 2),
    # F1(False) = 2*3 / (2*3 + 1 + 1) = 3/4 (support 4)
    assert m["neu_acc"] == pytest.approx(4 / 6)
    assert m["neu_F1"] == pytest.approx((2 * 0.5 + 4 * 0.75) / 6)
    assert list(m)[:3] == ["Acc", "WF1", "MacroF1"]
    assert classification(pred, y, class_names=["a", "b", "c"])["Acc"] == pytest.approx(4 / 6)


def test_classification_f1_takes_the_true_labels_first():
    from fsrf.metrics import classification

    y = np.array([0, 0, 0, 1])
    pred = np.array([0, 1, 1, 1])
    # true first: F1_0 = 2/(2+0+2) = 1/2 (support 3), F1_1 = 2/(2+2+0) = 1/2 (support 1) -> 1/2;
    # swapped, the weights would be the predicted counts (1 and 3) with the same F1s: equal here, so
    # use the per-class supports of a case where they differ
    assert classification(np.eye(2)[pred], y)["WF1"] == pytest.approx(0.5)
    y2, p2 = np.array([0, 0, 0, 1, 1]), np.array([0, 1, 1, 1, 1])
    # F1_0 = 2/(2+0+2) = 1/2 (support 3), F1_1 = 4/(4+2+0) = 2/3 (support 2): (3/2 + 4/3)/5
    assert classification(np.eye(2)[p2], y2)["WF1"] == pytest.approx((1.5 + 4 / 3) / 5)


@pytest.mark.parametrize("scores, labels, match", [
    (np.zeros((4, 3)), np.array([0, 1, 2, 3]), r"labels must be class indices in \[0, 2\]"),
    (np.zeros((4, 3)), np.array([0.0, 1.0, 2.0, 1.0]), r"labels must be \(N,\) integer class indices"),
    (np.zeros((4, 3)), np.array([0, 1, 2]), "same, non-zero number of samples"),
    (np.zeros((4, 1)), np.array([0, 0, 0, 0]), "C >= 2"),
    (np.full((2, 2), np.nan), np.array([0, 1]), "NaN or Inf"),
    (np.array([0, 1]), np.array([0, 1]), "need class_names"),
])
def test_classification_metrics_refuse_bad_input(scores, labels, match):
    from fsrf.metrics import classification

    with pytest.raises(ValueError, match=match):
        classification(scores, labels)


def test_legacy_f1_swaps_the_arguments_and_only_under_its_own_keys():
    # predictions mostly positive, labels mostly negative: the supports differ, so the order matters
    y = np.array([-1.0, -2.0, -0.5, 1.0, -1.5, 0.0])
    p = np.array([0.5, 1.0, -0.5, 1.0, 2.0, 0.3])
    m = metrics.compute(p, y, "mosei", legacy_f1=True)
    # Has0: true = y >= 0 -> [0,0,0,1,0,1]; pred = p >= 0 -> [1,1,0,1,1,1]
    # correct (weights from the true labels): class 0 (TP 1, FP 0, FN 3) F1 2/5, support 4;
    # class 1 (TP 2, FP 3, FN 0) F1 4/7, support 2 -> (4*2/5 + 2*4/7)/6
    assert m["Has0_F1_score"] == pytest.approx((4 * 2 / 5 + 2 * 4 / 7) / 6)
    # swapped (weights from the predictions): class 0 support 1, class 1 support 5, same F1s
    assert m["Has0_F1_score_legacy"] == pytest.approx((1 * 2 / 5 + 5 * 4 / 7) / 6)
    assert "Has0_F1_score_legacy" not in metrics.compute(p, y, "mosei")
    sims = metrics.compute(np.array([0.5, 0.3, -0.2, 0.9]), np.array([-0.4, -0.6, -0.2, 0.8]), "sims", legacy_f1=True)
    assert set(sims) == set(metrics.SIMS_KEYS) | {"F1_score_legacy"}
    assert metrics.round_metric("F1_score_legacy", 0.123456, 4) == 0.1235
