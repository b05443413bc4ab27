"""FSRFModel: predictions, the §4 training objective, ablations, compile, autocast, state_dict."""

import pytest
import torch

import fsrf
import fsrf.missing
from fsrf import FSRFConfig, FSRFModel

DIMS = {"text": 12, "audio": 5, "vision": 7}
SMALL = dict(d_model=16, num_heads=2, dropout=0.0)


def batch(B=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(B, 4 + i, D, generator=g) for i, (m, D) in enumerate(DIMS.items())}
    masks = {m: torch.rand(B, 4 + i, generator=g) > 0.2 for i, m in enumerate(DIMS)}
    for m in masks:
        masks[m][:, 0] = True
    labels = torch.empty(B).uniform_(-3, 3, generator=g)
    return inputs, masks, labels


def test_forward_shape_and_predict():
    model = FSRFModel(DIMS, config=FSRFConfig(**SMALL))
    inputs, masks, _ = batch()
    pred = model(inputs, masks)
    assert pred.shape == (8,)
    pred2, out = model.predict(inputs, masks)
    torch.testing.assert_close(pred, pred2)
    assert out.fused.shape == (8, 16)


def test_training_loss_is_the_weighted_sum_of_its_parts():
    cfg = FSRFConfig(**SMALL)
    model = FSRFModel(DIMS, config=cfg)
    inputs, masks, labels = batch(B=12)
    torch.manual_seed(5)
    loss, parts = model.training_loss(inputs, masks, labels)
    expected = (parts["task_a"] + parts["task_b"] + cfg.w_orth * parts["orth"] + cfg.w_dered * parts["dered"]
                + cfg.w_hom * parts["hom"] + cfg.w_rec * parts["rec"] + cfg.w_kl * parts["kl"]
                + cfg.w_dist * parts["dist"] + cfg.w_recov * parts["recov"])
    torch.testing.assert_close(loss.detach(), expected)
    torch.testing.assert_close(parts["total"], loss.detach())
    assert set(parts) == {"task_a", "task_b", "orth", "dered", "hom", "rec", "kl", "dist", "recov", "total"}
    loss.backward()
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name


def test_task_loss_matches_l1_and_mse_definitions():
    inputs, masks, labels = batch(B=6)
    for kind in ("l1", "mse"):
        model = FSRFModel(DIMS, config=FSRFConfig(**SMALL, task_loss=kind, das=False))
        _, parts = model.training_loss(inputs, masks, labels)
        pred = model(inputs, masks).detach().double()
        err = pred - labels.double()
        ref = err.abs().mean() if kind == "l1" else err.square().mean()
        torch.testing.assert_close(parts["task_a"].double(), ref, rtol=1e-5, atol=1e-6)


def test_das_off_uses_a_single_view(monkeypatch):
    calls = []
    real = fsrf.missing.corrupt
    monkeypatch.setattr(fsrf.missing, "corrupt", lambda *a, **k: calls.append(1) or real(*a, **k))
    inputs, masks, labels = batch()
    off = FSRFModel(DIMS, config=FSRFConfig(**SMALL, das=False))
    _, parts = off.training_loss(inputs, masks, labels)
    assert not calls
    assert parts["task_b"].item() == 0 and parts["kl"].item() == 0 and parts["dist"].item() == 0
    on = FSRFModel(DIMS, config=FSRFConfig(**SMALL))
    _, parts = on.training_loss(inputs, masks, labels)
    assert calls
    assert parts["task_b"].item() > 0 and parts["kl"].item() > 0


def test_dhf_off_has_no_constraint_losses():
    inputs, masks, labels = batch()
    model = FSRFModel(DIMS, config=FSRFConfig(**SMALL, dhf=False))
    _, parts = model.training_loss(inputs, masks, labels)
    for key in ("orth", "dered", "hom", "rec", "recov"):
        assert parts[key].item() == 0, key


