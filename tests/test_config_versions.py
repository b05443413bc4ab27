"""FSRFConfig's groups, its version and the upgrade of every config ever saved.

tests/fixtures/configs_v1.json holds the default config as each revision of fsrf/config.py saved it
before versions existed (read from git history by record_configs.py). What each field meant before
it existed is written out below from the history of the method, not read from fsrf.
"""

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch

from fsrf import FSRFConfig, FSRFModel
from fsrf.config import AUX_WEIGHTS, CONFIG_VERSION, GROUPS, POOLINGS

ROOT = Path(__file__).resolve().parents[1]
V1 = json.loads((ROOT / "tests/fixtures/configs_v1.json").read_text())["configs"]

# The behaviour before each field existed, in version 1's names: the losses were summed and not
# normalised, the reconstruction target was not detached, there was no warm-up, no modality
# dropout, no availability flags, recovery learned from view B only, the pooled features were plain
# masked means combined by a mean, labels were used as given, batch statistics were per process,
# the encoder was the single cross-modal attention, every projected frame went through a LayerNorm,
# and a temporal window (a kernel above 1) acted on the input features.
BEFORE_V1 = {
    "rec_detach_target": False, "orth_reduction": "sum", "hom_reduction": "sum", "mmd_normalize": False,
    "aux_warmup_steps": 0, "modality_dropout": 0.0, "fusion_availability": False, "recovery_loss": "view",
    "global_batch": False, "pool_norm": False, "shared_pool": "mean", "pool_shrink": False, "private_pool": "same",
    "dequantize_labels": False, "w_pred": 0.0, "encoder_layers": 0, "aux_warmup_epochs": 0.0, "proj_norm": True,
    "conv_mode": "full",
}
DIMS = {"text": 6, "audio": 4, "vision": 3}


@pytest.mark.parametrize("rev", list(V1))
def test_every_version_1_config_reads_with_the_values_it_was_saved_with(rev):
    saved = V1[rev]["config"]
    cfg = FSRFConfig.from_saved(saved)
    for name in {f.name for f in dataclasses.fields(FSRFConfig)} | {"pool_norm", "pool_shrink", "private_pool"}:
        if name == "pooling":
            continue
        expected = saved[name] if name in saved else BEFORE_V1.get(name, getattr(FSRFConfig(), name))
        assert getattr(cfg, name) == expected, (rev, name)


@pytest.mark.parametrize("rev", [next(iter(V1)), list(V1)[-1]])
def test_a_version_1_config_builds_a_model_that_trains(rev):
    cfg = FSRFConfig.from_saved({**V1[rev]["config"], "d_model": 8, "num_heads": 2})
    torch.manual_seed(0)
    model = FSRFModel(DIMS, cfg)
    inputs = {m: torch.randn(4, 5, d) for m, d in DIMS.items()}
    masks = {m: torch.ones(4, 5, dtype=torch.bool) for m in DIMS}
    loss, _ = model.training_loss(inputs, masks, torch.randn(4))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


def test_the_current_version_round_trips_flat_grouped_and_through_a_file(tmp_path):
    cfg = FSRFConfig(d_model=32, pooling="mean", w_kl=0.25, conv_kernel={"text": 3})
    flat, grouped = cfg.to_dict(), cfg.to_dict(grouped=True)
    assert flat["config_version"] == grouped["config_version"] == CONFIG_VERSION
    assert set(grouped) == {"config_version", *GROUPS}
    assert FSRFConfig.from_saved(flat) == FSRFConfig.from_dict(flat) == FSRFConfig.from_dict(grouped) == cfg
    assert FSRFConfig(**flat) == cfg
    cfg.to_json(tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text()) == grouped
    assert FSRFConfig.from_json(tmp_path / "c.json") == cfg


