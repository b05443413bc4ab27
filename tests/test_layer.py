"""FSRFLayer: shapes, missing modalities, losses, recovery, ablations, bad input."""


import pytest
import torch

import fsrf
from fsrf import FSRFConfig, FSRFLayer

SMALL = dict(d_model=16, num_heads=2, dropout=0.0)


def make_batch(dims, B=6, T=None, gen=None, masks=True):
    gen = gen or torch.Generator().manual_seed(1)
    T = T or {m: 3 + i for i, m in enumerate(dims)}
    inputs = {m: torch.randn(B, T[m], D, generator=gen) for m, D in dims.items()}
    mk = {m: torch.rand(B, T[m], generator=gen) > 0.3 for m in dims} if masks else None
    if mk is not None:
        for m in dims:
            mk[m][:, 0] = True  # every modality available unless a test removes it
    return inputs, mk


@pytest.mark.parametrize("dims", [
    {"x": 5, "y": 7},
    {"text": 12, "audio": 4, "vision": 6},
    {"a": 3, "b": 9, "c": 2, "dd": 5},
])
def test_shapes_for_any_number_of_modalities(dims):
    layer = FSRFLayer(dims, config=FSRFConfig(**SMALL, d_out=10))
    inputs, masks = make_batch(dims)
    out = layer(inputs, masks)
    B, M = 6, len(dims)
    assert out.fused.shape == (B, 10)
    assert out.available.shape == (B, M) and out.available.dtype == torch.bool
    for part in (out.homogeneous, out.heterogeneous, out.noise):
        assert set(part) == set(dims)
        assert all(v.shape == (B, 16) for v in part.values())
    assert set(out.losses) == {"orth", "dered", "hom", "rec", "loo"}
    assert out.aux_loss.dim() == 0


def _finite_grads(layer):
    for name, p in layer.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("case", ["one", "several", "all_for_some_samples", "whole_batch", "absent_key"])
def test_missing_modalities_give_finite_values_and_grads(case):
    dims = {"text": 8, "audio": 4, "vision": 5}
    layer = FSRFLayer(dims, config=FSRFConfig(**SMALL))
    inputs, masks = make_batch(dims, B=8)
    if case == "one":
        masks["audio"][2] = False
    elif case == "several":
        masks["audio"][2] = False
        masks["vision"][2] = False
        masks["text"][5] = False
    elif case == "all_for_some_samples":
        for m in dims:
            masks[m][1] = False
            masks[m][4] = False
    elif case == "whole_batch":
        masks["vision"][:] = False
    elif case == "absent_key":
        del inputs["audio"], masks["audio"]
    out = layer(inputs, masks)
    assert torch.isfinite(out.fused).all()
    for v in out.losses.values():
        assert torch.isfinite(v)
    (out.fused.square().mean() + out.aux_loss).backward()
    _finite_grads(layer)
    if case == "absent_key":
        assert not out.available[:, 1].any()
    if case == "whole_batch":
        assert not out.available[:, 2].any()


def test_sample_with_every_modality_missing_gets_the_shared_prior_output():
    dims = {"a": 4, "b": 3}
    layer = FSRFLayer(dims, config=FSRFConfig(**SMALL)).eval()
    inputs, masks = make_batch(dims, B=4)
    for m in dims:
        masks[m][0] = False
        masks[m][3] = False
    out = layer(inputs, masks)
    assert torch.isfinite(out.fused).all()
    # documented: all such samples get the same output, independent of their (unobserved) features
    torch.testing.assert_close(out.fused[0], out.fused[3])
    assert torch.count_nonzero(out.shared_mean[0]) == 0


def test_eval_computes_no_aux_loss(monkeypatch):
    dims = {"a": 4, "b": 3, "c": 2}
    layer = FSRFLayer(dims, config=FSRFConfig(**SMALL)).eval()

    def boom(*a, **k):
        raise AssertionError("a loss op ran in eval mode")

    for op in ("factor_constraints", "mmd", "kl_divergence"):
        monkeypatch.setattr(fsrf.ops, op, boom)
    out = layer(*make_batch(dims))
    assert out.losses == {}
    assert out.aux_loss.item() == 0.0


