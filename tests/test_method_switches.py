"""The switches of docs/FSRF_METHOD.md §7: their definitions, their validation, and old checkpoints.

Each new default is checked against an independent statement of what it does (a float64
formula, or the relation between the two settings of the switch); the plateau they remove is
tested in test_plateau.py.
"""

import itertools
import math

import pytest
import torch

import fsrf.missing
from _helpers import version_1_dict
from fsrf import FSRFConfig, FSRFLayer, FSRFModel
from fsrf.config import FIRST_RECONSTRUCTION

# the first reconstruction's fields as version 1 named them (pooling was three switches)
V1_FIRST = {*FIRST_RECONSTRUCTION, "pool_norm", "pool_shrink", "private_pool"} - {"pooling"}
from fsrf.models import rebuild_model

DIMS = {"text": 6, "audio": 5, "vision": 4}
SMALL = dict(d_model=8, num_heads=2, dropout=0.0)


def _batch(B=12, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(B, 3 + i, D, generator=g, dtype=dtype) for i, (m, D) in enumerate(DIMS.items())}
    masks = {m: torch.ones(B, 3 + i, dtype=torch.bool) for i, m in enumerate(DIMS)}
    # every pattern of availability, twice over: a modality is missing where its mask is all False
    for b, pat in enumerate(itertools.islice(itertools.cycle([(1, 1, 1), (1, 0, 0), (0, 1, 0), (0, 0, 1),
                                                               (1, 1, 0), (1, 0, 1)]), B)):
        for m, on in zip(DIMS, pat):
            masks[m][b] = bool(on)
    labels = torch.linspace(-2, 2, B, dtype=dtype)
    return inputs, masks, labels


# -- configuration --------------------------------------------------------------------------
def test_first_reconstruction_restores_the_first_values_and_nothing_else():
    old = FSRFConfig.first_reconstruction(d_model=16)
    for k, v in FIRST_RECONSTRUCTION.items():
        assert getattr(old, k) == v, k
    assert old.d_model == 16 and old.w_hom == FSRFConfig().w_hom
    # the regime matrix returned one of them to its first value (config version 5)
    back = {"shared_pool"}
    assert all(getattr(FSRFConfig(), k) != v for k, v in FIRST_RECONSTRUCTION.items() if k not in back)
    assert all(getattr(FSRFConfig(), k) == FIRST_RECONSTRUCTION[k] for k in back)


def test_a_saved_config_without_the_new_fields_reads_with_their_first_values():
    saved = {k: v for k, v in version_1_dict(FSRFConfig(d_model=16)).items() if k not in V1_FIRST}
    cfg = FSRFConfig.from_saved({**saved, "modality_dropout": 0.1})
    assert cfg.modality_dropout == 0.1  # what the file says wins
    assert cfg.aux_warmup_steps == 0 and cfg.aux_warmup_epochs == 0.0
    assert cfg.recovery_loss == "view" and not cfg.fusion_availability
    assert FSRFConfig.from_saved(FSRFConfig().to_dict()) == FSRFConfig()


@pytest.mark.parametrize("field, value, exc", [
    ("orth_reduction", "max", ValueError), ("hom_reduction", 1, ValueError),
    ("recovery_loss", "loo", ValueError), ("aux_warmup_steps", -1, ValueError),
    ("aux_warmup_steps", 2.5, TypeError), ("modality_dropout", 1.5, ValueError),
    ("rec_detach_target", 1, TypeError), ("mmd_normalize", "yes", TypeError),
    ("fusion_availability", None, TypeError), ("pool_norm", "on", TypeError), ("shared_pool", "max", ValueError),
    ("pool_shrink", 1, TypeError), ("private_pool", "ln", ValueError), ("private_pool", True, ValueError),
    ("w_pred", -0.5, ValueError), ("w_pred", "1", TypeError), ("w_pred", float("nan"), ValueError)])
def test_bad_switch_values_are_refused_by_name(field, value, exc):
    with pytest.raises(exc, match=field):
        FSRFConfig(**{field: value})


def test_an_old_checkpoint_loads_and_behaves_as_trained():
    torch.manual_seed(0)
    old = FSRFModel(DIMS, FSRFConfig.first_reconstruction(**SMALL)).eval()
    state = {k: v for k, v in old.state_dict().items() if k != "steps"}  # written before the counter
    saved = {k: v for k, v in version_1_dict(old.config).items() if k not in V1_FIRST}
    model = rebuild_model("fsrf", DIMS, saved)
    model.load_state_dict(state)
    inputs, masks, _ = _batch()
    torch.testing.assert_close(model.eval()(inputs, masks), old(inputs, masks), rtol=0, atol=0)
    assert int(model.steps) == 0


