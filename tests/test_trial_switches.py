"""A switch of issue 29's regime matrix: ``proj_norm`` (the projected frames without a LayerNorm,
the default since config version 3; ``True`` adds it). Checked against float64 formulas written
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