def test_every_field_is_in_exactly_one_group_and_the_views_read_it():
    fields = [f.name for f in dataclasses.fields(FSRFConfig)]
    grouped = [n for names in GROUPS.values() for n in names]
    assert sorted(grouped) == sorted(fields)
    cfg = FSRFConfig(d_model=48)
    assert cfg.architecture.d_model == 48 and cfg.fusion.pooling == cfg.pooling
    assert cfg.distillation.to_dict() == {k: getattr(cfg, k) for k in GROUPS["distillation"]}
    with pytest.raises(AttributeError, match="read-only"):
        cfg.architecture.d_model = 3
    with pytest.raises(AttributeError, match="has no field 'w_kl'"):
        cfg.architecture.w_kl


def test_no_field_is_unused():
    # read by name somewhere in the package, or through AUX_WEIGHTS (FSRFConfig.weighted_aux)
    source = "\n".join(p.read_text() for p in (ROOT / "fsrf").rglob("*.py") if p.name != "config.py")
    unused = [f.name for f in dataclasses.fields(FSRFConfig)
              if not re.search(rf"\b{f.name}\b", source) and f.name not in AUX_WEIGHTS.values()]
    assert not unused


def test_version_1_pooling_keywords_set_the_one_pooling_choice():
    # a keyword changes its part of today's default ("norm+private-shrink" again since config version 7)
    assert FSRFConfig(pool_norm=False).pooling == "mean+private-shrink"
    assert FSRFConfig(private_pool="shrink").pooling == "norm+private-shrink"
    assert FSRFConfig(pool_norm=False, pool_shrink=True, private_pool="wiener").pooling == "shrink"
    assert FSRFConfig(private_pool="same").pooling == "norm"
    assert FSRFConfig(pooling="mean", private_pool="wiener").pooling == "mean+private-wiener"
    for name, (norm, shrink, private) in POOLINGS.items():
        cfg = FSRFConfig(pooling=name)
        assert (cfg.pool_norm, cfg.pool_shrink, cfg.private_pool) == (norm, shrink, private)
        assert FSRFConfig(pool_norm=norm, pool_shrink=shrink, private_pool=private) == cfg
    assert dataclasses.replace(FSRFConfig(), pooling="mean").pooling == "mean"
    assert FSRFConfig().replace(pool_norm=False).pooling == "mean+private-shrink"
    assert FSRFConfig(pooling="norm+private-shrink").replace(pool_norm=False).pooling == "mean+private-shrink"


@pytest.mark.parametrize("bad, match", [
    ({"config_version": CONFIG_VERSION + 1}, rf"config_version must be an int in \[1, {CONFIG_VERSION}\]"),
    ({"config_version": 0}, "config_version"), ({"config_version": "2"}, "config_version"),
    ({"config_version": True}, "config_version"),
    ({"architecture": {"w_kl": 1.0}}, "group 'architecture' has no field"),
    ({"d_model": 8, "architecture": {"d_model": 16}}, "given both flat and in group"),
    ({"pooling": "max"}, "pooling must be one of"), ({"extra": {"a": 1}}, "extra was removed"),
    ({"wat": 1}, "unknown FSRFConfig field")])
def test_bad_config_dicts_are_refused_by_name(bad, match):
    with pytest.raises(ValueError, match=match):
        FSRFConfig.from_dict(bad)


def test_the_constructor_takes_only_the_current_version():
    with pytest.raises(ValueError, match="from_saved"):
        FSRFConfig(config_version=1)
    assert FSRFConfig(config_version=CONFIG_VERSION) == FSRFConfig()
    # the last version-1 default differs from today's only by the projection's LayerNorm (version 3),
    # the gated shared pool (5), the per-frame projection (8) and the warm-up in steps (9); the
    # private shrinkage pooling left in version 4 and came back in 7
    assert (FSRFConfig.from_saved({**V1[list(V1)[-1]]["config"], "extra": {}})
            == FSRFConfig(proj_norm=True, shared_pool="gated", conv_kernel=1, conv_mode="full",
                          aux_warmup_epochs=0.0))