# -- warm-up ----------------------------------------------------------------------------------
def test_the_warm_up_counts_training_steps_only():
    model = FSRFModel(DIMS, FSRFConfig(**SMALL, aux_warmup_steps=4))
    inputs, masks, labels = _batch()
    scales = [float(model.training_loss(inputs, masks, labels)[1]["aux_scale"]) for _ in range(6)]
    assert scales == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    model.eval()
    model.training_loss(inputs, masks, labels)
    assert int(model.steps) == 6
    off = FSRFModel(DIMS, FSRFConfig(**SMALL, aux_warmup_steps=0))
    assert float(off.training_loss(inputs, masks, labels)[1]["aux_scale"]) == 1.0


# -- reductions and normalisation --------------------------------------------------------------
def test_mean_reductions_and_mmd_normalisation_rescale_the_sums():
    torch.manual_seed(1)
    a = FSRFLayer(DIMS, config=FSRFConfig(**SMALL))
    b = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, orth_reduction="sum", hom_reduction="sum", mmd_normalize=False))
    b.load_state_dict(a.state_dict())
    inputs, masks, _ = _batch()
    la, lb = a(inputs, masks).losses, b(inputs, masks).losses
    n_orth_pairs = 3 * 3 + 3   # s-p, s-n, p-n per modality, then p-p across the 3 modalities
    n_hom_pairs = 3
    torch.testing.assert_close(la["orth"] * n_orth_pairs, lb["orth"])
    torch.testing.assert_close(la["hom"] * n_hom_pairs * a.config.mmd_num_kernels, lb["hom"])
    torch.testing.assert_close(la["dered"], lb["dered"])


# -- reconstruction target ------------------------------------------------------------------------
@pytest.mark.parametrize("detach", [True, False])
def test_a_detached_reconstruction_target_sends_no_gradient_into_the_encoder(detach):
    # with the decoders zeroed the reconstruction is 0 and L_rec = mean ||z||²: only the target
    # path can reach the input projection
    torch.manual_seed(2)
    layer = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, rec_detach_target=detach))
    for p in layer.dec.parameters():
        torch.nn.init.zeros_(p)
    inputs, masks, _ = _batch()
    out = layer(inputs, masks)
    z = {m: out.pooled[m].detach().double() for m in DIMS}
    a = out.available
    expect = sum(((z[m] ** 2).mean(-1) * a[:, i]).sum() / a[:, i].sum() for i, m in enumerate(DIMS))
    torch.testing.assert_close(out.losses["rec"].double(), expect, rtol=1e-5, atol=1e-7)
    out.losses["rec"].backward()
    g = layer.proj["text"].proj.weight.grad
    assert (g is None or not g.any()) if detach else g.abs().sum() > 0


# -- leave-one-out recovery ----------------------------------------------------------------------
def test_leave_one_out_recovery_against_a_float64_formula():
    torch.manual_seed(3)
    layer = FSRFLayer(DIMS, config=FSRFConfig(**SMALL)).double()
    inputs, masks, _ = _batch(dtype=torch.float64)
    out = layer(inputs, masks)
    names = list(DIMS)
    a = out.available
    total = out.aux_loss.new_zeros(())
    for i, m in enumerate(names):
        err, cnt = 0.0, 0
        for b in range(a.shape[0]):
            rest = [n for j, n in enumerate(names) if j != i and a[b, j]]
            if not a[b, i] or not rest:
                continue
            s_rest = torch.stack([out.homogeneous[n][b] for n in rest]).mean(0)
            pred = layer.recover_het[m](s_rest[None])[0]
            err = err + ((pred - out.heterogeneous[m][b]) ** 2).mean()
            cnt += 1
        total = total + err / max(cnt, 1)
    # the losses accumulate in fp32 whatever the model dtype
    torch.testing.assert_close(out.losses["loo"].double(), total, rtol=1e-5, atol=1e-7)
    view = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, recovery_loss="view")).double()
    assert "loo" not in view(inputs, masks).losses