def test_recovered_homogeneous_part_is_mean_of_available_ones():
    dims = {"a": 4, "b": 3, "c": 5}
    layer = FSRFLayer(dims, config=FSRFConfig(**SMALL)).eval()
    inputs, masks = make_batch(dims, B=5)
    masks["b"][1] = False           # sample 1: b missing -> mean of s_a, s_c
    masks["a"][3] = False
    masks["c"][3] = False           # sample 3: only b available -> s_b
    out = layer(inputs, masks)
    # independent computation from the pooled features with the shared encoder
    s = {m: layer.enc_hom(out.pooled[m]) for m in dims}
    torch.testing.assert_close(out.homogeneous["b"][1], (s["a"][1] + s["c"][1]) / 2)
    torch.testing.assert_close(out.homogeneous["a"][3], s["b"][3])
    torch.testing.assert_close(out.homogeneous["c"][3], s["b"][3])
    # observed modalities keep their own codes
    torch.testing.assert_close(out.homogeneous["b"][0], s["b"][0])
    # the recovered heterogeneous part comes from G_b(s̄)
    torch.testing.assert_close(out.heterogeneous["b"][1], layer.recover_het["b"](out.shared_mean[1:2])[0])


def test_pooled_feature_is_zero_for_missing_modality():
    dims = {"a": 4, "b": 3}
    layer = FSRFLayer(dims, config=FSRFConfig(**SMALL))
    inputs, masks = make_batch(dims, B=3)
    masks["a"][2] = False
    out = layer(inputs, masks)
    assert torch.count_nonzero(out.pooled["a"][2]) == 0


def test_masked_frames_do_not_influence_output():
    dims = {"a": 4, "b": 3}
    layer = FSRFLayer(dims, config=FSRFConfig(**SMALL, conv_kernel=3)).eval()
    inputs, masks = make_batch(dims, B=3)
    out1 = layer(inputs, masks)
    changed = {m: x.clone() for m, x in inputs.items()}
    changed["a"][~masks["a"]] = 1e3
    out2 = layer(changed, masks)
    torch.testing.assert_close(out1.fused, out2.fused)


def test_loss_terms_present_and_positive():
    dims = {"a": 6, "b": 5, "c": 4}
    layer = FSRFLayer(dims, config=FSRFConfig(**SMALL))
    out = layer(*make_batch(dims, B=16))
    for key in ("orth", "dered", "hom", "rec", "loo"):
        assert out.losses[key].item() > 0, key
    cfg = layer.config
    expect = (cfg.w_orth * out.losses["orth"] + cfg.w_dered * out.losses["dered"]
              + cfg.w_hom * out.losses["hom"] + cfg.w_rec * out.losses["rec"] + cfg.w_recov * out.losses["loo"])
    torch.testing.assert_close(out.aux_loss, expect)


