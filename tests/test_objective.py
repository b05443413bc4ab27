"""FSRFObjective: the whole method for a user's encoder, layer and head, regression or classification.

FSRFModel's objective is compared with values and float64 gradients recorded before the objective
moved out of the model (tests/fixtures); the classification terms with float64 formulas of
cross-entropy and KL written here; bad input by name; compile without graph breaks.
"""

import json
import math
import os
import sys

import pytest
import torch
from torch import nn

from fsrf import FSRFConfig, FSRFLayer, FSRFModel, FSRFObjective
from fsrf.config import AUX_WEIGHTS

HERE = os.path.dirname(os.path.abspath(__file__))
DIMS = {"text": 12, "audio": 5, "vision": 7}
SMALL = dict(d_model=16, num_heads=2, dropout=0.0)


def batch(B=8, seed=0, classes=None):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(B, 4 + i, D, generator=g) for i, (m, D) in enumerate(DIMS.items())}
    masks = {m: torch.rand(B, 4 + i, generator=g) > 0.2 for i, m in enumerate(DIMS)}
    for m in masks:
        masks[m][:, 0] = True
    masks["audio"][1] = False
    if classes:
        labels = torch.randint(0, classes, (B,), generator=g)
    else:
        labels = torch.empty(B).uniform_(-3, 3, generator=g)
    return inputs, masks, labels


class TinyTemporalEncoder(nn.Module):
    """A user's own encoder: per modality a linear map and one transformer layer over the frames."""

    def __init__(self, dims, width=8):
        super().__init__()
        self.proj = nn.ModuleDict({m: nn.Linear(d, width) for m, d in dims.items()})
        self.enc = nn.ModuleDict({m: nn.TransformerEncoderLayer(width, 2, 16, dropout=0.0, batch_first=True)
                                  for m in dims})
        self.seen = []

    def forward(self, inputs, masks):
        self.seen.append({m: k.clone() for m, k in (masks or {}).items()})
        out = {}
        for m, x in inputs.items():
            h = self.proj[m](x)
            k = masks[m] if masks is not None and m in masks else torch.ones(x.shape[:2], dtype=torch.bool)
            # a row with no observed frame attends to itself only (a zero frame), never to padding
            pad = ~k & k.any(dim=1, keepdim=True)
            out[m] = self.enc[m](h, src_key_padding_mask=pad)
        return out


# -- FSRFModel is the objective with a linear head -------------------------------------------------

def test_fsrf_model_training_loss_matches_the_values_recorded_before_the_objective_existed():
    sys.path.insert(0, os.path.join(HERE, "fixtures"))
    try:
        import record_objective as rec
    finally:
        sys.path.pop(0)
    with open(os.path.join(HERE, "fixtures", "objective_before.json"), encoding="utf-8") as fh:
        saved = json.load(fh)
    assert saved["seed"] == rec.SEED and saved["dims"] == rec.DIMS and set(saved["configs"]) == set(rec.CONFIGS)
    # recorded when the projection's LayerNorm (config version < 3), the private shrinkage pooling
    # (< 4), the gated shared pool and the dequantized labels (< 5), the per-frame projection (< 8)
    # and the warm-up in steps (< 9) were the defaults; fields added since the recording take their
    # defaults, which keep it
    then = {"proj_norm": True, "pooling": "norm+private-shrink", "shared_pool": "gated", "dequantize_labels": True,
            "conv_kernel": 1, "aux_warmup_epochs": 0.0}
    recorded = {name: {**then, **cfg} for name, cfg in saved["configs"].items()}
    for name, cfg in recorded.items():
        assert FSRFConfig.from_dict(cfg) == FSRFConfig.from_dict({**then, **rec.CONFIGS[name]}), name
    for name, cfg in recorded.items():
        now = rec.record(cfg)  # the same seeds, config and float64 batch, through today's code
        for step, (old, new) in enumerate(zip(saved["records"][name], now)):
            where = f"{name}, step {step}"
            assert new["loss"] == pytest.approx(old["loss"], rel=1e-6, abs=1e-7), where
            assert set(new["parts"]) == set(old["parts"]), where
            for key, value in old["parts"].items():
                assert new["parts"][key] == pytest.approx(value, rel=1e-6, abs=1e-7), (where, key)
            assert set(new["grads"]) == set(old["grads"]), where
            for pname, g in old["grads"].items():
                torch.testing.assert_close(torch.tensor(new["grads"][pname], dtype=torch.float64),
                                           torch.tensor(g, dtype=torch.float64), rtol=1e-6, atol=1e-9,
                                           msg=lambda m: f"{where}, grad of {pname}: {m}")


