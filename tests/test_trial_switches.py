"""Switches of issue 29's regime matrix: ``proj_norm`` (the projected frames without a LayerNorm,
the default since config version 3; ``True`` adds it) and ``conv_mode`` (where a temporal window
acts: on the input features or on the projected frames). Checked against float64 formulas written
here. (``aux_balance``, the other switch on trial, lost on the matrix and left the code in config
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
    layer = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, conv_kernel=kernel, conv_mode="full")).double()
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
    with_norm = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, conv_kernel=kernel, conv_mode="full", proj_norm=True)).double()
    u, lin = with_norm.proj["text"](x), with_norm.proj["text"].proj
    h = x @ lin.weight.T + lin.bias if kernel == 1 else lin(x.transpose(1, 2)).transpose(1, 2)
    want = (h - h.mean(-1, keepdim=True)) / torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + 1e-5)
    torch.testing.assert_close(u, want, rtol=1e-10, atol=1e-10)  # LayerNorm's affine starts at 1 and 0


def test_proj_norm_is_refused_unless_a_bool():
    with pytest.raises(TypeError, match="proj_norm"):
        FSRFConfig(proj_norm="no")


def _factorized_by_hand(x, mask, w_in, b_in, taps):
    """Frame t: sum over j of taps[:, :, j] @ h[t + j - k//2], with h = mask * (W x + b) and frames
    outside the sequence 0."""
    B, T, _ = x.shape
    k = taps.shape[-1]
    h = (x @ w_in.T + b_in) * mask.unsqueeze(-1)
    out = torch.zeros(B, T, taps.shape[0], dtype=torch.float64)
    for t in range(T):
        for j in range(k):
            s = t + j - k // 2
            if 0 <= s < T:
                out[:, t] += h[:, s] @ taps[:, :, j].T
    return out


@pytest.mark.parametrize("kernel", [3, 5])
def test_a_factorized_window_acts_on_the_projected_frames(kernel):
    torch.manual_seed(1)
    layer = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, conv_kernel=kernel, conv_mode="factorized")).double()
    proj = layer.proj["text"]
    # k taps of d x d beside one per-frame Linear: the input dimension D enters once
    assert proj.proj.weight.shape == (SMALL["d_model"], DIMS["text"])
    assert proj.window.weight.shape == (SMALL["d_model"], SMALL["d_model"], kernel)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 9, DIMS["text"], generator=g, dtype=torch.float64)
    mask = torch.rand(4, 9, generator=g) < 0.6
    # initialised to the identity: every observed frame is its kernel-1 projection
    start = proj(x * mask.unsqueeze(-1), mask)
    lin = x @ proj.proj.weight.T + proj.proj.bias
    torch.testing.assert_close(start[mask], lin[mask], rtol=1e-12, atol=1e-12)
    with torch.no_grad():
        proj.window.weight.normal_(generator=g)
    got = proj(x * mask.unsqueeze(-1), mask)
    want = _factorized_by_hand(x, mask, proj.proj.weight.detach(), proj.proj.bias.detach(), proj.window.weight.detach())
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    # the frames marked missing cannot reach any output
    noisy = torch.where(mask.unsqueeze(-1), x, torch.full_like(x, 1e6))
    torch.testing.assert_close(proj(noisy * mask.unsqueeze(-1), mask), got)


def test_a_factorized_window_starts_as_the_kernel_one_layer_and_trains():
    inputs, masks, _ = _batch()
    masks["audio"][:, 1] = False
    torch.manual_seed(0)
    a = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, conv_kernel=1)).double().eval()
    b = FSRFLayer(DIMS, config=FSRFConfig(**SMALL, conv_kernel=3, conv_mode="factorized")).double().eval()
    # the same parameters except the windows, which start at the identity
    sa = a.state_dict()
    b.load_state_dict({**b.state_dict(), **sa})
    torch.testing.assert_close(a(inputs, masks).fused, b(inputs, masks).fused, rtol=1e-12, atol=1e-12)
    b.train()
    out = b(inputs, masks)
    (out.fused.sum() + out.aux_loss).backward()
    grads = [p.grad for p in b.proj.parameters()]
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_conv_mode_is_refused_unless_a_known_choice():
    with pytest.raises(ValueError, match=r"conv_mode must be one of \('full', 'factorized'\); got 'depthwise'"):
        FSRFConfig(conv_mode="depthwise")
