"""The built-in baselines (LateFusion, MulT) and the model registry: shapes, missing modalities,
masks that really hide frames, modality dropout, finite gradients, checkpoint round trip."""

import pytest
import torch

from fsrf.models import MODEL_KINDS, LateFusion, ModelSpec, MulT, build_model

DIMS = {"text": 12, "audio": 5, "vision": 7}


def _batch(B=5, T=(6, 8, 4), gen=None):
    gen = gen or torch.Generator().manual_seed(0)
    inputs = {m: torch.randn(B, t, d, generator=gen) for (m, d), t in zip(DIMS.items(), T)}
    masks = {m: torch.rand(B, t, generator=gen) > 0.3 for m, t in zip(DIMS, T)}
    return inputs, masks


@pytest.fixture(params=["late_fusion", "mult"])
def model(request):
    torch.manual_seed(0)
    kw = {"d_model": 16} if request.param == "late_fusion" else {"d_model": 16, "num_heads": 2, "layers": 1}
    return build_model(request.param, DIMS, **kw)


def test_predictions_have_shape_b(model):
    inputs, masks = _batch()
    assert model(inputs, masks).shape == (5,)
    assert model(inputs).shape == (5,)


@pytest.mark.parametrize("absent", [("audio",), ("audio", "vision"), ("text", "vision")])
def test_absent_modalities_give_finite_outputs_and_gradients(model, absent):
    inputs, masks = _batch()
    inputs = {m: x.requires_grad_(True) for m, x in inputs.items() if m not in absent}
    masks = {m: k for m, k in masks.items() if m not in absent}
    masks[next(iter(masks))][0] = False   # sample 0 also loses a present modality entirely
    out = model(inputs, masks)
    out.sum().backward()
    assert torch.isfinite(out).all()
    for x in inputs.values():
        assert torch.isfinite(x.grad).all()
    for p in model.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()


def test_masked_frames_do_not_influence_the_prediction(model):
    model.eval()
    inputs, masks = _batch()
    changed = {m: torch.where(masks[m].unsqueeze(-1), x, torch.randn_like(x) * 100) for m, x in inputs.items()}
    torch.testing.assert_close(model(inputs, masks), model(changed, masks))


def test_a_fully_masked_modality_equals_an_absent_one(model):
    model.eval()
    inputs, masks = _batch()
    hidden = dict(masks, audio=torch.zeros_like(masks["audio"]))
    without = {m: x for m, x in inputs.items() if m != "audio"}
    torch.testing.assert_close(model(inputs, hidden), model(without, {m: masks[m] for m in without}))


def test_modality_dropout_removes_whole_modalities_in_training_only():
    torch.manual_seed(0)
    lf = LateFusion(DIMS, d_model=8, modality_dropout=1.0)
    seen = []
    lf.forward = lambda inputs, masks=None: seen.append({m: k.any(dim=1) for m, k in masks.items()}) or \
        torch.zeros(next(iter(inputs.values())).shape[0], requires_grad=True)
    inputs, masks = _batch(B=64)
    masks = {m: torch.ones_like(k) for m, k in masks.items()}
    lf.training_loss(inputs, masks, torch.zeros(64), generator=torch.Generator().manual_seed(1))
    avail = torch.stack([seen[0][m] for m in DIMS], dim=1)
    # with probability 1 every sample loses one or two of its three modalities, never all
    assert ((avail.sum(dim=1) >= 1) & (avail.sum(dim=1) <= 2)).all()


def test_mult_attends_across_modalities():
    """A change in the audio stream moves the text-target stream (cross-modal attention is live)."""
    torch.manual_seed(0)
    m = MulT({"text": 4, "audio": 3}, d_model=8, num_heads=2, layers=1).eval()
    inputs = {"text": torch.randn(2, 5, 4), "audio": torch.randn(2, 6, 3)}
    a = m(inputs)
    b = m({"text": inputs["text"], "audio": inputs["audio"] + 1.0})
    assert not torch.allclose(a, b)


def test_construction_errors():
    with pytest.raises(ValueError, match="modality_dropout must be in"):
        LateFusion(DIMS, modality_dropout=1.5)
    with pytest.raises(ValueError, match="at least two modalities"):
        MulT({"text": 4})
    with pytest.raises(ValueError, match="divisible by num_heads"):
        MulT(DIMS, d_model=10, num_heads=4)
    with pytest.raises(ValueError, match="model kind must be one of"):
        build_model("nope", DIMS)
    with pytest.raises(ValueError, match="exactly one of kind"):
        ModelSpec("x")
    with pytest.raises(ValueError, match="exactly one of kind"):
        ModelSpec("x", kind="mult", build=lambda d: MulT(d))


def test_registry_builds_every_kind():
    for kind in MODEL_KINDS:
        kw = {"d_model": 16, "num_heads": 4} if kind == "fsrf" else {"d_model": 16}
        m = build_model(kind, DIMS, **kw)
        inputs, masks = _batch()
        assert m(inputs, masks).shape == (5,)
