"""``LabelDequantizer`` and ``FSRFConfig.dequantize_labels``: the estimated grid step, the noise's
distribution, what it does to the L1 minimiser (against a float64 formula), and the wiring."""

import numpy as np
import pytest
import torch

from fsrf import FSRFConfig, FSRFModel
from fsrf.models.label_grid import TIE_TOL, LabelDequantizer

THIRD = 1.0 / 3.0


def _grid_labels(n, seed, step=THIRD, lo=-3.0, hi=3.0):
    g = np.random.default_rng(seed)
    k = g.integers(round(lo / step), round(hi / step) + 1, n)
    return torch.tensor(k * step, dtype=torch.float32)  # float32 storage, as MMSA's pickles


def test_the_step_is_the_grid_step_and_never_goes_below_it():
    dq = LabelDequantizer().train()
    steps = []
    for seed in range(20):
        dq(_grid_labels(32, seed))
        steps.append(float(dq.step))
    assert all(s >= THIRD - 1e-6 for s in steps)
    assert steps == sorted(steps, reverse=True)  # a running minimum
    assert abs(steps[-1] - THIRD) < 1e-6
    assert abs(float(dq.half_width()) - THIRD / 2) < 1e-6


def test_fifths_and_sparse_batches():
    dq = LabelDequantizer().train()
    dq(torch.tensor([0.0, 0.4, 1.2]))  # no two adjacent grid points yet: step 0.4
    assert abs(float(dq.step) - 0.4) < 1e-6
    for seed in range(10):
        dq(_grid_labels(64, seed, step=0.2, lo=-1.0, hi=1.0))
    assert abs(float(dq.step) - 0.2) < 1e-6


def test_no_step_no_noise_and_ties_are_not_gaps():
    dq = LabelDequantizer().train()
    y = torch.tensor([0.5, 0.5, 0.5 + TIE_TOL / 10])
    torch.testing.assert_close(dq(y), y, rtol=0, atol=0)
    assert torch.isinf(dq.step) and float(dq.half_width()) == 0.0
    one = torch.tensor([1.0])
    torch.testing.assert_close(dq(one), one, rtol=0, atol=0)


def test_continuous_labels_get_almost_no_noise():
    dq = LabelDequantizer().train()
    g = torch.Generator().manual_seed(0)
    for _ in range(10):
        dq(torch.randn(256, generator=g))
    assert float(dq.half_width()) < 1e-2


def test_the_noise_is_uniform_on_minus_h_h_and_independent_of_the_label():
    dq = LabelDequantizer().train()
    dq(torch.tensor([0.0, THIRD]))
    h = THIRD / 2
    g = torch.Generator().manual_seed(1)
    y = _grid_labels(200_000, 3)
    noise = (dq(y, generator=g) - y).double().numpy()
    assert noise.min() >= -h - 1e-6 and noise.max() <= h + 1e-6
    # quantiles of U(-h, h) and its variance h^2 / 3; sd of a quantile at n = 2e5 is < 1e-3 h
    qs = np.linspace(0.05, 0.95, 19)
    np.testing.assert_allclose(np.quantile(noise, qs), -h + 2 * h * qs, atol=0.01 * h)
    assert abs(noise.var() - h * h / 3) < 0.01 * h * h
    pos = y.numpy() > 0
    assert abs(noise[pos].mean() - noise[~pos].mean()) < 0.01 * h


def _smoothed_median(p_pos, h=THIRD / 2):
    """float64: the median of y + U(-h, h), y = -1/3, 0, 1/3 with probabilities 0.25, 0.75 - p, p,
    by bisection of the CDF of the mixture of uniforms."""
    pts = np.array([-THIRD, 0.0, THIRD])
    w = np.array([0.25, 0.75 - p_pos, p_pos])

    def cdf(c):
        return float(np.sum(w * np.clip((c - pts + h) / (2 * h), 0.0, 1.0)))

    lo, hi = -1.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if cdf(mid) < 0.5 else (lo, mid)
    return 0.5 * (lo + hi)


@pytest.mark.parametrize("p_pos", [0.05, 0.15, 0.25, 0.35])
def test_the_l1_minimiser_moves_with_the_evidence_once_dequantized(p_pos):
    # Without noise the median of this label is 0 for every p_pos < 0.5 (a flat step: the L1 loss
    # cannot order these samples); with it, it is the smoothed median, strictly increasing in p_pos.
    g = np.random.default_rng(7)
    n = 400_000
    y = torch.tensor(g.choice([-THIRD, 0.0, THIRD], size=n, p=[0.25, 0.75 - p_pos, p_pos]), dtype=torch.float32)
    assert float(torch.median(y)) == 0.0
    dq = LabelDequantizer().train()
    dq(torch.tensor([0.0, THIRD]))
    out = dq(y, generator=torch.Generator().manual_seed(2)).double()
    # the L1 minimiser over constants is the sample median
    assert abs(float(out.median()) - _smoothed_median(p_pos)) < 2e-3
    assert _smoothed_median(p_pos) < _smoothed_median(p_pos + 0.05)


