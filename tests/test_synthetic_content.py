"""The "content" generator: evidence that lives in word order, in a few frames and in a contour.

Each property is checked with the generator's own directions, rebuilt from its seed, against the
file's features and labels: order-aware text features beat the bag of words, the expression frames
beat the mean over frames, the tone's slope beats its mean, and speakers shift audio and vision.
"""

import numpy as np
import pytest

from fsrf.data import synthetic, synthetic_content

SEED = 3
DIMS = {"text": 48, "audio": 12, "vision": 40}
LENS = {"text": 24, "audio": 80, "vision": 30}


@pytest.fixture(scope="module")
def sims():
    data, truth = synthetic._generate_with_truth("sims", n_train=1500, n_valid=10, n_test=10, seed=SEED, dims=DIMS,
                                                 seq_lens=LENS, generator="content")
    world = synthetic_content.world(np.random.default_rng([SEED, 0]), DIMS, {})
    return data["train"], truth["train"], world


def _valid(x):
    return np.abs(x).sum(-1) > 0


def _corr(a, b):
    return float(np.corrcoef(a, b)[0, 1])


def test_word_order_carries_the_texts_sentiment(sims):
    split, truth, w = sims
    x = split["text"].astype(np.float64) - w["mu"]["text"]
    u = w["u_pol"] / np.linalg.norm(w["u_pol"])
    un = w["u_neg"] / np.linalg.norm(w["u_neg"])
    p, q = x @ u, x @ un
    after_negator = np.concatenate([np.zeros((len(p), 1), bool), q[:, :-1] > 0.5 * np.linalg.norm(w["u_neg"])], 1)
    bag = p.sum(1)
    ordered = np.where(after_negator, -p, p).sum(1)
    t_label = split["regression_labels_T"]
    assert (truth["negated"] > 0).mean() > 0.3  # negation is common
    assert _corr(ordered, t_label) > _corr(bag, t_label) + 0.25
    assert _corr(ordered, t_label) > 0.6


def test_the_expression_frames_carry_the_faces_sentiment(sims):
    split, truth, w = sims
    x = split["vision"].astype(np.float64)
    u = w["u_expr"] / np.linalg.norm(w["u_expr"])
    p = (x - w["mu"]["vision"]) / w["scale"]["vision"] @ u
    valid = _valid(split["vision"])
    n = valid.sum(1)
    t = np.arange(x.shape[1])[None, :]
    s0, s1 = truth["expression"][:, 0:1], truth["expression"][:, 1:2]
    on = (t >= s0) & (t < s1)
    at_expression = (p * on).sum(1) / on.sum(1) - (p * valid * ~on).sum(1) / np.maximum((valid & ~on).sum(1), 1)
    mean = (p * valid).sum(1) / n
    v_label = split["regression_labels_V"]
    assert np.all((s1 - s0) >= 1) and np.all(s1[:, 0] <= n)
    assert _corr(at_expression, v_label) > _corr(mean, v_label) + 0.2


def test_the_tone_contour_is_in_the_slope_not_the_mean(sims):
    split, _, w = sims
    x = np.nan_to_num(split["audio"].astype(np.float64), neginf=0.0)  # COVAREP's -inf, as the loader does
    u = w["u_tone"] / np.linalg.norm(w["u_tone"])
    p = (x - w["mu"]["audio"]) / w["scale"]["audio"] @ u
    valid = _valid(split["audio"])
    n = valid.sum(1)
    pos = (np.arange(x.shape[1])[None, :] + 0.5) / n[:, None]
    contour = np.where(valid, np.sin(np.pi * (pos - 0.5)), 0.0)
    slope = (p * contour).sum(1) / n
    mean = (p * valid).sum(1) / n
    a_label = split["regression_labels_A"]
    assert _corr(slope, a_label) > _corr(mean, a_label) + 0.2


def test_speakers_shift_voice_and_face_but_not_words(sims):
    split, truth, _ = sims
    spk = truth["speaker"]
    for m, shifted in (("audio", True), ("vision", True), ("text", False)):
        x = np.nan_to_num(split[m].astype(np.float64), neginf=0.0)
        valid = _valid(split[m])
        means = (x * valid[..., None]).sum(1) / valid.sum(1, keepdims=True)
        # variance of the speakers' mean frames against the variance within a speaker
        spread = np.var(np.stack([means[spk == s].mean(0) for s in np.unique(spk)]), 0).mean()
        within = np.mean([means[spk == s].var(0).mean() for s in np.unique(spk) if (spk == s).sum() > 1])
        if shifted:
            assert spread > 2 * within, m
        else:
            assert spread < within, m


def test_it_loads_in_every_layout(tmp_path):
    from fsrf.data import load_mmsa, make_synthetic

    for preset, aligned in (("mosei", True), ("mosei", False), ("mosi", False), ("sims", False)):
        p = make_synthetic(preset, tmp_path / f"{preset}{aligned}.pkl", n_train=8, n_valid=4, n_test=4, seed=1,
                           aligned=aligned, generator="content", dims={"text": 16, "audio": 5, "vision": 6},
                           seq_lens={"text": 8, "audio": 8 if aligned else 12, "vision": 8 if aligned else 10})
        d = load_mmsa(p)
        assert d.synthetic["structure"] == "content"
        assert np.isfinite(d.split("train").features["vision"]).all()
