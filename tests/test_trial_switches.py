"""Switches of issue 29's regime matrix: ``proj_norm`` (the projected frames without a LayerNorm,
the default since config version 3; ``True`` adds it) and ``conv_window`` (what a temporal window
does with its missing frames). Checked against float64 formulas written here. (``aux_balance``, the other switch on trial, lost on the matrix and left the code in config
version 4; tests/test_config_versions.py covers how its saved configs read.)"""

import pytest
import torch

from fsrf import FSRFConfig, FSRFLayer

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


def test_proj_norm_is_refused_unless_a_bool():
    with pytest.raises(TypeError, match="proj_norm"):
        FSRFConfig(proj_norm="no")


def _partial_conv_by_hand(x, mask, weight, bias):
    """Each observed frame t: bias + k / n_t * sum over the observed frames t + j - k//2 of its
    window of W_j x, n_t their count (frames outside the sequence count as missing)."""
    B, T, _ = x.shape
    k = weight.shape[-1]
    out = torch.zeros(B, T, weight.shape[0], dtype=torch.float64)
    for b in range(B):
        for t in range(T):
            idx = [(j, t + j - k // 2) for j in range(k) if 0 <= t + j - k // 2 < T and mask[b, t + j - k // 2]]
            if not mask[b, t]:
                continue
            acc = sum(weight[:, :, j] @ x[b, s] for j, s in idx)
            out[b, t] = bias + k / len(idx) * acc
    return out


@pytest.mark.parametrize("kernel", [3, 5])
def test_a_partial_window_rescales_by_its_observed_frames(kernel):
    torch.manual_seed(1)
    layer = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, conv_kernel=kernel, conv_window="partial")).double()
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 9, DIMS["text"], generator=g, dtype=torch.float64)
    mask = torch.rand(4, 9, generator=g) < 0.5
    mask[0] = True
    p = layer.proj["text"].proj
    got = layer.proj["text"](x * mask.unsqueeze(-1), mask)
    want = _partial_conv_by_hand(x, mask, p.weight.detach(), p.bias.detach())
    torch.testing.assert_close(got[mask], want[mask], rtol=1e-12, atol=1e-12)
    # the frames marked missing cannot reach an observed frame's output
    noisy = torch.where(mask.unsqueeze(-1), x, torch.full_like(x, 1e6))
    torch.testing.assert_close(layer.proj["text"](noisy * mask.unsqueeze(-1), mask)[mask], got[mask])
    assert torch.isfinite(got).all()
    # every frame observed: the same as the zero-padded window away from the ends
    full = torch.ones_like(mask)
    inner = slice(kernel // 2, 9 - kernel // 2)
    plain = p(x.transpose(1, 2)).transpose(1, 2)
    torch.testing.assert_close(layer.proj["text"](x, full)[:, inner], plain[:, inner], rtol=1e-12, atol=1e-12)


def test_partial_windows_change_nothing_with_a_kernel_of_one_and_train_end_to_end():
    torch.manual_seed(0)
    a = FSRFLayer(DIMS, config=FSRFConfig(**SMALL)).double()
    torch.manual_seed(0)
    b = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, conv_window="partial")).double()
    inputs, masks, _ = _batch()
    masks["audio"][:, 1] = False
    a.eval(), b.eval()
    torch.testing.assert_close(a(inputs, masks).fused, b(inputs, masks).fused, rtol=0, atol=0)
    c = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, conv_kernel=3, conv_window="partial")).double()
    out = c(inputs, masks)
    (out.fused.sum() + out.aux_loss).backward()
    grads = [p.grad for p in c.proj.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_conv_window_is_refused_unless_a_known_choice():
    with pytest.raises(ValueError, match=r"conv_window must be one of \('zero', 'partial'\); got 'same'"):
        FSRFConfig(conv_window="same")
