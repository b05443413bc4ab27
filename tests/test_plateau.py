"""FSRF leaves the constant-prediction plateau at once with the default training settings.

Every auxiliary term of the method is minimised by a batch-constant representation, and with the
first reconstruction's weights small problems sat for epochs on a plateau that predicts a
constant (docs/research-log/01-first-reconstruction-plateau.md). This test trains the
defaults at d = 32 on quick-sized data (500 / 150 / 200 samples) with five seeds and asks each
to beat the best constant predictor's validation MAE by at least 3 % within two epochs.

The validation MAE here is the model-selection score of ``fit`` (mean of the validation MAE at
frame-drop rates 0 and 0.5); a constant predictor scores the same at every rate, its best value
being the MAE of the validation labels' median.
"""

import numpy as np
import pytest

from fsrf.config import FSRFConfig
from fsrf.data import load_mmsa, make_synthetic
from fsrf.training import TrainSettings, fit


@pytest.mark.slow
def test_defaults_beat_the_constant_predictor_within_two_epochs(tmp_path):
    path = tmp_path / "quick.pkl"
    make_synthetic("mosei", path, n_train=500, n_valid=150, n_test=200, seed=0)
    data = load_mmsa(path)
    y = data.split("valid").labels.astype(np.float64)
    constant = float(np.mean(np.abs(y - np.median(y))))
    ratios = []
    for seed in range(1111, 1116):
        # the default settings; only the first two epochs are looked at
        res = fit(data, tmp_path / f"s{seed}", config=FSRFConfig(d_model=32), settings=TrainSettings(epochs=2,
                  progress=False), seed=seed, dataset="mosei", log=None)
        ratios.append(min(row["select_mae"] for row in res["history"]) / constant)
    assert max(ratios) <= 0.97, f"best validation MAE / constant predictor's, per seed: {np.round(ratios, 3)}"


# One draw per layout the project supports, each with a generator of the regime matrix
# (scripts/regime_matrix.py): the layout's real dims, lengths and label grid, few samples.
# The content generator's layouts fail today, and issue 29 stays open on them: measured on the
# sims draw below (ratio per epoch over 8 epochs), FSRF's defaults stay at 0.99-1.03, and so does
# FSRF with every method term off (dhf, das, recovery, modality dropout: 0.98-1.02), while late
# fusion reaches 0.92 and MulT 0.96. The encoder, not DHF or DAS, is what does not learn there.
# strict: the day they pass, the mark must go.
_CONTENT_PLATEAU = pytest.mark.xfail(strict=True, reason="FSRF's encoder stays on the constant predictor's plateau "
                                     "on the content generator at this size (issue 29)")
LAYOUTS = {
    "mosi-aligned-factor": dict(preset="mosi", aligned=True, generator="factor"),
    "mosei-unaligned-events": dict(preset="mosei", aligned=False, generator="events"),
    "sims-content": dict(preset="sims", aligned=False, generator="content"),
    "mosei-aligned-content": dict(preset="mosei", aligned=True, generator="content"),
}


@pytest.mark.slow
@pytest.mark.parametrize("layout", [pytest.param(k, marks=_CONTENT_PLATEAU) if "content" in k else k for k in LAYOUTS])
def test_the_default_train_settings_learn_on_every_layout(tmp_path, layout):
    """``fsrf train``'s defaults (FSRFConfig(), TrainSettings()) leave the constant predictor behind
    within three epochs on each layout, at a tiny size (300 / 100 / 100 samples, d = 32)."""
    kw = LAYOUTS[layout]
    path = tmp_path / "data.pkl"
    make_synthetic(kw["preset"], path, n_train=300, n_valid=100, n_test=100, seed=7, aligned=kw["aligned"],
                   generator=kw["generator"])
    data = load_mmsa(path)
    y = data.split("valid").labels.astype(np.float64)
    constant = float(np.mean(np.abs(y - np.median(y))))
    res = fit(data, tmp_path / "run", config=FSRFConfig(d_model=32), settings=TrainSettings(epochs=3, progress=False),
              seed=1, dataset=kw["preset"], log=None)
    ratio = min(row["select_mae"] for row in res["history"]) / constant
    assert ratio <= 0.97, f"{layout}: best validation MAE / constant predictor's = {ratio:.3f}"
