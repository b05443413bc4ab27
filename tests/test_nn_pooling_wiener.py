"""Tests of fsrf.nn.WienerPool and fsrf.nn.pooling.wiener_mean against float64 loops and the
Gaussian model they are the posterior mean of."""

import pytest
import torch

from fsrf.nn import WienerPool
from fsrf.nn.pooling import wiener_mean

D = 5


def _frames(B=7, T=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(B, T, D, generator=g, dtype=dtype) * torch.linspace(0.5, 2.0, D, dtype=dtype) \
        + torch.randn(B, 1, D, generator=g, dtype=dtype)
    mask = torch.rand(B, T, generator=g) > 0.4
    mask[0] = False            # a missing modality
    mask[1] = False
    mask[1, 2] = True          # one frame only
    mask[2] = True             # every frame
    return c, mask


def _loop(c, mask, center, noise_var, signal_var):
    """Each row's posterior mean, one row and one feature at a time."""
    out = torch.zeros(c.shape[0], c.shape[2], dtype=torch.float64)
    for b in range(c.shape[0]):
        x = c[b][mask[b]].double()
        if len(x) == 0:
            continue
        for j in range(c.shape[2]):
            tau2, sig2 = max(float(signal_var[j]), 0.0), float(noise_var[j])
            f = tau2 / (tau2 + sig2 / len(x)) if tau2 + sig2 > 0 else 1.0
            out[b, j] = center[j] + f * (x[:, j].mean() - center[j])
    return out


def _batch_stats(c, mask):
    """The centre, per-feature noise and signal variances one batch gives, one row at a time."""
    rows = [c[b][mask[b]].double() for b in range(c.shape[0])]
    means = torch.stack([x.mean(0) for x in rows if len(x) >= 1])
    noise = torch.stack([x.var(0, unbiased=True) for x in rows if len(x) >= 2]).mean(0)
    counts = torch.tensor([len(x) for x in rows if len(x) >= 1], dtype=torch.float64)
    signal = means.var(0, unbiased=True) - (noise / counts.unsqueeze(-1)).mean(0)
    return means.mean(0), noise, signal


def test_wiener_mean_against_a_float64_loop():
    c, mask = _frames()
    center = torch.linspace(0.5, -0.5, D, dtype=torch.float64)
    noise = torch.tensor([0.0, 0.7, 6.0, 40.0, 1.0], dtype=torch.float64)
    for signal in (torch.tensor([1.0, 0.3, 2.0, 0.5, -0.2], dtype=torch.float64),  # a negative estimate: no signal
                   torch.zeros(D, dtype=torch.float64)):
        got = wiener_mean(c, mask, center, noise, signal)
        torch.testing.assert_close(got, _loop(c, mask, center, noise, signal), rtol=1e-12, atol=1e-12)


def test_a_feature_without_signal_is_the_centre_and_one_without_noise_is_kept():
    c, mask = _frames()
    center = torch.full((D,), 0.25, dtype=torch.float64)
    z = wiener_mean(c, mask, center, torch.ones(D, dtype=torch.float64), torch.zeros(D, dtype=torch.float64))
    has = mask.any(1)
    torch.testing.assert_close(z[has], center.expand(int(has.sum()), D))
    z = wiener_mean(c, mask, center, torch.zeros(D, dtype=torch.float64), torch.ones(D, dtype=torch.float64))
    w = mask.double().unsqueeze(-1)
    torch.testing.assert_close(z, (c * w).sum(1) / w.sum(1).clamp_min(1.0))


def test_rows_without_frames_are_zero_with_a_zero_gradient():
    c, mask = _frames()
    c.requires_grad_(True)
    ones = torch.ones(D, dtype=torch.float64)
    z = wiener_mean(c, mask, torch.zeros(D, dtype=torch.float64), ones, ones)
    assert torch.equal(z[0], torch.zeros(D, dtype=torch.float64))
    z.pow(2).sum().backward()
    assert torch.isfinite(c.grad).all() and not c.grad[0].any() and not c.grad[~mask].any()
    assert c.grad[2].abs().sum() > 0


def test_the_first_batch_sets_the_estimates_then_they_average():
    pool = WienerPool(D).double().train()
    batches = [_frames(seed=s) for s in range(12)]
    stats = [_batch_stats(c, m) for c, m in batches]
    z = pool(*batches[0])
    for got, want in zip((pool.center, pool.noise_var, pool.signal_var), stats[0]):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(z, _loop(*batches[0], stats[0][0], stats[0][1], stats[0][2]))
    for c, m in batches[1:10]:
        pool(c, m)
    for k, got in enumerate((pool.center, pool.noise_var, pool.signal_var)):
        torch.testing.assert_close(got, torch.stack([s[k] for s in stats[:10]]).mean(0))
    before = [t.clone() for t in (pool.center, pool.noise_var, pool.signal_var)]
    pool(*batches[10])  # from the 11th batch on: exponential with the momentum
    for k, got in enumerate((pool.center, pool.noise_var, pool.signal_var)):
        torch.testing.assert_close(got, before[k] + 0.1 * (stats[10][k] - before[k]))
    assert pool.tracked.tolist() == [11, 11]


def test_on_gaussian_data_it_learns_the_variances_and_beats_the_plain_mean():
    # true means m ~ N(c0, diag tau^2), frames m + N(0, diag sigma^2), a per-sample share of frames kept
    g = torch.Generator().manual_seed(3)
    tau = torch.tensor([0.1, 0.5, 1.0, 1.5, 2.0], dtype=torch.float64)
    sigma = torch.tensor([1.5, 1.0, 2.0, 0.5, 1.5], dtype=torch.float64)
    c0 = torch.linspace(-1, 1, D, dtype=torch.float64)

    def draw(B, T=20):
        m = c0 + tau * torch.randn(B, D, generator=g, dtype=torch.float64)
        x = m[:, None] + sigma * torch.randn(B, T, D, generator=g, dtype=torch.float64)
        keep = torch.rand(B, T, generator=g) < torch.rand(B, 1, generator=g, dtype=torch.float64).clamp_min(0.05)
        return m, x, keep

    pool = WienerPool(D, momentum=0.02).double().train()
    for _ in range(300):
        _, x, keep = draw(128)
        pool(x, keep)
    torch.testing.assert_close(pool.noise_var.sqrt(), sigma, rtol=0.03, atol=0.0)
    torch.testing.assert_close(pool.signal_var.clamp_min(0).sqrt(), tau, rtol=0.1, atol=0.05)
    pool.eval()
    m, x, keep = draw(20000)
    z, mean = pool(x, keep, return_mean=True)
    has = keep.any(1)
    err_plain = (mean - m)[has].pow(2).mean(0)
    err_pool = (z - m)[has].pow(2).mean(0)
    # the posterior mean with the true variances, per feature: the error it should reach
    n = keep.sum(1, keepdim=True).double().clamp_min(1)
    f = tau ** 2 / (tau ** 2 + sigma ** 2 / n)
    err_bayes = (c0 + f * (mean - c0) - m)[has].pow(2).mean(0)
    assert (err_pool < err_plain).all()
    torch.testing.assert_close(err_pool, err_bayes, rtol=0.03, atol=0.0)


def test_eval_updates_nothing_and_a_row_does_not_depend_on_its_batch():
    pool = WienerPool(D).double().train()
    for s in range(3):
        pool(*_frames(seed=s))
    pool.eval()
    state = {k: v.clone() for k, v in pool.state_dict().items()}
    c, mask = _frames(seed=7)
    whole = pool(c, mask)
    for b in range(c.shape[0]):
        torch.testing.assert_close(pool(c[b:b + 1], mask[b:b + 1])[0], whole[b], rtol=0, atol=0)
    assert all(torch.equal(state[k], v) for k, v in pool.state_dict().items())


def test_a_batch_of_one_sample_or_of_single_frames_leaves_what_it_cannot_inform():
    pool = WienerPool(D).double().train()
    c, mask = _frames()
    pool(c, mask)
    before = [t.clone() for t in (pool.center, pool.noise_var, pool.signal_var)]
    one = torch.zeros_like(mask)
    one[:, 0] = True  # one frame each: no within-sample variance
    pool(c, one)
    assert torch.equal(pool.noise_var, before[1]) and not torch.equal(pool.center, before[0])
    before = [t.clone() for t in (pool.center, pool.noise_var, pool.signal_var)]
    pool(c[2:3], mask[2:3])  # one sample: no between-sample variance
    assert torch.equal(pool.signal_var, before[2]) and not torch.equal(pool.noise_var, before[1])
    pool(c, torch.zeros_like(mask))
    assert pool.tracked.tolist() == [3, 2]


def test_low_precision_frames_are_pooled_in_float32_and_returned_in_their_dtype():
    c, mask = _frames(dtype=torch.float32)
    want = WienerPool(D).train()(c, mask)
    pool16 = WienerPool(D).train()
    got = pool16(c.to(torch.bfloat16), mask)
    assert got.dtype == torch.bfloat16 and pool16.signal_var.dtype == torch.float32
    torch.testing.assert_close(got.float(), want, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("kwargs, match", [({"dim": 0}, "dim"), ({"dim": 4, "momentum": 0.0}, "momentum"),
                                           ({"dim": 4, "momentum": 1.5}, "momentum"), ({"dim": True}, "dim")])
def test_bad_arguments_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        WienerPool(**kwargs)


def test_bad_inputs_are_refused_by_name():
    pool = WienerPool(D)
    c, mask = _frames(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"c must be \(B, T, 5\)"):
        pool(c[..., :3], mask)
    with pytest.raises(ValueError, match="mask must be a bool"):
        pool(c, mask.float())
    with pytest.raises(TypeError, match="c must be a torch.Tensor; got list"):
        pool(c.tolist(), mask)
    with pytest.raises(TypeError, match="return_mean must be a bool; got int 1"):
        pool(c, mask, return_mean=1)