def test_eval_mode_passes_labels_through_and_keeps_the_step():
    dq = LabelDequantizer().train()
    dq(torch.tensor([0.0, THIRD]))
    dq.eval()
    y = _grid_labels(16, 0)
    torch.testing.assert_close(dq(y), y, rtol=0, atol=0)
    dq(torch.tensor([0.0, 0.1]))
    assert abs(float(dq.step) - THIRD) < 1e-6


def test_a_generator_makes_the_draw_reproducible():
    dq = LabelDequantizer().train()
    y = _grid_labels(64, 0)
    a = dq(y, generator=torch.Generator().manual_seed(5))
    b = dq(y, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, y)


@pytest.mark.parametrize("bad, exc", [([0.0, 1.0], TypeError), (torch.zeros(2, 2), ValueError),
                                      (torch.zeros(3, dtype=torch.long), ValueError)])
def test_bad_labels_are_refused_by_name(bad, exc):
    with pytest.raises(exc, match="labels"):
        LabelDequantizer().train()(bad)


def test_a_bad_generator_is_refused_by_name():
    with pytest.raises(TypeError, match="generator"):
        LabelDequantizer().train()(torch.zeros(3), generator=5)


def test_integer_labels_still_train_the_model():
    model = FSRFModel(DIMS, FSRFConfig(d_model=8, num_heads=2, das=False, dequantize_labels=True)).train()
    inputs, masks, _ = _batch()
    loss, _ = model.training_loss(inputs, masks, torch.arange(24) % 3 - 1)
    assert torch.isfinite(loss) and float(model.dequantize.step) == 1.0


def test_it_compiles_into_one_graph():
    dq = LabelDequantizer().train()
    compiled = torch.compile(dq, fullgraph=True, backend="eager")
    y = _grid_labels(32, 0)
    out = compiled(y)
    assert abs(float(dq.step) - THIRD) < 1e-6 or float(dq.step) > THIRD  # updated inside the graph
    assert (out - y).abs().max() <= float(dq.half_width()) + 1e-6


# -- the switch in FSRFModel --------------------------------------------------------------------
DIMS = {"text": 6, "audio": 5, "vision": 4}


def _batch(B=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(B, 4, D, generator=g) for m, D in DIMS.items()}
    return inputs, None, _grid_labels(B, seed)


def test_the_switch_changes_the_task_loss_only_in_training():
    cfg = dict(d_model=8, num_heads=2, dropout=0.0, das=False, modality_dropout=0.0)
    torch.manual_seed(0)
    off = FSRFModel(DIMS, FSRFConfig(**cfg, dequantize_labels=False))
    on = FSRFModel(DIMS, FSRFConfig(**cfg, dequantize_labels=True))
    state = off.state_dict()
    assert "dequantize.step" not in state  # the state dict of a model without it is as before
    on.load_state_dict(state)  # so a checkpoint of one loads; the step starts unknown
    assert torch.isinf(on.dequantize.step)
    inputs, masks, labels = _batch()
    on.train(), off.train()
    _, p_off = off.training_loss(inputs, masks, labels, generator=torch.Generator().manual_seed(1))
    _, p_on = on.training_loss(inputs, masks, labels, generator=torch.Generator().manual_seed(1))
    assert abs(float(on.dequantize.step) - THIRD) < 1e-6  # these labels hold adjacent thirds
    pred = off(inputs, masks).detach().double()
    # the task loss is L1 against y + (2u - 1) h, u the generator's first draw, h = 1/6
    u = torch.rand(labels.shape, generator=torch.Generator().manual_seed(1)).double()
    target = labels.double() + (2 * u - 1) * THIRD / 2
    torch.testing.assert_close(p_on["task_a"].double(), (pred - target).abs().mean(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(p_off["task_a"].double(), (pred - labels.double()).abs().mean(), rtol=1e-5, atol=1e-6)
    on.eval(), off.eval()
    _, e_on = on.training_loss(inputs, masks, labels)
    _, e_off = off.training_loss(inputs, masks, labels)
    torch.testing.assert_close(e_on["task_a"], e_off["task_a"], rtol=0, atol=0)


def test_bad_switch_value_is_refused_by_name():
    with pytest.raises(TypeError, match="dequantize_labels"):
        FSRFConfig(dequantize_labels=1)
