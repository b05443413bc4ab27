"""Two switches of issue 29's regime matrix: ``proj_norm`` (the projected frames without a
LayerNorm, the default since config version 3; ``True`` adds it) and ``aux_balance`` (off by
default, under trial: each auxiliary term capped at a share of the task loss). Checked against
float64 formulas written here."""

import pytest
import torch

from fsrf import FSRFConfig, FSRFLayer, FSRFModel
from fsrf.config import AUX_WEIGHTS

DIMS = {"text": 6, "audio": 5, "vision": 4}
SMALL = dict(d_model=8, num_heads=2, dropout=0.0)


def _batch(B=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(B, 3 + i, D, generator=g, dtype=torch.float64) for i, (m, D) in enumerate(DIMS.items())}
    masks = {m: torch.ones(B, 3 + i, dtype=torch.bool) for i, m in enumerate(DIMS)}
    return inputs, masks, torch.empty(B, dtype=torch.float64).uniform_(-3, 3, generator=g)


@pytest.mark.parametrize("kernel", [1, 3])
def test_without_proj_norm_a_frame_is_its_projection_alone(kernel):
    torch.manual_seed(0)
    layer = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, conv_kernel=kernel)).double()
    assert not any(".norm." in k for k in layer.state_dict() if k.startswith("proj."))
    x = _batch()[0]["text"]
    p = layer.proj["text"].proj
    if kernel == 1:
        want = x @ p.weight.T + p.bias
    else:  # the same-padded convolution, written out frame by frame
        xp = torch.nn.functional.pad(x, (0, 0, 1, 1))
        want = torch.stack([sum(xp[:, t + j] @ p.weight[:, :, j].T for j in range(3)) + p.bias
                            for t in range(x.shape[1])], dim=1)
    torch.testing.assert_close(layer.proj["text"](x), want, rtol=1e-12, atol=1e-12)
    with_norm = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, conv_kernel=kernel, proj_norm=True)).double()
    u, lin = with_norm.proj["text"](x), with_norm.proj["text"].proj
    h = x @ lin.weight.T + lin.bias if kernel == 1 else lin(x.transpose(1, 2)).transpose(1, 2)
    want = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(u, want, rtol=1e-10, atol=1e-10)  # LayerNorm's affine starts at 1 and 0


def test_aux_balance_caps_every_weighted_term_at_its_share_of_the_task_loss():
    batch = _batch()
    cfg = dict(**SMALL, das=False, modality_dropout=0.0, dequantize_labels=False, aux_warmup_steps=0)
    torch.manual_seed(1)
    plain = FSRFModel(DIMS, FSRFConfig(**cfg)).double()
    torch.manual_seed(1)
    kappa = 0.05
    capped = FSRFModel(DIMS, FSRFConfig(**cfg, aux_balance=kappa)).double()
    loss_p, parts = plain.training_loss(*batch)
    loss_c, parts_c = capped.training_loss(*batch)
    for k in parts:
        if k not in ("total",):
            torch.testing.assert_close(parts_c[k], parts[k], rtol=0, atol=0)  # the terms themselves are unchanged
    task = parts["task_a"]
    weighted = {k: getattr(capped.config, w) * parts[k] for k, w in AUX_WEIGHTS.items() if k in parts}
    want = parts["task_a"] + parts["task_b"] + sum(torch.minimum(v, kappa * task) for v in weighted.values())
    torch.testing.assert_close(loss_c.detach(), want, rtol=1e-12, atol=1e-12)
    assert any(v > kappa * task for v in weighted.values())  # the cap binds somewhere in this test

    # the gradient of each term keeps its direction, scaled by the detached factor
    loss_c.backward()
    torch.manual_seed(1)
    ref = FSRFModel(DIMS, FSRFConfig(**cfg)).double()
    terms = _live_terms(ref, batch)  # same weights, same batch, nothing random (das=False, dropout 0)
    factors = {k: min(1.0, float(kappa * task / weighted[k])) if float(weighted[k]) > 0 else 1.0 for k in weighted}
    manual = terms["task_a"] + sum(factors[k] * getattr(ref.config, AUX_WEIGHTS[k]) * terms[k] for k in weighted)
    manual.backward()
    for (n, a), (_, b) in zip(capped.named_parameters(), ref.named_parameters()):
        if a.grad is not None or b.grad is not None:
            # the cap comes from the fp32 task loss, and the terms partly cancel: fp32 rounding, relative to
            # the largest entry (a factor that is not detached, or missing, is off by far more)
            torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-3 * float(b.grad.abs().max()) + 1e-12)


def _live_terms(model, batch):
    """The terms of training_loss with their graphs: the model's own loss with every weight but
    one at 0 would re-weight, so the parts are rebuilt from the layer's output as the objective
    does with das=False (view A only)."""
    inputs, masks, labels = batch
    pred, out = model.predict(inputs, masks)
    terms = {"task_a": (pred - labels).abs().mean().float()}  # the objective accumulates it in fp32
    zero = pred.new_zeros(())
    for key in AUX_WEIGHTS:
        terms[key] = out.losses.get(key, zero)
    return terms


def test_aux_balance_is_refused_below_zero():
    with pytest.raises(ValueError, match="aux_balance"):
        FSRFConfig(aux_balance=-0.1)
    with pytest.raises(TypeError, match="proj_norm"):
        FSRFConfig(proj_norm="no")
