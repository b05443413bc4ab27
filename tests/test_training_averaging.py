"""The moving average of the weights (fsrf.training.averaging) and how training selects, saves and resumes it."""

import numpy as np
import pytest
import torch
from torch import nn

from _helpers import write_tiny_mmsa
from fsrf import FSRFConfig
from fsrf.data import load_mmsa
from fsrf.training.averaging import WeightAverage, epoch_decay
from fsrf.training.checkpoint import load_checkpoint
from fsrf.training.trainer import TrainSettings, _steps_per_epoch, fit

# the private shrinkage pooling (the default before config version 4) has running statistics, which
# the weight average must average too
CFG = FSRFConfig(d_model=16, num_heads=2, dropout=0.1, pooling="norm+private-shrink")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    # 40 training samples in batches of 16: 3 steps an epoch
    return write_tiny_mmsa(tmp_path_factory.mktemp("data") / "tiny.pkl", seed=4)


def settings(**kw):
    return TrainSettings(**{"epochs": 3, "batch_size": 16, "progress": False, "patience": 5, **kw})


def test_average_is_the_weighted_sum_of_the_snapshots():
    # independent form: a_T = (prod_t d_t) θ_0 + sum_k (1 - d_k) (prod_{t>k} d_t) θ_k, in float64
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    avg = WeightAverage(net, decay=0.9)
    snaps = [[p.detach().double().clone() for p in net.parameters()]]
    decays = []
    for _ in range(30):
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.randn_like(p))
        decays.append(avg.current_decay())
        avg.update(net)
        snaps.append([p.detach().double().clone() for p in net.parameters()])
    t = np.arange(1, 31)
    np.testing.assert_allclose(decays, np.minimum(0.9, (1 + t) / (10 + t)), rtol=0, atol=1e-15)
    coef = [float(np.prod(decays))] + [(1 - decays[k]) * float(np.prod(decays[k + 1:])) for k in range(30)]
    assert abs(sum(coef) - 1.0) < 1e-12
    with avg.applied(net):
        got = [p.detach().double().clone() for p in net.parameters()]
    for i, g in enumerate(got):
        want = sum(c * s[i] for c, s in zip(coef, snaps))
        torch.testing.assert_close(g, want, rtol=1e-5, atol=1e-6)


def test_applied_restores_the_live_weights_and_running_statistics():
    net = nn.BatchNorm1d(3)
    avg = WeightAverage(net, decay=0.5)
    with torch.no_grad():
        net.weight.fill_(2.0)
        net.running_mean.fill_(7.0)
    live = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(RuntimeError, match="inside"):
        with avg.applied(net):
            assert torch.equal(net.weight, torch.ones(3))  # the average still holds the initial weights
            assert torch.equal(net.running_mean, torch.zeros(3))  # ... and the initial statistics
            assert int(net.num_batches_tracked) == int(live["num_batches_tracked"])  # a counter is not averaged
            raise RuntimeError("inside")
    for k, v in net.state_dict().items():
        assert torch.equal(v, live[k]), k


def test_running_statistics_are_averaged_like_the_weights():
    """The pooling's running centre under the average is the same weighted sum of its snapshots as
    the weights (float64, the independent form of the first test); its batch counter is the live one."""
    from fsrf.nn import ShrinkagePool

    torch.manual_seed(1)
    net = nn.ModuleDict({"lin": nn.Linear(4, 4), "pool": ShrinkagePool(4)})
    avg = WeightAverage(net, decay=0.8)
    snaps_w, snaps_c, decays = [net["lin"].weight.detach().double().clone()], [net["pool"].center.double().clone()], []
    for _ in range(12):
        x = torch.randn(6, 5, 4) + 3.0
        net["pool"](net["lin"](x), torch.rand(6, 5) > 0.2)  # training mode: updates the running estimates
        with torch.no_grad():
            net["lin"].weight.add_(0.1 * torch.randn(4, 4))
        decays.append(avg.current_decay())
        avg.update(net)
        snaps_w.append(net["lin"].weight.detach().double().clone())
        snaps_c.append(net["pool"].center.double().clone())
    coef = [float(np.prod(decays))] + [(1 - decays[k]) * float(np.prod(decays[k + 1:])) for k in range(12)]
    live_tracked = net["pool"].tracked.clone()
    with avg.applied(net):
        torch.testing.assert_close(net["lin"].weight.double(), sum(c * s for c, s in zip(coef, snaps_w)))
        torch.testing.assert_close(net["pool"].center.double(), sum(c * s for c, s in zip(coef, snaps_c)))
        assert torch.equal(net["pool"].tracked, live_tracked)
    torch.testing.assert_close(net["pool"].center.double(), snaps_c[-1])
    # a state saved before the statistics were averaged loads, and they start from the model's
    state = avg.state_dict()
    assert list(state["buffers"]) == ["pool.center", "pool.noise_var"]
    old = {k: v for k, v in state.items() if k != "buffers"}
    again = WeightAverage(net, decay=0.8)
    again.load_state_dict(old)
    with again.applied(net):
        torch.testing.assert_close(net["pool"].center.double(), snaps_c[-1])