def test_version_2_dicts_keep_the_projection_layernorm_they_were_written_with():
    v2 = {k: v for k, v in FSRFConfig(d_model=16).to_dict().items() if k != "proj_norm"}
    v2["config_version"] = 2
    assert FSRFConfig.from_saved(v2).proj_norm is True and FSRFConfig.from_dict(v2).proj_norm is True
    assert FSRFConfig.from_dict({**v2, "proj_norm": False}).proj_norm is False
    assert FSRFConfig().proj_norm is False and FSRFConfig.from_dict({"d_model": 16}).proj_norm is False
    assert FSRFConfig.from_saved(FSRFConfig(proj_norm=True).to_dict()).proj_norm is True


def _version_3(**changes):
    """A flat dict as config version 3 wrote it: every field of then, ``aux_balance`` included."""
    return {**FSRFConfig(d_model=16).to_dict(), "config_version": 3, "aux_balance": 0.0, **changes}


def test_version_3_dicts_keep_their_pooling_and_drop_the_removed_aux_balance():
    # version 4's default was "norm"; version 7 returned to version 3's, so a version-3 dict without
    # the field must still read as version 3's default through every later step
    assert FSRFConfig().pooling == "norm+private-shrink"
    v3 = _version_3()
    assert FSRFConfig.from_saved(v3) == FSRFConfig(d_model=16) == FSRFConfig.from_dict(v3)
    lacking = {k: v for k, v in v3.items() if k != "pooling"}  # hand-written: it meant version 3's default
    assert FSRFConfig.from_dict(lacking).pooling == "norm+private-shrink"
    assert FSRFConfig.from_saved(lacking).pooling == "norm+private-shrink"
    # a saved model trained with the cap loads as trained (it only shaped the loss), and says so
    with pytest.warns(UserWarning, match=r"aux_balance was removed in config version 4.*got aux_balance=1\.0"):
        assert FSRFConfig.from_saved(_version_3(aux_balance=1.0)) == FSRFConfig(d_model=16)
    # asked for by hand it is refused, by name, in either form
    with pytest.raises(ValueError, match="aux_balance was removed in config version 4"):
        FSRFConfig.from_dict(_version_3(aux_balance=0.5))
    with pytest.raises(TypeError, match="aux_balance"):
        FSRFConfig(aux_balance=1.0)


def test_a_stored_run_of_an_earlier_fsrf_counts_as_the_same_model():
    from _helpers import version_1_dict
    from fsrf.models import ModelSpec
    from fsrf.training.comparison import _same_record, _spec_record

    made = _spec_record(ModelSpec("FSRF", kind="fsrf", kwargs={"d_model": 16}))
    stored = {**made, "kwargs": version_1_dict(FSRFConfig(d_model=16))}
    assert _same_record(stored, made)
    assert not _same_record({**made, "kwargs": version_1_dict(FSRFConfig(d_model=32))}, made)
    assert not _same_record({**stored, "train": {"lr": 1e-3}}, made)


def test_version_4_dicts_keep_the_gated_shared_pool_and_the_dequantized_labels():
    # shared_pool's default since version 5 (issue 29's regime matrix, run 3); dequantize_labels was
    # False in version 5 only
    assert (FSRFConfig().shared_pool, FSRFConfig().dequantize_labels) == ("mean", True)
    v4 = {**FSRFConfig(d_model=16, dequantize_labels=False).to_dict(), "config_version": 4}
    assert FSRFConfig.from_saved(v4) == FSRFConfig(d_model=16, dequantize_labels=False) == FSRFConfig.from_dict(v4)
    lacking = {k: v for k, v in v4.items() if k not in ("shared_pool", "dequantize_labels")}
    for read in (FSRFConfig.from_dict, FSRFConfig.from_saved):  # it meant version 4's defaults
        cfg = read(lacking)
        assert (cfg.shared_pool, cfg.dequantize_labels) == ("gated", True)
    grouped = FSRFConfig(d_model=16).to_dict(grouped=True)
    grouped["config_version"] = 4
    del grouped["fusion"]["shared_pool"], grouped["training"]["dequantize_labels"]
    assert FSRFConfig.from_saved(grouped) == FSRFConfig(d_model=16, shared_pool="gated", dequantize_labels=True)


