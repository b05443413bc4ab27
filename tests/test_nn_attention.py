"""Tests of fsrf.nn.MaskedCrossModalAttention against torch.nn.MultiheadAttention."""

import pytest
import torch
from torch import nn

from fsrf.nn import MaskedCrossModalAttention

from _helpers import requires_cpp

BACKENDS = [pytest.param("cpp", marks=requires_cpp), "torch"]


def inputs(B=4, Tq=6, Tk=9, E=16, kdim=16, vdim=16, dtype=torch.float64):
    query = torch.randn(B, Tq, E, dtype=dtype)
    key = torch.randn(B, Tk, kdim, dtype=dtype)
    value = torch.randn(B, Tk, vdim, dtype=dtype)
    mask = torch.rand(B, Tk) > 0.4
    mask[1] = False  # a sample whose key modality is missing
    mask[2] = True
    return query, key, value, mask


def test_shapes_and_repr():
    mod = MaskedCrossModalAttention(24, 4, kdim=10, vdim=7)
    q, k, v, m = inputs(B=3, Tq=5, Tk=8, E=24, kdim=10, vdim=7, dtype=torch.float32)
    out = mod(q, k, v, m)
    assert out.shape == (3, 5, 24)
    assert mod(q, k, v).shape == (3, 5, 24)
    assert "num_heads=4" in repr(mod) and mod.head_dim == 6


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dims", [(16, 16, 16), (16, 10, 6)])
@pytest.mark.parametrize("bias", [True, False])
def test_matches_multihead_attention(backend, dims, bias):
    E, kdim, vdim = dims
    mha = nn.MultiheadAttention(E, 4, bias=bias, kdim=kdim, vdim=vdim, batch_first=True, dtype=torch.float64)
    if bias:  # MultiheadAttention starts with zero biases; make them matter
        with torch.no_grad():
            mha.in_proj_bias.normal_()
            mha.out_proj.bias.normal_()
    mha.eval()
    mod = MaskedCrossModalAttention.from_multihead_attention(mha, backend=backend).eval()
    q, k, v, m = inputs(E=E, kdim=kdim, vdim=vdim)
    params = (q, k, v)
    for t in params:
        t.requires_grad_(True)
    ours = mod(q, k, v, m)
    theirs, _ = mha(q, k, v, key_padding_mask=~m, need_weights=False)
    live = m.any(dim=1)
    torch.testing.assert_close(ours[live], theirs[live])
    # A fully masked sample: attention output 0, so the module returns the output bias.
    want = mod.out_proj.bias.expand_as(ours[1]) if bias else torch.zeros_like(ours[1])
    torch.testing.assert_close(ours[1], want, atol=0, rtol=0)
    # Gradients of the rows with keys agree (MultiheadAttention may give NaN on the others).
    w = torch.randn_like(ours) * live[:, None, None]
    g_ours = torch.autograd.grad((ours * w).sum(), params)
    g_theirs = torch.autograd.grad((theirs[live] * w[live]).sum(), params)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b)


def test_fully_masked_sample_gets_zero_gradient():
    mod = MaskedCrossModalAttention(16, 2).double()
    q, k, v, m = inputs()
    for t in (q, k, v):
        t.requires_grad_(True)
    out = mod(q, k, v, m)
    out.sum().backward()
    assert torch.isfinite(q.grad).all() and torch.isfinite(k.grad).all()
    assert (q.grad[1] == 0).all() and (k.grad[1] == 0).all() and (v.grad[1] == 0).all()
    for p in mod.parameters():
        assert torch.isfinite(p.grad).all()


def test_gradcheck_module():
    mod = MaskedCrossModalAttention(4, 2, kdim=3, vdim=5).double()
    q, k, v, m = inputs(B=3, Tq=2, Tk=3, E=4, kdim=3, vdim=5)
    for t in (q, k, v):
        t.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b, c: mod(a, b, c, m), (q, k, v))


def test_default_init_like_multihead_attention():
    torch.manual_seed(3)
    mod = MaskedCrossModalAttention(32, 4)
    bound = (6 / (32 + 3 * 32)) ** 0.5  # xavier_uniform over the stacked 3E x E in_proj matrix
    for lin in (mod.q_proj, mod.k_proj, mod.v_proj):
        assert lin.weight.abs().max() <= bound and lin.weight.abs().max() > 0.8 * bound
        assert (lin.bias == 0).all()
    assert (mod.out_proj.bias == 0).all()