def test_low_precision_parameters_are_averaged_in_float32():
    net = nn.Linear(4, 4).to(torch.bfloat16)
    avg = WeightAverage(net, decay=0.99)
    assert all(a.dtype == torch.float32 for a in avg._avg)
    avg.update(net)
    with avg.applied(net):
        assert net.weight.dtype == torch.bfloat16


def test_state_round_trip_and_mismatch():
    net = nn.Linear(3, 2)
    avg = WeightAverage(net, decay=0.8)
    with torch.no_grad():
        net.weight.add_(1.0)
    avg.update(net)
    other = WeightAverage(nn.Linear(3, 2), decay=0.3)
    other.load_state_dict(avg.state_dict())
    assert other.steps == 1 and other.decay == 0.8
    for a, b in zip(avg._avg, other._avg):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="weight average"):
        WeightAverage(nn.Linear(3, 3, bias=False), 0.5).load_state_dict(avg.state_dict())
    with pytest.raises(ValueError, match="parameters"):
        avg.update(nn.Linear(3, 2, bias=False))


@pytest.mark.parametrize("bad", [1.0, -0.1, True, "0.9"])
def test_bad_decay_is_refused(bad):
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(nn.Linear(2, 2), bad)
    with pytest.raises(ValueError, match="ema_decay"):
        TrainSettings(ema_decay=bad)


def test_settings_refuse_a_non_bool_switch():
    with pytest.raises(TypeError, match="ema"):
        TrainSettings(ema=1)


def test_decay_follows_the_epoch_length():
    assert epoch_decay(25) == pytest.approx(0.96)
    assert epoch_decay(1) == 0.0
    assert _steps_per_epoch(800, 32, 1) == 25
    assert _steps_per_epoch(33, 16, 1) == 2  # a trailing batch of one sample is skipped
    assert _steps_per_epoch(34, 16, 1) == 3
    assert _steps_per_epoch(42, 16, 2) == 2  # 21 samples per rank
    with pytest.raises(ValueError, match="steps_per_epoch"):
        epoch_decay(0)


def test_best_checkpoint_holds_the_average_and_last_the_live_weights(tiny_data, tmp_path):
    data = load_mmsa(tiny_data)
    # one epoch: it is the selected one, so best.pt and last.pt are written from the same step
    fit(data, tmp_path, config=CFG, settings=settings(epochs=1), seed=3, log=None)
    last, best = load_checkpoint(tmp_path / "last.pt"), load_checkpoint(tmp_path / "best.pt")
    wa = last["weight_average"]
    assert wa["steps"] == 3 and wa["decay"] == pytest.approx(1 - 1 / 3)
    assert set(wa["average"]) < set(best["model"])
    # CFG pools its private parts with ShrinkagePool: its running statistics are averaged
    assert wa["buffers"] and all(n.endswith(("center", "noise_var")) for n in wa["buffers"])
    averaged = {**wa["average"], **wa["buffers"]}
    for name, v in best["model"].items():
        # parameters and running statistics: the average; other buffers (counters): the live model's
        assert torch.equal(v, averaged.get(name, last["model"][name])), name
    assert any(not torch.equal(wa["average"][n], last["model"][n]) for n in wa["average"])
    assert any(not torch.equal(wa["buffers"][n], last["model"][n]) for n in wa["buffers"])


def test_resume_reproduces_the_average(tiny_data, tmp_path):
    data = load_mmsa(tiny_data)
    fit(data, tmp_path / "straight", config=CFG, settings=settings(), seed=6, log=None)
    fit(data, tmp_path / "resumed", config=CFG, settings=settings(epochs=1), seed=6, log=None)
    fit(data, tmp_path / "resumed", config=CFG, settings=settings(), seed=6, resume=True, log=None)
    for name in ("best.pt", "last.pt"):
        a, b = load_checkpoint(tmp_path / "straight" / name), load_checkpoint(tmp_path / "resumed" / name)
        assert a["epoch"] == b["epoch"]
        for k in a["model"]:
            assert torch.equal(a["model"][k], b["model"][k]), (name, k)
    wa, wb = (load_checkpoint(tmp_path / d / "last.pt")["weight_average"] for d in ("straight", "resumed"))
    assert wa["steps"] == wb["steps"]
    for k in wa["average"]:
        assert torch.equal(wa["average"][k], wb["average"][k]), k


def test_resume_refuses_a_changed_switch(tiny_data, tmp_path):
    data = load_mmsa(tiny_data)
    fit(data, tmp_path, config=CFG, settings=settings(epochs=1, ema=False), seed=1, log=None)
    assert "weight_average" not in load_checkpoint(tmp_path / "last.pt")
    with pytest.raises(ValueError, match="ema=False.*ema=True"):
        fit(data, tmp_path, config=CFG, settings=settings(epochs=2), seed=1, resume=True, log=None)
    res = fit(data, tmp_path, config=CFG, settings=settings(epochs=2, ema=False), seed=1, resume=True, log=None)
    assert res["epochs_run"] == 2