# -- modality dropout and availability flags ---------------------------------------------------------
def test_modality_dropout_removes_whole_modalities_from_view_a_in_training_only(monkeypatch):
    calls = []
    real = fsrf.missing.corrupt
    monkeypatch.setattr(fsrf.missing, "corrupt", lambda *a, **k: calls.append(k) or real(*a, **k))
    model = FSRFModel(DIMS, FSRFConfig(**SMALL, das=False, modality_dropout=1.0))
    seen = []
    predict = model.predict
    monkeypatch.setattr(model, "predict", lambda i, m: seen.append(m) or predict(i, m))
    inputs = {k: v for k, v in _batch()[0].items()}
    masks = {k: torch.ones(v.shape[:2], dtype=torch.bool) for k, v in inputs.items()}
    model.training_loss(inputs, masks, _batch()[2], generator=torch.Generator().manual_seed(0))
    assert calls == [{"rate": 0.0, "inter_prob": 1.0, "generator": calls[0]["generator"]}]
    gone = torch.stack([~seen[0][m].any(1) for m in DIMS], 1)
    assert gone.any(1).all() and not gone.all(1).any()  # every sample lost one or two, never all
    model.eval()
    model.training_loss(inputs, masks, _batch()[2])
    assert len(calls) == 1


def test_the_availability_flags_enter_the_fusion():
    M, df = len(DIMS), SMALL["d_model"]
    for dhf, width in ((True, (1 + M) * df), (False, M * df)):
        on = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, dhf=dhf))
        off = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, dhf=dhf, fusion_availability=False))
        assert on.fusion[0].in_features == width + M and off.fusion[0].in_features == width


@pytest.mark.parametrize("dhf", [True, False])
def test_pool_norm_is_a_layer_norm_of_the_masked_mean_and_keeps_missing_modalities_zero(dhf):
    inputs, masks, _ = _batch(dtype=torch.float64)
    off = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, dhf=dhf, pool_norm=False)).double().eval()
    on = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, dhf=dhf)).double().eval()
    missing = on.load_state_dict(off.state_dict(), strict=False).missing_keys
    assert sorted(missing) == sorted(f"pool_ln.{m}.{p}" for m in DIMS for p in ("weight", "bias"))
    with torch.no_grad():
        for i, m in enumerate(DIMS):  # a non-trivial affine, so the test sees where it is applied
            on.pool_ln[m].weight.copy_(torch.linspace(0.5, 1.5, SMALL["d_model"]) + i)
            on.pool_ln[m].bias.copy_(torch.linspace(-1.0, 1.0, SMALL["d_model"]))
        raw, got = off(inputs, masks), on(inputs, masks)
    for i, m in enumerate(DIMS):
        z = raw.pooled[m]
        mu = z.mean(-1, keepdim=True)
        var = z.var(-1, unbiased=False, keepdim=True)
        want = (z - mu) / torch.sqrt(var + 1e-5) * on.pool_ln[m].weight + on.pool_ln[m].bias
        avail = masks[m].any(1)
        torch.testing.assert_close(got.pooled[m][avail], want[avail], rtol=1e-10, atol=1e-10)
        assert torch.equal(got.pooled[m][~avail], torch.zeros_like(got.pooled[m][~avail]))


@pytest.mark.parametrize("dhf", [True, False])
def test_pool_shrink_shrinks_the_masked_mean_by_its_evidence_and_keeps_missing_modalities_zero(dhf):
    inputs, masks, _ = _batch(dtype=torch.float64)
    for m in DIMS:  # a few frames dropped as well, so the rows differ in their evidence
        masks[m][::2, -1] = False
    plain = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, dhf=dhf, pool_norm=False)).double().eval()
    shrink = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, dhf=dhf, pool_norm=False, pool_shrink=True)).double().eval()
    missing = shrink.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert sorted(missing) == sorted(f"pool_shrink.{m}.{b}" for m in DIMS for b in ("center", "noise_var", "tracked"))
    with torch.no_grad():
        for i, m in enumerate(DIMS):  # estimates as training would have left them
            shrink.pool_shrink[m].center.copy_(torch.linspace(-0.3, 0.3, SMALL["d_model"]) * (i + 1))
            shrink.pool_shrink[m].noise_var.fill_(2.0 + i)
        raw, got = plain(inputs, masks), shrink(inputs, masks)
    for i, m in enumerate(DIMS):
        mu, n = raw.pooled[m], masks[m].sum(1, keepdim=True).double()
        center, var = shrink.pool_shrink[m].center, shrink.pool_shrink[m].noise_var
        d = SMALL["d_model"]
        dist2 = ((mu - center) ** 2).sum(-1, keepdim=True)
        want = center + (1 - (d - 2) * var / (n * d) / dist2).clamp_min(0) * (mu - center)
        avail = masks[m].any(1)
        torch.testing.assert_close(got.pooled[m][avail], want[avail], rtol=1e-10, atol=1e-10)
        assert torch.equal(got.pooled[m][~avail], torch.zeros_like(got.pooled[m][~avail]))