def test_the_objective_with_the_models_parts_is_the_model():
    torch.manual_seed(0)
    model = FSRFModel(DIMS, FSRFConfig(**SMALL)).double().train()
    objective = FSRFObjective(model.layer, model.head).train()
    inputs, masks, labels = batch()
    inputs = {m: x.double() for m, x in inputs.items()}
    results = []
    start = {k: v.clone() for k, v in model.state_dict().items()}
    for fn in (model.training_loss, objective):
        torch.manual_seed(3)
        model.load_state_dict(start)  # the same weights, warm-up step, pooling estimates and label grid
        objective.load_state_dict(start)
        loss, parts = fn(inputs, masks, labels, generator=torch.Generator().manual_seed(4))
        grads = torch.autograd.grad(loss, list(model.parameters()))
        results.append((loss.detach(), parts, grads))
    (l1, p1, g1), (l2, p2, g2) = results
    assert torch.equal(l1, l2) and all(torch.equal(p1[k], p2[k]) for k in p1)
    assert all(torch.equal(a, b) for a, b in zip(g1, g2))
    assert list(model.state_dict()) == list(objective.state_dict())


def test_the_total_is_the_task_terms_plus_the_ramped_weighted_sum_of_every_aux_term():
    cfg = FSRFConfig(**SMALL, aux_warmup_steps=4)
    torch.manual_seed(0)
    obj = FSRFObjective(FSRFLayer(DIMS, config=cfg), nn.Linear(cfg.out_dim, 1)).train()
    inputs, masks, labels = batch()
    loss, parts = obj(inputs, masks, labels)
    weights = {"orth": cfg.w_orth, "dered": cfg.w_dered, "hom": cfg.w_hom, "rec": cfg.w_rec, "kl": cfg.w_kl,
               "dist": cfg.w_dist, "recov": cfg.w_recov, "loo": cfg.w_recov, "pred": cfg.w_pred}
    assert set(AUX_WEIGHTS) == set(weights)
    aux = sum(w * parts[k].double() for k, w in weights.items())
    assert parts["aux_scale"].item() == pytest.approx(1 / 4)
    expected = parts["task_a"].double() + parts["task_b"].double() + 0.25 * aux
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert int(obj.steps) == 1


def test_the_layers_aux_loss_uses_the_same_weights():
    cfg = FSRFConfig(**SMALL, recovery_loss="view+loo")
    layer = FSRFLayer(DIMS, config=cfg).train()
    inputs, masks, _ = batch()
    out = layer(inputs, masks)
    want = (cfg.w_orth * out.losses["orth"] + cfg.w_dered * out.losses["dered"] + cfg.w_hom * out.losses["hom"]
            + cfg.w_rec * out.losses["rec"] + cfg.w_recov * out.losses["loo"])
    assert out.aux_loss.item() == pytest.approx(want.item(), rel=1e-6)


# -- a user's encoder and head ------------------------------------------------------------------