def test_version_5_dicts_keep_the_labels_as_given():
    # version 5 trained on the labels as given; step 3 of the regime matrix reverted that (version 6)
    v5 = {k: v for k, v in FSRFConfig(d_model=16).to_dict().items() if k != "dequantize_labels"}
    v5["config_version"] = 5
    for read in (FSRFConfig.from_dict, FSRFConfig.from_saved):
        assert read(v5) == FSRFConfig(d_model=16, dequantize_labels=False)
    assert FSRFConfig.from_dict({**v5, "dequantize_labels": True}) == FSRFConfig(d_model=16)


def test_version_6_dicts_keep_the_pooling_without_the_private_shrinkage():
    # version 6 pooled with "norm"; step 3 of the regime matrix reverted that (version 7)
    assert FSRFConfig().pooling == "norm+private-shrink"
    v6 = {k: v for k, v in FSRFConfig(d_model=16).to_dict().items() if k != "pooling"}
    v6["config_version"] = 6
    for read in (FSRFConfig.from_dict, FSRFConfig.from_saved):
        cfg = read(v6)
        assert cfg == FSRFConfig(d_model=16, pooling="norm")
        assert (cfg.pool_norm, cfg.pool_shrink, cfg.private_pool) == (True, False, "same")
    grouped = FSRFConfig(d_model=16).to_dict(grouped=True)
    grouped["config_version"] = 6
    del grouped["fusion"]["pooling"]
    assert FSRFConfig.from_saved(grouped) == FSRFConfig(d_model=16, pooling="norm")
    assert FSRFConfig.from_dict({**v6, "pooling": "norm+private-shrink"}) == FSRFConfig(d_model=16)


def test_version_7_dicts_keep_their_projection():
    # version 8 (issue 29's encoder study) made the window of three projected frames the default
    assert (FSRFConfig().conv_kernel, FSRFConfig().conv_mode) == (3, "factorized")
    v7 = {k: v for k, v in FSRFConfig(d_model=16).to_dict().items() if k not in ("conv_kernel", "conv_mode")}
    v7["config_version"] = 7
    for read in (FSRFConfig.from_dict, FSRFConfig.from_saved):
        assert read(v7) == FSRFConfig(d_model=16, conv_kernel=1, conv_mode="full")
        # a version-7 window was MulT's, over the input features
        assert read({**v7, "conv_kernel": 3}) == FSRFConfig(d_model=16, conv_kernel=3, conv_mode="full")
    grouped = FSRFConfig(d_model=16).to_dict(grouped=True)
    grouped["config_version"] = 7
    del grouped["architecture"]["conv_kernel"], grouped["architecture"]["conv_mode"]
    assert FSRFConfig.from_saved(grouped) == FSRFConfig(d_model=16, conv_kernel=1, conv_mode="full")
    # a model saved by version 7 builds the layer it was trained with: a Linear per modality
    layer = FSRFModel(DIMS, FSRFConfig.from_saved({**v7, "num_heads": 2})).layer
    assert all(p.window is None and isinstance(p.proj, torch.nn.Linear) for p in layer.proj.values())


def test_version_8_dicts_keep_their_warm_up_in_steps():
    # version 9 (issue 29, item 3) counts the warm-up in epochs
    assert (FSRFConfig().aux_warmup_epochs, FSRFConfig().aux_warmup_steps) == (8.0, 200)
    v8 = {k: v for k, v in FSRFConfig(d_model=16).to_dict().items() if k != "aux_warmup_epochs"}
    v8["config_version"] = 8
    for read in (FSRFConfig.from_dict, FSRFConfig.from_saved):
        assert read(v8) == FSRFConfig(d_model=16, aux_warmup_epochs=0.0)
        assert read({**v8, "aux_warmup_epochs": 2.0}) == FSRFConfig(d_model=16, aux_warmup_epochs=2.0)
    # a model saved by version 8 and trained by fit ramps over 200 steps, however long its epochs
    model = FSRFModel(DIMS, FSRFConfig.from_saved({**v8, "num_heads": 2}))
    model.set_steps_per_epoch(100)
    assert model.warmup_steps() == 200