def test_the_two_poolings_exclude_each_other_and_a_config_saved_before_the_switch_keeps_the_layer_norm():
    with pytest.raises(ValueError, match="pool_shrink=True needs pool_norm=False"):
        FSRFConfig(pool_shrink=True)
    saved = {k: v for k, v in version_1_dict(FSRFConfig()).items() if k != "pool_shrink"}
    cfg = FSRFConfig.from_saved(saved)
    assert cfg.pool_norm and not cfg.pool_shrink
    layer = FSRFLayer(DIMS, config=cfg.replace(**SMALL))
    assert hasattr(layer, "pool_ln") and not hasattr(layer, "pool_shrink")


def test_private_pool_shrink_feeds_the_private_encoders_the_shrunk_mean_and_leaves_the_shared_path_alone():
    inputs, masks, _ = _batch(dtype=torch.float64)
    for m in DIMS:
        masks[m][::2, -1] = False
    same = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, private_pool="same")).double().eval()
    split = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, private_pool="shrink")).double().eval()
    raw_layer = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, pool_norm=False, private_pool="same")).double().eval()
    missing = split.load_state_dict(same.state_dict(), strict=False).missing_keys
    assert sorted(missing) == sorted(f"pool_private.{m}.{b}" for m in DIMS for b in ("center", "noise_var", "tracked"))
    raw_layer.load_state_dict(same.state_dict(), strict=False)
    with torch.no_grad():
        for i, m in enumerate(DIMS):
            split.pool_private[m].center.copy_(torch.linspace(-0.2, 0.4, SMALL["d_model"]) * (i + 1))
            split.pool_private[m].noise_var.fill_(1.5 + i)
        ref, got, raw = same(inputs, masks), split(inputs, masks), raw_layer(inputs, masks)
        d = SMALL["d_model"]
        for i, m in enumerate(DIMS):
            avail = masks[m].any(1)
            # the shared path: z_m, s_m and the reconstruction target are those of the LayerNorm pooling
            torch.testing.assert_close(got.pooled[m], ref.pooled[m], rtol=0, atol=0)
            torch.testing.assert_close(got.homogeneous[m][avail], ref.homogeneous[m][avail], rtol=0, atol=0)
            # the private path reads the James-Stein shrunk masked mean, from a float64 formula
            mu, n = raw.pooled[m], masks[m].sum(1, keepdim=True).double()
            center, var = split.pool_private[m].center, split.pool_private[m].noise_var
            dist2 = ((mu - center) ** 2).sum(-1, keepdim=True)
            zp = center + (1 - (d - 2) * var / (n.clamp_min(1) * d) / dist2).clamp_min(0) * (mu - center)
            zp = torch.where(avail.unsqueeze(-1), zp, torch.zeros_like(zp))
            torch.testing.assert_close(got.noise[m], split.enc_noise[m](zp), rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(got.heterogeneous[m][avail], split.enc_het[m](zp)[avail], rtol=1e-10, atol=1e-10)
            assert not torch.allclose(got.noise[m][avail], ref.noise[m][avail])
    # without the factorization there is no private path, so the switch changes nothing
    no_dhf = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, dhf=False, private_pool="shrink"))
    assert not hasattr(no_dhf, "pool_private")