def test_a_user_encoder_sees_each_view_and_is_trained_by_every_term():
    torch.manual_seed(0)
    enc = TinyTemporalEncoder(DIMS, width=8)
    cfg = FSRFConfig(**SMALL, modality_dropout=0.0, view_inter_prob=1.0)
    layer = FSRFLayer({m: 8 for m in DIMS}, config=cfg)
    head = nn.Sequential(nn.Linear(cfg.out_dim, 8), nn.ReLU(), nn.Linear(8, 1))
    obj = FSRFObjective(layer, head, encoder=enc).train()
    inputs, masks, labels = batch()
    loss, parts = obj(inputs, masks, labels, generator=torch.Generator().manual_seed(1))
    assert len(enc.seen) == 2  # view A, then view B
    a, b = enc.seen
    assert all(torch.equal(a[m], masks[m]) for m in DIMS)  # no modality dropout: A is the batch
    # view B is A further corrupted: never a frame more, and with inter_prob=1 every sample loses a modality
    assert all(not (b[m] & ~a[m]).any() for m in DIMS)
    lost = torch.stack([a[m].any(1) & ~b[m].any(1) for m in DIMS], 1)
    assert lost.any(1).all()
    loss.backward()
    for name, p in enc.named_parameters():
        if "enc" in name and "bias" not in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    pred = obj(inputs, masks)
    assert pred.shape == (8,)


def test_an_encoder_may_return_new_masks():
    class Halve(nn.Module):
        def forward(self, inputs, masks):
            return ({m: x[:, ::2] for m, x in inputs.items()}, {m: k[:, ::2] for m, k in masks.items()})

    obj = FSRFObjective(FSRFLayer(DIMS, config=FSRFConfig(**SMALL)), nn.Linear(16, 1), encoder=Halve()).train()
    inputs, masks, labels = batch()
    loss, _ = obj(inputs, masks, labels)
    assert torch.isfinite(loss)


# -- classification -----------------------------------------------------------------------------

class Recording(nn.Module):
    """A classification head that keeps its logits (for the float64 formulas)."""

    def __init__(self, d, c):
        super().__init__()
        self.lin = nn.Linear(d, c)
        self.logits = []

    def forward(self, f):
        z = self.lin(f)
        z.retain_grad()
        self.logits.append(z)
        return z


def _ce64(z, y):
    z = z.double()
    lse = z.max(1).values + torch.log(torch.exp(z - z.max(1, keepdim=True).values).sum(1))
    return (lse - z[torch.arange(len(y)), y]).mean()


def _kl64(za, zb):
    pa = torch.softmax(za.double(), 1)
    return (pa * (torch.log_softmax(za.double(), 1) - torch.log_softmax(zb.double(), 1))).sum(1).mean()