@pytest.mark.parametrize("private_pool", ["shrink", "wiener", "same"])
@pytest.mark.parametrize("key", ["orth", "dered", "hom", "rec"])
def test_each_loss_decreases_when_optimised_alone(key, private_pool):
    torch.manual_seed(3)
    dims = {"a": 6, "b": 5, "c": 4}
    layer = FSRFLayer(dims, config=FSRFConfig(**SMALL, private_pool=private_pool))
    inputs, masks = make_batch(dims, B=32)
    # the frames of a sample share a signal, as real features do: the shrinkage of the private path
    # leaves a mean of pure-noise frames at its running centre, where there is nothing to decorrelate
    g = torch.Generator().manual_seed(7)
    inputs = {m: x + 2 * torch.randn(x.shape[0], 1, x.shape[2], generator=g) for m, x in inputs.items()}
    opt = torch.optim.Adam(layer.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss = layer(inputs, masks).losses[key]
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = layer(inputs, masks).losses[key].item()
    assert last < 0.7 * first, (key, first, last)


def test_distill_terms():
    dims = {"a": 6, "b": 5, "c": 4}
    layer = FSRFLayer(dims, config=FSRFConfig(**SMALL))
    inputs, masks = make_batch(dims, B=8)
    out_a = layer(inputs, masks)
    masks_b = {m: v.clone() for m, v in masks.items()}
    masks_b["b"][:4] = False
    out_b = layer(inputs, masks_b)
    das = layer.distill(out_a, out_b)
    assert set(das) == {"kl", "dist", "recov"}
    assert das["kl"].item() > 0 and das["recov"].item() > 0
    # identical views: KL and biased MMD vanish, nothing to recover
    same = layer.distill(out_a, out_a)
    assert abs(same["kl"].item()) < 1e-6
    assert abs(same["dist"].item()) < 1e-5
    assert same["recov"].item() == 0.0
    with pytest.raises(TypeError, match="out_a"):
        layer.distill("x", out_b)


def test_recovery_targets_are_stop_gradient():
    dims = {"a": 6, "b": 5}
    layer = FSRFLayer(dims, config=FSRFConfig(**SMALL))
    inputs, masks = make_batch(dims, B=6)
    out_a = layer(inputs, masks)
    masks_b = {m: v.clone() for m, v in masks.items()}
    masks_b["b"][:] = False
    out_b = layer(inputs, masks_b)
    recov = layer.distill(out_a, out_b)["recov"]
    # gradient w.r.t. view A's factors must be zero; w.r.t. view B's recovered parts non-zero
    ga = torch.autograd.grad(recov, [out_a.heterogeneous["b"], out_b.heterogeneous["b"]], allow_unused=True)
    assert ga[0] is None or torch.count_nonzero(ga[0]) == 0
    assert ga[1] is not None and torch.count_nonzero(ga[1]) > 0


@pytest.mark.parametrize("mode", ["both", "none", "richer"])
def test_kl_stop_grad_modes(mode):
    dims = {"a": 6, "b": 5}
    layer = FSRFLayer(dims, config=FSRFConfig(**SMALL, kl_stop_grad=mode))
    inputs, masks = make_batch(dims, B=6)
    out_a = layer(inputs, masks)
    masks_b = {m: v.clone() for m, v in masks.items()}
    masks_b["b"][:3] = False
    out_b = layer(inputs, masks_b)
    kl = layer.distill(out_a, out_b)["kl"]
    ga, gb = torch.autograd.grad(kl, [out_a.fused, out_b.fused], allow_unused=True)
    assert torch.count_nonzero(gb) > 0
    if mode == "richer":
        assert ga is None or torch.count_nonzero(ga) == 0
    else:
        assert torch.count_nonzero(ga) > 0
    # independent check of the value: T^2 [KL(pa||pb) + KL(pb||pa)], batchmean, in float64
    T = layer.config.kl_temperature
    la = torch.log_softmax(out_a.fused.double() / T, -1)
    lb = torch.log_softmax(out_b.fused.double() / T, -1)
    ref = T * T * ((la.exp() * (la - lb)).sum(-1).mean() + (lb.exp() * (lb - la)).sum(-1).mean())
    torch.testing.assert_close(kl.double(), ref, rtol=1e-4, atol=1e-6)


def test_ablation_dhf_off_fuses_plain_features(monkeypatch):
    dims = {"a": 4, "b": 3}
    layer = FSRFLayer(dims, config=FSRFConfig(**SMALL, dhf=False))
    assert not hasattr(layer, "enc_hom")
    called = []
    monkeypatch.setattr(fsrf.ops, "factor_constraints", lambda *a, **k: called.append(1))
    out = layer(*make_batch(dims))
    assert out.losses == {} and out.homogeneous == {} and out.aux_loss.item() == 0
    assert not called
    assert out.fused.shape == (6, 16)


def test_ablation_recovery_off_leaves_missing_parts_zero():
    dims = {"a": 4, "b": 3}
    on = FSRFLayer(dims, config=FSRFConfig(**SMALL)).eval()
    off = FSRFLayer(dims, config=FSRFConfig(**SMALL, recovery=False)).eval()
    off.load_state_dict(on.state_dict())
    inputs, masks = make_batch(dims, B=4)
    masks["b"][0] = False
    o_on, o_off = on(inputs, masks), off(inputs, masks)
    assert torch.count_nonzero(o_off.heterogeneous["b"][0]) == 0
    assert torch.count_nonzero(o_off.homogeneous["b"][0]) == 0
    assert torch.count_nonzero(o_on.heterogeneous["b"][0]) > 0
    # samples with everything observed are unaffected by the switch
    torch.testing.assert_close(o_on.fused[1:], o_off.fused[1:])
    assert not torch.allclose(o_on.fused[0], o_off.fused[0])


def test_state_dict_round_trip(tmp_path):
    dims = {"a": 4, "b": 3, "c": 2}
    layer = FSRFLayer(dims, config=FSRFConfig(**SMALL)).eval()
    path = tmp_path / "layer.pt"
    torch.save(layer.state_dict(), path)
    other = FSRFLayer(dims, config=FSRFConfig(**SMALL)).eval()
    other.load_state_dict(torch.load(path, weights_only=True))
    inputs, masks = make_batch(dims)
    torch.testing.assert_close(layer(inputs, masks).fused, other(inputs, masks).fused, rtol=0, atol=0)


def test_deterministic_given_seed():
    dims = {"a": 4, "b": 3}
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        layer = FSRFLayer(dims, config=FSRFConfig(d_model=16, num_heads=2, dropout=0.2))
        out = layer(*make_batch(dims))
        (out.fused.sum() + out.aux_loss).backward()
        outs.append((out.fused.detach(), [p.grad.clone() for p in layer.parameters() if p.grad is not None]))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=0, atol=0)
    for g0, g1 in zip(outs[0][1], outs[1][1]):
        torch.testing.assert_close(g0, g1, rtol=0, atol=0)