def _toy_run(cfg, steps=40):
    torch.manual_seed(0)
    model = FSRFModel(DIMS, config=cfg)
    inputs, masks, _ = batch(B=32, seed=1)
    # a target the model can represent: a linear read-out of the masked mean text features
    w = masks["text"].unsqueeze(-1).float()
    labels = 2.0 * ((inputs["text"] * w).sum(1) / w.sum(1))[:, :3].sum(-1)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(0)
    history = []
    for _ in range(steps):
        loss, parts = model.training_loss(inputs, masks, labels, generator=gen)
        history.append({k: v.item() for k, v in parts.items()})
        opt.zero_grad()
        loss.backward()
        opt.step()
    return history


@pytest.mark.parametrize("das", [False, True])
def test_training_reduces_the_objective_on_a_toy_problem(das):
    h = _toy_run(FSRFConfig(**SMALL, das=das))
    assert h[-1]["total"] < 0.8 * h[0]["total"], [round(x["total"], 3) for x in h[::8]]


def test_task_loss_falls_when_the_orthogonality_weight_is_zero():
    # With the documented default w_orth = 0.3 the orthogonality term (centred, so a factor that is
    # constant over the batch scores 0) dominates this toy problem and the task loss stays flat
    # for the first tens of steps (reported in the closing notes); with it off the pipeline learns.
    h = _toy_run(FSRFConfig(**SMALL, das=False, w_orth=0.0))
    assert h[-1]["task_a"] < 0.5 * h[0]["task_a"], [round(x["task_a"], 3) for x in h[::8]]


def test_state_dict_round_trip_and_weights_only_load(tmp_path):
    model = FSRFModel(DIMS, config=FSRFConfig(**SMALL)).eval()
    torch.save(model.state_dict(), tmp_path / "m.pt")
    other = FSRFModel(DIMS, config=FSRFConfig(**SMALL)).eval()
    other.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    inputs, masks, _ = batch()
    torch.testing.assert_close(model(inputs, masks), other(inputs, masks), rtol=0, atol=0)


def test_torch_compile_model():
    model = FSRFModel(DIMS, config=FSRFConfig(**SMALL)).eval()
    inputs, masks, labels = batch()
    compiled = torch.compile(model, backend="eager")
    torch.testing.assert_close(compiled(inputs, masks), model(inputs, masks))
    model.train()
    torch.manual_seed(1)
    loss_c, _ = torch.compile(model.training_loss, backend="eager")(inputs, masks, labels)
    loss_c.backward()
    assert torch.isfinite(loss_c)


@pytest.mark.slow
def test_torch_compile_inductor_eval():
    model = FSRFModel(DIMS, config=FSRFConfig(**SMALL)).eval()
    inputs, masks, _ = batch()
    compiled = torch.compile(model)
    torch.testing.assert_close(compiled(inputs, masks), model(inputs, masks), rtol=1e-4, atol=1e-5)


def test_autocast_bf16_training_step():
    model = FSRFModel(DIMS, config=FSRFConfig(**SMALL))
    inputs, masks, labels = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, parts = model.training_loss(inputs, masks, labels)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(torch.isfinite(v) for v in parts.values())


def test_bad_labels():
    model = FSRFModel(DIMS, config=FSRFConfig(**SMALL))
    inputs, masks, labels = batch()
    with pytest.raises(ValueError, match="labels must have shape"):
        model.training_loss(inputs, masks, labels[:3])
    with pytest.raises(TypeError, match="labels must be a torch.Tensor"):
        model.training_loss(inputs, masks, [0.0] * 8)


def test_config_round_trip_and_unknown_field(tmp_path):
    cfg = FSRFConfig(**SMALL, conv_kernel={"text": 3})
    assert FSRFConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown FSRFConfig field"):
        FSRFConfig.from_dict({"d_modle": 3})
    with pytest.raises(ValueError, match="conv_kernel"):
        FSRFConfig(conv_kernel=2)
    with pytest.raises(TypeError, match="w_orth"):
        FSRFConfig(w_orth="a lot")