def test_classification_terms_and_their_gradients_against_float64_formulas():
    C = 4
    cfg = FSRFConfig(**SMALL, aux_warmup_steps=0, dequantize_labels=True)
    torch.manual_seed(0)
    head = Recording(cfg.out_dim, C)
    obj = FSRFObjective(FSRFLayer(DIMS, config=cfg), head, task="classification").train()
    assert obj.dequantize is None  # no annotation grid for classes
    inputs, masks, labels = batch(classes=C)
    loss, parts = obj(inputs, masks, labels)
    za, zb = head.logits
    assert parts["task_a"].item() == pytest.approx(_ce64(za.detach(), labels).item(), rel=1e-5)
    assert parts["task_b"].item() == pytest.approx(_ce64(zb.detach(), labels).item(), rel=1e-5)
    assert parts["pred"].item() == pytest.approx(_kl64(za.detach(), zb.detach()).item(), rel=1e-5, abs=1e-7)
    loss.backward()
    B = len(labels)
    onehot = torch.nn.functional.one_hot(labels, C).double()
    pa, pb = torch.softmax(za.detach().double(), 1), torch.softmax(zb.detach().double(), 1)
    # d CE / dz = (softmax - onehot) / B; d KL(p_A || p_B) / dz_B = (p_B - p_A) / B; A is the detached teacher
    torch.testing.assert_close(za.grad.double(), (pa - onehot) / B, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(zb.grad.double(), (pb - onehot) / B + cfg.w_pred * (pb - pa) / B,
                               rtol=1e-4, atol=1e-7)


def test_classification_predictions_are_logits():
    obj = FSRFObjective(FSRFLayer(DIMS, config=FSRFConfig(**SMALL)), nn.Linear(16, 3), task="classification")
    inputs, masks, _ = batch()
    assert obj.eval()(inputs, masks).shape == (8, 3)


@pytest.mark.parametrize("labels, err, match", [
    (torch.tensor([0, 1, 2, 4, 0, 1, 2, 3]), ValueError, r"labels must be class indices in \[0, 3\].*\[0, 4\]"),
    (torch.tensor([0, -1, 2, 3, 0, 1, 2, 3]), ValueError, r"class indices in \[0, 3\].*\[-1, 3\]"),
    (torch.rand(8), TypeError, r"labels must be integer class indices.*float32.*regression labels"),
    (torch.zeros(8, dtype=torch.bool), TypeError, r"integer class indices.*torch.bool"),
    (torch.zeros(7, dtype=torch.long), ValueError, r"labels must have shape \(8,\).*\(7,\)"),
    ([0] * 8, TypeError, r"labels must be a torch.Tensor"),
])
def test_bad_classification_labels_are_refused_by_name(labels, err, match):
    obj = FSRFObjective(FSRFLayer(DIMS, config=FSRFConfig(**SMALL)), nn.Linear(16, 4), task="classification")
    inputs, masks, _ = batch()
    with pytest.raises(err, match=match):
        obj(inputs, masks, labels)


@pytest.mark.parametrize("head, task, match", [
    (nn.Linear(16, 1), "classification", r"logits of shape \(8, C\) with C >= 2.*\(8, 1\)"),
    (nn.Linear(16, 3), "regression", r"shape \(8,\) or \(8, 1\) for task='regression'; got \(8, 3\)"),
])
def test_a_head_of_the_wrong_shape_is_refused_by_name(head, task, match):
    obj = FSRFObjective(FSRFLayer(DIMS, config=FSRFConfig(**SMALL)), head, task=task)
    inputs, masks, labels = batch()
    with pytest.raises(ValueError, match=match):
        obj(inputs, masks)


def test_bad_constructor_arguments_are_refused_by_name():
    layer = FSRFLayer(DIMS, config=FSRFConfig(**SMALL))
    with pytest.raises(ValueError, match=r"task must be one of \('regression', 'classification'\); got 'ordinal'"):
        FSRFObjective(layer, nn.Linear(16, 1), task="ordinal")
    with pytest.raises(TypeError, match="layer must be an fsrf.FSRFLayer; got Linear"):
        FSRFObjective(nn.Linear(2, 2), nn.Linear(16, 1))
    with pytest.raises(TypeError, match=r"head must be an nn.Module mapping \(B, 16\).*got function"):
        FSRFObjective(layer, lambda f: f)
    with pytest.raises(TypeError, match="encoder must be an nn.Module or None; got dict"):
        FSRFObjective(layer, nn.Linear(16, 1), encoder={})
    with pytest.raises(TypeError, match="regression.*torch.bool"):
        FSRFObjective(layer, nn.Linear(16, 1))(*batch()[:2], torch.zeros(8, dtype=torch.bool))


def test_an_encoder_returning_something_else_is_refused():
    class Bad(nn.Module):
        def forward(self, inputs, masks):
            return [1, 2]

    obj = FSRFObjective(FSRFLayer(DIMS, config=FSRFConfig(**SMALL)), nn.Linear(16, 1), encoder=Bad())
    with pytest.raises(TypeError, match=r"encoder must return \{name: \(B, T, D\) tensor\}.*got list"):
        obj(*batch()[:2])


# -- state and compile ----------------------------------------------------------------------------

def test_the_warm_up_counter_is_saved_and_resumed():
    cfg = FSRFConfig(**SMALL, aux_warmup_steps=10)
    obj = FSRFObjective(FSRFLayer(DIMS, config=cfg), nn.Linear(16, 3), task="classification").train()
    inputs, masks, labels = batch(classes=3)
    for _ in range(3):
        obj(inputs, masks, labels)
    state = obj.state_dict()
    assert int(state["steps"]) == 3
    again = FSRFObjective(FSRFLayer(DIMS, config=cfg), nn.Linear(16, 3), task="classification")
    again.load_state_dict(state)
    assert again.aux_scale().item() == pytest.approx(4 / 10)


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_the_objective_compiles_in_one_graph(task):
    torch.manual_seed(0)
    C = 4 if task == "classification" else 1
    cfg = FSRFConfig(**SMALL)
    obj = FSRFObjective(FSRFLayer({m: 8 for m in DIMS}, config=cfg),
                        nn.Sequential(nn.Linear(cfg.out_dim, 8), nn.GELU(), nn.Linear(8, C)),
                        encoder=TinyTemporalEncoder(DIMS, width=8), task=task).train()
    inputs, masks, labels = batch(classes=C if task == "classification" else None)
    explained = torch._dynamo.explain(obj)(inputs, masks, labels)
    assert explained.graph_break_count == 0, [str(r.reason)[:200] for r in explained.break_reasons]
    assert explained.graph_count == 1
    code = explained.graphs[0].code
    for op in (".item(", "_local_scalar_dense", ".tolist(", "synchronize"):
        assert op not in code, op
    loss, parts = torch.compile(obj, fullgraph=True, backend="aot_eager")(inputs, masks, labels)
    assert torch.isfinite(loss) and math.isfinite(parts["total"].item())


def test_a_warm_up_in_epochs_lasts_that_many_epochs_whatever_the_epoch_length():
    cfg = FSRFConfig(**SMALL, aux_warmup_epochs=1.5, aux_warmup_steps=30)
    obj = FSRFObjective(FSRFLayer(DIMS, config=cfg), nn.Linear(16, 1)).train()
    # a loop that never gives the epoch's length ramps over the steps
    assert obj.warmup_steps() == 30
    with torch.no_grad():
        obj.steps.fill_(14)
    assert obj.aux_scale().item() == pytest.approx(15 / 30)
    for per_epoch in (4, 40):
        obj.set_steps_per_epoch(per_epoch)
        assert obj.warmup_steps() == round(1.5 * per_epoch)
        with torch.no_grad():
            obj.steps.fill_(round(0.75 * per_epoch) - 1)  # half way through the ramp
        assert obj.aux_scale().item() == pytest.approx(0.5, abs=0.02)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        obj.set_steps_per_epoch(0)
    with pytest.raises(ValueError, match=r"FSRFConfig.aux_warmup_epochs must be in \[0.0, inf\]"):
        FSRFConfig(aux_warmup_epochs=-1.0)
    # the default (config version 9) counts 8 epochs, and 200 steps where the epoch's length is unknown
    default = FSRFObjective(FSRFLayer(DIMS, config=FSRFConfig(**SMALL)), nn.Linear(16, 1))
    assert default.warmup_steps() == 200
    default.set_steps_per_epoch(25)
    assert default.warmup_steps() == 8 * 25
    default.set_steps_per_epoch(100)
    assert default.warmup_steps() == 8 * 100
    # no warm-up needs both at 0
    off = FSRFObjective(FSRFLayer(DIMS, config=FSRFConfig(**SMALL, aux_warmup_steps=0, aux_warmup_epochs=0.0)),
                        nn.Linear(16, 1))
    off.set_steps_per_epoch(25)
    assert off.warmup_steps() == 0 and off.aux_scale().item() == 1.0


def test_fit_tells_the_model_its_epoch_length(tmp_path):
    from _helpers import write_tiny_mmsa
    from fsrf.data import load_mmsa
    from fsrf.training import TrainSettings, fit
    from fsrf.training.checkpoint import load_checkpoint

    data = load_mmsa(write_tiny_mmsa(tmp_path / "tiny.pkl"))  # 40 training samples: 3 steps of 16
    cfg = FSRFConfig(d_model=16, num_heads=2, aux_warmup_epochs=2.0)
    res = fit(data, tmp_path / "run", config=cfg, settings=TrainSettings(epochs=1, batch_size=16, progress=False),
              seed=1, log=None)
    # after one epoch (3 steps) of a 6-step ramp the scale logged for the epoch averages 1/6, 2/6, 3/6
    assert res["history"][0]["aux_scale"] == pytest.approx((1 + 2 + 3) / 6 / 3, rel=1e-5)
    assert int(load_checkpoint(tmp_path / "run" / "last.pt")["model"]["steps"]) == 3
