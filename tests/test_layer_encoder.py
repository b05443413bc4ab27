"""FSRFConfig.encoder_layers: temporal self-attention and cross-modal transformer blocks before pooling."""

import pytest
import torch

from _helpers import version_1_dict

from fsrf import FSRFConfig, FSRFLayer, FSRFModel

DIMS = {"text": 6, "audio": 4, "vision": 5}
CFG = dict(d_model=16, num_heads=2, dropout=0.0)


def batch(B=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(B, 5 + i, d, generator=g) for i, (m, d) in enumerate(DIMS.items())}
    masks = {m: torch.rand(B, 5 + i, generator=g) > 0.4 for i, m in enumerate(DIMS)}
    masks["audio"][0] = False  # a sample without audio
    for m in DIMS:
        masks[m][1] = False  # a sample with nothing observed
    return inputs, masks


def test_zero_layers_is_the_encoder_of_before():
    layer = FSRFLayer(DIMS, config=FSRFConfig(**CFG))
    assert any(k.startswith("attn.") for k in layer.state_dict())
    assert not any(k.startswith(("temporal.", "cross.")) for k in layer.state_dict())
    assert FSRFConfig.from_saved(FSRFConfig(**CFG).to_dict() | {}).encoder_layers == 0
    saved = {k: v for k, v in version_1_dict(FSRFConfig(**CFG)).items() if k != "encoder_layers"}
    assert FSRFConfig.from_saved(saved).encoder_layers == 0  # a config written before the switch


@pytest.mark.parametrize("depth", [1, 2])
def test_masked_frames_do_not_reach_the_output(depth):
    torch.manual_seed(0)
    layer = FSRFLayer(DIMS, config=FSRFConfig(**CFG, encoder_layers=depth)).eval()
    assert len(layer.temporal["text"]) == depth and len(layer.cross["audio"]) == depth
    inputs, masks = batch()
    out = layer(inputs, masks)
    noisy = {m: torch.where(masks[m].unsqueeze(-1), x, 100.0 * torch.randn_like(x)) for m, x in inputs.items()}
    again = layer(noisy, masks)
    torch.testing.assert_close(again.fused, out.fused)
    assert torch.isfinite(out.fused).all()
    # the sample with nothing observed gets the same output whatever its features are
    torch.testing.assert_close(again.fused[1], out.fused[1])


def test_gradients_reach_every_block_and_stay_finite():
    torch.manual_seed(0)
    model = FSRFModel(DIMS, config=FSRFConfig(**CFG, encoder_layers=2)).train()
    inputs, masks = batch()
    inputs = {m: x.requires_grad_(True) for m, x in inputs.items()}
    loss, _ = model.training_loss(inputs, masks, torch.randn(6))
    loss.backward()
    for name, p in model.named_parameters():
        if name.startswith(("layer.temporal.", "layer.cross.")):
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.layer.temporal["text"][0].attn.q_proj.weight.grad.abs().sum() > 0
    for m, x in inputs.items():
        assert torch.isfinite(x.grad).all()
        assert x.grad[1].abs().sum() == 0  # nothing observed: no gradient to its features


def test_the_deeper_encoder_compiles_in_one_graph():
    model = FSRFModel(DIMS, config=FSRFConfig(**CFG, encoder_layers=1)).train()
    inputs, masks = batch()
    explained = torch._dynamo.explain(model.training_loss)(inputs, masks, torch.randn(6))
    assert explained.graph_break_count == 0, [str(r.reason)[:200] for r in explained.break_reasons]


def test_a_negative_depth_is_refused_by_name():
    with pytest.raises(ValueError, match=r"FSRFConfig.encoder_layers must be >= 0; got -1"):
        FSRFConfig(encoder_layers=-1)
    with pytest.raises(TypeError, match=r"FSRFConfig.encoder_layers must be an int"):
        FSRFConfig(encoder_layers=1.5)