def test_autocast_bf16_cpu():
    dims = {"a": 4, "b": 3, "c": 5}
    layer = FSRFLayer(dims, config=FSRFConfig(**SMALL))
    inputs, masks = make_batch(dims, B=8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(inputs, masks)
        loss = out.fused.float().square().mean() + out.aux_loss
    loss.backward()
    assert torch.isfinite(loss)
    _finite_grads(layer)


# -- bad input ---------------------------------------------------------------------------------

def test_construction_errors():
    with pytest.raises(ValueError, match="at least two modalities"):
        FSRFLayer({"a": 3})
    with pytest.raises(TypeError, match="modality_dims"):
        FSRFLayer([("a", 3), ("b", 4)])
    with pytest.raises(ValueError, match=r"modality_dims\['b'\]"):
        FSRFLayer({"a": 3, "b": 0})
    with pytest.raises(TypeError, match="config"):
        FSRFLayer({"a": 3, "b": 4}, config={"d_model": 8})
    with pytest.raises(ValueError, match="divisible"):
        FSRFLayer({"a": 3, "b": 4}, d_model=10, num_heads=3)
    with pytest.raises(ValueError, match="kl_stop_grad"):
        FSRFConfig(kl_stop_grad="sometimes")


def test_forward_errors():
    dims = {"text": 4, "audio": 3}
    layer = FSRFLayer(dims, config=FSRFConfig(**SMALL))
    inputs, masks = make_batch(dims, B=4)
    with pytest.raises(ValueError, match="unknown modality 'video'"):
        layer({**inputs, "video": torch.randn(4, 2, 3)})
    with pytest.raises(ValueError, match=r"inputs\['audio'\] must have feature dim 3"):
        layer({**inputs, "audio": torch.randn(4, 4, 5)})
    with pytest.raises(ValueError, match="batch sizes disagree"):
        layer({**inputs, "audio": torch.randn(5, 4, 3)})
    with pytest.raises(ValueError, match=r"masks\['text'\] must have shape \(4, 3\)"):
        layer(inputs, {**masks, "text": torch.ones(4, 5, dtype=torch.bool)})
    with pytest.raises(TypeError, match=r"masks\['text'\] must be a bool tensor \(dtype torch.bool"):
        layer(inputs, {**masks, "text": masks["text"].float()})
    with pytest.raises(TypeError, match=r"inputs\['text'\] must be a floating-point tensor"):
        layer({**inputs, "text": torch.ones(4, 3, 4, dtype=torch.long)})
    bad = inputs["text"].clone()
    bad[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"inputs\['text'\] contains NaN"):
        layer({**inputs, "text": bad})
    bad[0, 0, 0] = float("-inf")
    with pytest.raises(ValueError, match=r"inputs\['text'\] contains NaN or Inf"):
        layer({**inputs, "text": bad})
    with pytest.raises(ValueError, match=r"must have shape \(B, T, 4\)"):
        layer({**inputs, "text": torch.randn(4, 4)})
    with pytest.raises(TypeError, match="inputs must be a non-empty dict"):
        layer([inputs["text"]])
