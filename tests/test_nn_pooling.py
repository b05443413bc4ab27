"""Tests of fsrf.nn.ShrinkagePool and fsrf.nn.pooling.shrunk_mean against float64 loops."""

import pytest
import torch

from fsrf.nn import ShrinkagePool
from fsrf.nn.pooling import shrunk_mean

D = 5


def _frames(B=7, T=6, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(B, T, D, generator=g, dtype=dtype) + torch.linspace(-1, 1, D, dtype=dtype)
    mask = torch.rand(B, T, generator=g) > 0.4
    mask[0] = False            # a missing modality
    mask[1] = False
    mask[1, 2] = True          # one frame only
    mask[2] = True             # every frame
    return c, mask


def _loop(c, mask, center, noise_var):
    """The positive-part James-Stein estimate of each row's true mean, one row at a time."""
    d = c.shape[2]
    out = torch.zeros(c.shape[0], d, dtype=torch.float64)
    for b in range(c.shape[0]):
        x = c[b][mask[b]].double()
        if len(x) == 0:
            continue
        mu = x.mean(0)
        dist2 = float(((mu - center) ** 2).sum())
        per_feature = float(noise_var) / len(x) / d     # the variance of one feature of the mean
        out[b] = center + max(0.0, 1.0 - (d - 2) * per_feature / dist2) * (mu - center)
    return out


def _batch_stats(c, mask):
    """The centre and the noise variance one batch gives, one row at a time."""
    means, within = [], []
    for b in range(c.shape[0]):
        x = c[b][mask[b]].double()
        if len(x) >= 1:
            means.append(x.mean(0))
        if len(x) >= 2:
            within.append(float(((x - x.mean(0)) ** 2).sum()) / (len(x) - 1))
    return torch.stack(means).mean(0), torch.tensor(within, dtype=torch.float64).mean()


def test_shrunk_mean_against_a_float64_loop():
    c, mask = _frames()
    center = torch.linspace(0.5, -0.5, D, dtype=torch.float64)
    for noise_var in (0.0, 0.7, 6.0, 40.0):  # from no shrinkage to rows pulled onto the centre
        got = shrunk_mean(c, mask, center, torch.tensor(noise_var, dtype=torch.float64))
        torch.testing.assert_close(got, _loop(c, mask, center, noise_var), rtol=1e-12, atol=1e-12)


def test_many_clean_frames_keep_the_mean_and_noisy_few_fall_to_the_centre():
    c = torch.ones(2, 400, D, dtype=torch.float64) * 2.0
    mask = torch.zeros(2, 400, dtype=torch.bool)
    mask[0] = True
    mask[1, 0] = True
    center = torch.zeros(D, dtype=torch.float64)
    z = shrunk_mean(c, mask, center, torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(z[0], c[0, 0], rtol=1e-4)                       # f = 1 - 0.6 / 400 / 20
    torch.testing.assert_close(z[1], c[1, 0] * (1 - 0.6 / 20))             # one frame: f = 0.97
    far = shrunk_mean(c, mask, center, torch.tensor(1e9, dtype=torch.float64))
    assert torch.equal(far, torch.zeros_like(far))                         # within the noise: the centre


def test_two_features_or_fewer_are_not_shrunk():
    # James-Stein's estimator only beats the plain mean from three dimensions on
    c, mask = _frames()
    for d in (1, 2):
        x = c[..., :d]
        got = shrunk_mean(x, mask, torch.zeros(d, dtype=torch.float64), torch.tensor(5.0, dtype=torch.float64))
        w = mask.double().unsqueeze(-1)
        torch.testing.assert_close(got, (x * w).sum(1) / w.sum(1).clamp_min(1.0))


def test_rows_without_frames_are_zero_with_a_zero_gradient_and_the_rest_differentiable():
    c, mask = _frames()
    c.requires_grad_(True)
    z = shrunk_mean(c, mask, torch.zeros(D, dtype=torch.float64), torch.tensor(1.0, dtype=torch.float64))
    assert torch.equal(z[0], torch.zeros(D, dtype=torch.float64))
    z.pow(2).sum().backward()
    assert torch.isfinite(c.grad).all() and not c.grad[0].any()
    assert not c.grad[~mask].any() and c.grad[2].abs().sum() > 0         # unobserved frames get none
    # a mean exactly at the centre (a row of one frame, the centre that frame): finite, the centre
    centre = c[1, 2].detach()
    c.grad = None
    z = shrunk_mean(c, mask, centre, torch.tensor(1.0, dtype=torch.float64))
    torch.testing.assert_close(z[1], centre)
    z.sum().backward()
    assert torch.isfinite(c.grad).all() and not c.grad[1].any()


def test_the_first_batch_sets_the_estimates_then_they_average():
    pool = ShrinkagePool(D).double().train()
    batches = [_frames(seed=s) for s in range(12)]
    stats = [_batch_stats(c, m) for c, m in batches]
    z = pool(*batches[0])
    torch.testing.assert_close(pool.center, stats[0][0])
    torch.testing.assert_close(pool.noise_var, stats[0][1])
    # in training the batch is pooled with the estimates it has just updated
    torch.testing.assert_close(z, _loop(*batches[0], stats[0][0], stats[0][1]))
    pool(*batches[1])  # cumulative average while 1 / count > momentum
    torch.testing.assert_close(pool.center, (stats[0][0] + stats[1][0]) / 2)
    for c, m in batches[2:10]:
        pool(c, m)
    torch.testing.assert_close(pool.center, torch.stack([s[0] for s in stats[:10]]).mean(0))
    torch.testing.assert_close(pool.noise_var, torch.stack([s[1] for s in stats[:10]]).mean())
    before = pool.center.clone(), pool.noise_var.clone()
    pool(*batches[10])  # from the 11th batch on: exponential with the momentum
    torch.testing.assert_close(pool.center, before[0] + 0.1 * (stats[10][0] - before[0]))
    torch.testing.assert_close(pool.noise_var, before[1] + 0.1 * (stats[10][1] - before[1]))
    assert pool.tracked.tolist() == [11, 11]


def test_a_batch_without_evidence_leaves_the_estimates_alone():
    pool = ShrinkagePool(D).double().train()
    c, mask = _frames()
    pool(c, mask)
    before = pool.center.clone(), pool.noise_var.clone(), pool.tracked.clone()
    one = torch.zeros_like(mask)
    one[:, 0] = True  # one frame each: a centre, but no within-sample variance
    pool(c, one)
    assert torch.equal(pool.noise_var, before[1]) and not torch.equal(pool.center, before[0])
    assert pool.tracked.tolist() == [2, 1]
    pool(c, torch.zeros_like(mask))  # nothing observed: nothing learned, zeros out
    assert pool.tracked.tolist() == [2, 1]


def test_eval_updates_nothing_and_a_row_does_not_depend_on_its_batch():
    pool = ShrinkagePool(D).double().train()
    for s in range(3):
        pool(*_frames(seed=s))
    pool.eval()
    state = {k: v.clone() for k, v in pool.state_dict().items()}
    c, mask = _frames(seed=7)
    whole = pool(c, mask)
    for b in range(c.shape[0]):
        torch.testing.assert_close(pool(c[b:b + 1], mask[b:b + 1])[0], whole[b], rtol=0, atol=0)
    assert all(torch.equal(state[k], v) for k, v in pool.state_dict().items())


def test_low_precision_frames_are_pooled_in_float32_and_returned_in_their_dtype():
    pool = ShrinkagePool(D).train()
    c, mask = _frames(dtype=torch.float32)
    want = pool(c, mask)
    pool32 = ShrinkagePool(D).train()
    got = pool32(c.to(torch.bfloat16), mask)
    assert got.dtype == torch.bfloat16 and pool32.center.dtype == torch.float32
    # the error of one bf16 rounding of the inputs, not of bf16 arithmetic
    torch.testing.assert_close(got.float(), want, rtol=3e-2, atol=3e-2)


@pytest.mark.parametrize("kwargs, match", [({"dim": 0}, "dim"), ({"dim": 4, "momentum": 0.0}, "momentum"),
                                           ({"dim": 4, "momentum": 1.5}, "momentum"), ({"dim": True}, "dim")])
def test_bad_arguments_are_refused_by_name(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ShrinkagePool(**kwargs)


def test_bad_inputs_are_refused_by_name():
    pool = ShrinkagePool(D)
    c, mask = _frames(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"c must be \(B, T, 5\)"):
        pool(c[..., :3], mask)
    with pytest.raises(ValueError, match="mask must be a bool"):
        pool(c, mask.float())
    with pytest.raises(ValueError, match="mask must be a bool"):
        pool(c, mask[:, :3])
    with pytest.raises(TypeError, match="c must be a torch.Tensor; got list"):
        pool(c.tolist(), mask)
    with pytest.raises(TypeError, match="mask must be a torch.Tensor; got ndarray"):
        pool(c, mask.numpy())


@pytest.mark.parametrize("training", [True, False])
def test_return_mean_gives_the_plain_masked_mean_beside_the_same_output(training):
    c, mask = _frames()
    pool, twin = ShrinkagePool(D).double(), ShrinkagePool(D).double()
    pool.train(training), twin.train(training)
    z, mean = pool(c, mask, return_mean=True)
    torch.testing.assert_close(z, twin(c, mask), rtol=0, atol=0)
    for name in ("center", "noise_var", "tracked"):  # the running estimates move as without it
        torch.testing.assert_close(getattr(pool, name), getattr(twin, name), rtol=0, atol=0)
    want = torch.zeros(c.shape[0], D, dtype=torch.float64)
    for b in range(c.shape[0]):
        if mask[b].any():
            want[b] = c[b][mask[b]].mean(0)
    torch.testing.assert_close(mean, want, rtol=1e-12, atol=1e-12)


def test_return_mean_must_be_a_bool():
    c, mask = _frames(dtype=torch.float32)
    with pytest.raises(TypeError, match="return_mean must be a bool; got int 1"):
        ShrinkagePool(D)(c, mask, return_mean=1)