def test_private_pool_wiener_feeds_the_private_encoders_the_per_feature_posterior_mean():
    inputs, masks, _ = _batch(dtype=torch.float64)
    for m in DIMS:
        masks[m][::2, -1] = False
    same = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, private_pool="same")).double().eval()
    wiener = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, private_pool="wiener")).double().eval()
    raw_layer = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, pool_norm=False, private_pool="same")).double().eval()
    missing = wiener.load_state_dict(same.state_dict(), strict=False).missing_keys
    assert sorted(missing) == sorted(f"pool_private.{m}.{b}" for m in DIMS
                                     for b in ("center", "noise_var", "signal_var", "tracked"))
    raw_layer.load_state_dict(same.state_dict(), strict=False)
    d = SMALL["d_model"]
    with torch.no_grad():
        for i, m in enumerate(DIMS):
            wiener.pool_private[m].center.copy_(torch.linspace(-0.2, 0.4, d) * (i + 1))
            wiener.pool_private[m].noise_var.copy_(torch.linspace(0.5, 3.0, d) + i)
            wiener.pool_private[m].signal_var.copy_(torch.linspace(-0.1, 1.5, d))
        ref, got, raw = same(inputs, masks), wiener(inputs, masks), raw_layer(inputs, masks)
        for m in DIMS:
            avail = masks[m].any(1)
            torch.testing.assert_close(got.pooled[m], ref.pooled[m], rtol=0, atol=0)
            torch.testing.assert_close(got.homogeneous[m][avail], ref.homogeneous[m][avail], rtol=0, atol=0)
            pool = wiener.pool_private[m]
            mu, n = raw.pooled[m], masks[m].sum(1, keepdim=True).double().clamp_min(1)
            tau2 = pool.signal_var.clamp_min(0)
            zp = pool.center + tau2 / (tau2 + pool.noise_var / n) * (mu - pool.center)
            zp = torch.where(avail.unsqueeze(-1), zp, torch.zeros_like(zp))
            torch.testing.assert_close(got.noise[m], wiener.enc_noise[m](zp), rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(got.heterogeneous[m][avail], wiener.enc_het[m](zp)[avail],
                                       rtol=1e-10, atol=1e-10)


def test_an_old_config_reads_private_pool_as_same_and_pool_shrink_makes_it_moot():
    saved = {k: v for k, v in version_1_dict(FSRFConfig()).items() if k != "private_pool"}
    cfg = FSRFConfig.from_saved(saved)
    assert cfg.private_pool == "same"
    assert not hasattr(FSRFLayer(DIMS, config=cfg.replace(**SMALL)), "pool_private")
    # every encoder reads the shrunk mean already: no second pooling is built
    both = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, pool_norm=False, pool_shrink=True, private_pool="shrink"))
    assert hasattr(both, "pool_shrink") and not hasattr(both, "pool_private")


def test_the_gated_shared_code_is_a_softmax_over_the_available_modalities_against_a_float64_loop():
    layer = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, shared_pool="gated")).double()
    with torch.no_grad():  # zero-initialised; give it scores that differ
        layer.shared_gate.weight.copy_(torch.linspace(-1.0, 1.0, SMALL["d_model"])[None])
        layer.shared_gate.bias.fill_(0.3)
        layer.shared_prior.copy_(torch.tensor([2.0, -1.0, 0.5]))
    g = torch.Generator().manual_seed(3)
    S = torch.randn(6, 3, SMALL["d_model"], generator=g, dtype=torch.float64, requires_grad=True)
    a = torch.tensor([[1, 1, 1], [1, 0, 0], [0, 1, 1], [0, 0, 0], [1, 0, 1], [0, 0, 1]], dtype=torch.float64)
    got = layer._shared_mean(S, a)
    w_gate, b_gate, prior = (t.detach() for t in (layer.shared_gate.weight[0], layer.shared_gate.bias[0],
                                                  layer.shared_prior))
    Sd = S.detach()
    for b in range(6):
        on = [m for m in range(3) if a[b, m] > 0]
        if not on:
            assert torch.equal(got[b], torch.zeros_like(got[b]))
            continue
        scores = [float(Sd[b, m] @ w_gate + b_gate + prior[m]) for m in on]
        z = sum(math.exp(x) for x in scores)
        want = sum(math.exp(x) / z * Sd[b, m] for x, m in zip(scores, on))
        torch.testing.assert_close(got[b], want, rtol=1e-12, atol=1e-12)
    got.sum().backward()
    assert torch.isfinite(S.grad).all() and torch.equal(S.grad[3], torch.zeros_like(S.grad[3]))
    assert torch.isfinite(layer.shared_prior.grad).all()


def test_the_plain_mean_is_kept_behind_the_switch_and_gating_starts_there():
    S = torch.randn(5, 3, SMALL["d_model"], dtype=torch.float64)
    a = torch.tensor([[1, 1, 1], [1, 0, 1], [0, 1, 0], [0, 0, 0], [1, 1, 0]], dtype=torch.float64)
    want = (S * a[..., None]).sum(1) / a.sum(1, keepdim=True).clamp_min(1)
    mean = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, shared_pool="mean")).double()
    gated = FSRFLayer(DIMS, config=FSRFConfig(**SMALL)).double()  # zero-initialised gate
    assert not hasattr(mean, "shared_gate")
    torch.testing.assert_close(mean._shared_mean(S, a), want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gated._shared_mean(S, a), want, rtol=1e-12, atol=1e-12)