class TestDropout:
    """Dropout acts on the attention weights, like nn.MultiheadAttention (reference path)."""

    def test_eval_mode_ignores_dropout(self):
        mod = MaskedCrossModalAttention(16, 4, dropout=0.5).double().eval()
        q, k, v, m = inputs()
        torch.testing.assert_close(mod(q, k, v, m), mod(q, k, v, m), atol=0, rtol=0)

    def test_dropout_one_drops_all_weights(self):
        mod = MaskedCrossModalAttention(16, 4, dropout=1.0).double().train()
        with torch.no_grad():
            mod.out_proj.bias.normal_()
        q, k, v, m = inputs()
        out = mod(q, k, v, m)
        torch.testing.assert_close(out, mod.out_proj.bias.expand_as(out), atol=0, rtol=0)

    def test_training_dropout_is_unbiased_and_finite(self):
        torch.manual_seed(0)
        mod = MaskedCrossModalAttention(8, 2, dropout=0.3).double()
        q, k, v, m = inputs(B=3, Tq=3, Tk=5, E=8, kdim=8, vdim=8)
        want = mod.eval()(q, k, v, m)
        mod.train()
        n = 3000  # independent draws, as one batch of n copies of the inputs
        draws = mod(q.repeat(n, 1, 1), k.repeat(n, 1, 1), v.repeat(n, 1, 1), m.repeat(n, 1)).view(n, *want.shape)
        assert torch.isfinite(draws).all()
        assert not torch.equal(draws[0], draws[1])
        # Inverted dropout keeps the expectation: mean of draws -> eval output (std err ~ 1/sqrt(3000)).
        torch.testing.assert_close(draws.mean(0), want, atol=0.05, rtol=0)
        assert (draws[:, 1] == mod.out_proj.bias).all()  # fully masked sample: still just the bias

    def test_dropout_reference_path_is_used_only_in_training(self, monkeypatch):
        import fsrf.nn.attention as att

        calls = []
        real = att.masked_cross_attention_probs
        monkeypatch.setattr(att, "masked_cross_attention_probs", lambda *a, **kw: (calls.append(1), real(*a, **kw))[1])
        mod = MaskedCrossModalAttention(16, 4, dropout=0.2).double()
        q, k, v, m = inputs()
        mod.eval()(q, k, v, m)
        assert calls == []
        mod.train()(q, k, v, m)
        assert calls == [1]
        MaskedCrossModalAttention(16, 4, dropout=0.0).double().train()(q, k, v, m)
        assert calls == [1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_compile_fullgraph(backend):
    torch._dynamo.reset()
    mod = MaskedCrossModalAttention(16, 4, backend=backend).eval()
    q, k, v, m = inputs(dtype=torch.float32)
    compiled = torch.compile(mod, fullgraph=True)
    torch.testing.assert_close(compiled(q, k, v, m), mod(q, k, v, m))


# --------------------------------------------------------------------------------------------
# Bad inputs
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,exc,match", [
    (dict(embed_dim=16.0, num_heads=4), TypeError, "embed_dim must be an int; got float"),
    (dict(embed_dim=0, num_heads=4), ValueError, "embed_dim must be positive; got 0"),
    (dict(embed_dim=16, num_heads=-1), ValueError, "num_heads must be positive; got -1"),
    (dict(embed_dim=16, num_heads=5), ValueError, "embed_dim must be divisible by num_heads; got embed_dim=16, num_heads=5"),
    (dict(embed_dim=16, num_heads=4, kdim="8"), TypeError, "kdim must be an int or None; got str"),
    (dict(embed_dim=16, num_heads=4, vdim=0), ValueError, "vdim must be positive; got 0"),
    (dict(embed_dim=16, num_heads=4, dropout=1.5), ValueError, r"dropout must be in \[0, 1\]; got 1.5"),
    (dict(embed_dim=16, num_heads=4, dropout="0.1"), TypeError, "dropout must be a float; got str"),
])
def test_bad_constructor_args(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        MaskedCrossModalAttention(**kwargs)


def test_from_multihead_attention_rejects_unsupported():
    with pytest.raises(TypeError, match="mha must be a torch.nn.MultiheadAttention; got Linear"):
        MaskedCrossModalAttention.from_multihead_attention(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="add_bias_kv or add_zero_attn"):
        MaskedCrossModalAttention.from_multihead_attention(nn.MultiheadAttention(8, 2, add_bias_kv=True))


@pytest.mark.parametrize("which,bad,exc,match", [
    ("query", torch.randn(4, 6), ValueError, r"query must have 3 dimensions; got shape \(4, 6\)"),
    ("query", torch.randn(4, 6, 15), ValueError, r"query must be \(B, Tq, embed_dim=16\); got \(4, 6, 15\)"),
    ("key", torch.randn(3, 9, 10), ValueError, r"key must be \(B=4, Tk, kdim=10\); got \(3, 9, 10\)"),
    ("key", torch.randn(4, 9, 11), ValueError, r"key must be \(B=4, Tk, kdim=10\); got \(4, 9, 11\)"),
    ("value", torch.randn(4, 8, 6), ValueError, r"value must be \(B, Tk, vdim\) = \(4, 9, 6\); got \(4, 8, 6\)"),
    ("value", torch.randn(4, 9, 6, dtype=torch.float64), TypeError, "value has dtype torch.float64 but query has dtype torch.float32"),
    ("value", torch.randn(4, 9, 6, device="meta"), ValueError, "value is on meta but query is on cpu"),
    ("key_mask", torch.ones(4, 9), TypeError, r"key_mask must have dtype torch\.bool"),
    ("key_mask", torch.ones(4, 8, dtype=torch.bool), ValueError, r"key_mask must have shape \(4, 9\); got \(4, 8\)"),
    ("key", "k", TypeError, r"key must be a torch\.Tensor; got str"),
])
def test_bad_forward_inputs(which, bad, exc, match):
    mod = MaskedCrossModalAttention(16, 4, kdim=10, vdim=6)
    args = dict(zip(("query", "key", "value", "key_mask"), inputs(E=16, kdim=10, vdim=6, dtype=torch.float32)))
    args[which] = bad
    with pytest.raises(exc, match=match):
        mod(**args)


def test_empty_key_sequence_is_an_error():
    mod = MaskedCrossModalAttention(16, 4)
    with pytest.raises(ValueError, match=r"at least one key"):
        mod(torch.randn(2, 3, 16), torch.randn(2, 0, 16), torch.randn(2, 0, 16))
