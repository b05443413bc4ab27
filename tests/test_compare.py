"""The comparison harness (fsrf.training.compare and `fsrf compare`) at tiny sizes: every model
under the same masks, seeds paired, statistics against independent formulas, resume, user models."""

import itertools
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from fsrf import cli
from fsrf.data import load_mmsa, make_synthetic
from fsrf.models import ModelSpec
from fsrf.training import TrainSettings, compare
from fsrf.training.comparison import _paired, paired_tests, summarise

TINY = TrainSettings(epochs=1, batch_size=16, progress=False)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("cmp") / "tiny.pkl"
    make_synthetic("mosei", p, n_train=48, n_valid=16, n_test=24, seed=0)
    return p


class MeanText(nn.Module):
    """A user's model without training_loss: a linear map of the mean text feature."""

    def __init__(self, dims):
        super().__init__()
        self.lin = nn.Linear(dims["text"], 1)

    def forward(self, inputs, masks=None):
        x = inputs.get("text")
        if x is None:
            return self.lin.bias.expand(next(iter(inputs.values())).shape[0])
        w = masks["text"].unsqueeze(-1).float() if masks else torch.ones_like(x[..., :1])
        return self.lin((x * w).sum(1) / w.sum(1).clamp_min(1)).squeeze(-1)


def _specs():
    return [ModelSpec("late fusion", kind="late_fusion", kwargs={"d_model": 8}),
            ModelSpec("mean text", build=MeanText)]


def test_compare_trains_every_model_and_seed_and_writes_the_tables(tiny_file, tmp_path):
    data = load_mmsa(tiny_file)
    res = compare(data, _specs(), tmp_path, seeds=[1, 2], settings=TINY, rates=(0.0, 0.5, 0.9),
                  patterns=("l", "av", "lav"), progress=False, log=None)
    assert set(res["models"]) == {"late fusion", "mean text"}
    for entry in res["models"].values():
        assert set(entry["per_seed"]) == {"1", "2"}
        assert list(entry["mean"]["intra"]) == ["0.0", "0.5", "0.9"]
        assert list(entry["mean"]["inter"]) == ["l", "av", "lav"]
        # std is the sample std over the two seeds
        v = [entry["per_seed"][s]["intra"]["0.5"]["MAE"] for s in ("1", "2")]
        assert entry["std"]["intra"]["0.5"]["MAE"] == pytest.approx(abs(v[0] - v[1]) / math.sqrt(2))
    for name in ("comparison.md", "results.json", "results.csv", "robustness.png"):
        assert (tmp_path / name).is_file()
    table = (tmp_path / "comparison.md").read_text()
    assert "| mean text |" in table and "| L | AV | LAV | Avg |" in table
    assert res["tests"]["mean text"]["groups"]["intra r>=0.5"]["MAE"]["n"] == 2


def test_a_rerun_resumes_without_training_again(tiny_file, tmp_path, monkeypatch):
    data = load_mmsa(tiny_file)
    kw = dict(seeds=[1], settings=TINY, rates=(0.0,), patterns=("l",), progress=False, log=None)
    first = compare(data, _specs(), tmp_path, **kw)
    import fsrf.training.trainer as fit_module

    monkeypatch.setattr(fit_module, "fit", lambda *a, **k: pytest.fail("a finished run was trained again"))
    again = compare(data, _specs(), tmp_path, **kw)
    assert again["models"]["late fusion"]["per_seed"] == first["models"]["late fusion"]["per_seed"]


def _digest(path):
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_validation_split_is_evaluated_from_the_trained_runs_without_training_again(tiny_file, tmp_path):
    from fsrf.training import load_weights, predict_split

    data = load_mmsa(tiny_file)
    kw = dict(seeds=[1], settings=TINY, rates=(0.0, 0.5), patterns=("l",), progress=False, log=None)
    compare(data, _specs(), tmp_path, **kw)
    run = tmp_path / "late-fusion" / "seed_1"
    before = {f: _digest(run / f) for f in ("best.pt", "last.pt", "eval.json")}
    test_table = (tmp_path / "comparison.md").read_text()
    res = compare(data, _specs(), tmp_path, split="valid", **kw)
    # the trained weights and the test results are untouched; the valid ones sit beside them
    assert {f: _digest(run / f) for f in before} == before
    assert (tmp_path / "comparison.md").read_text() == test_table and test_table.startswith("Test split")
    for name in ("comparison.md", "results.json", "results.csv", "robustness.png"):
        assert (tmp_path / "valid" / name).is_file()
    assert (tmp_path / "valid" / "comparison.md").read_text().startswith("Validation split")
    assert json.loads((run / "eval_valid.json").read_text())["protocol"]["split"] == "valid"
    # at rate 0 the valid MAE is the plain MAE of the selected weights' predictions on the valid split
    model = load_weights(_specs()[0], data.dims, run / "best.pt")
    split = data.split("valid")
    want = float(np.mean(np.abs(predict_split(model, split).astype(np.float64) - split.labels.astype(np.float64))))
    assert res["models"]["late fusion"]["per_seed"]["1"]["intra"]["0.0"]["MAE"] == pytest.approx(want, rel=1e-5)
    assert len(split) == 16 and res["meta"]["split"] == "valid"


def test_a_rerun_with_another_model_under_the_same_name_is_refused(tiny_file, tmp_path):
    data = load_mmsa(tiny_file)
    kw = dict(seeds=[1], settings=TINY, rates=(0.0,), patterns=("l",), progress=False, log=None)
    compare(data, [ModelSpec("lf", kind="late_fusion", kwargs={"d_model": 8})], tmp_path, **kw)
    with pytest.raises(ValueError, match=r"another 'lf'.*fresh --out"):
        compare(data, [ModelSpec("lf", kind="late_fusion", kwargs={"d_model": 16})], tmp_path, **kw)


def test_every_model_of_a_seed_sees_the_same_evaluation_masks(tiny_file, tmp_path, monkeypatch):
    import fsrf.missing as missing

    seen = []
    real = missing.corrupt_split

    def spy(split, **kw):
        out = real(split, **kw)
        if len(split) == 24:  # the test split
            seen.append(tuple(np.packbits(out.masks[m]).tobytes() for m in sorted(out.masks)))
        return out

    monkeypatch.setattr(missing, "corrupt_split", spy)
    compare(load_mmsa(tiny_file), _specs(), tmp_path, seeds=[3], settings=TINY, rates=(0.5,), patterns=("av",),
            progress=False, log=None)
    assert len(seen) == 4 and seen[0] == seen[2] and seen[1] == seen[3]


def test_paired_statistics_against_independent_formulas():
    from scipy import stats

    a = np.array([0.71, 0.74, 0.69, 0.75, 0.73])
    b = np.array([0.70, 0.71, 0.70, 0.72, 0.70])
    d = a - b
    t = d.mean() / (d.std(ddof=1) / math.sqrt(len(d)))
    p_t = 2 * stats.t.sf(abs(t), df=len(d) - 1)
    # sign flips by hand: the share of the 32 sign patterns whose |sum| reaches the observed one
    flips = [abs(sum(s * x for s, x in zip(signs, np.abs(d)))) for signs in itertools.product((1, -1), repeat=5)]
    p_flip = sum(f >= abs(d.sum()) - 1e-12 for f in flips) / 32
    got = _paired(a, b)
    assert got["diff"] == pytest.approx(d.mean())
    assert got["t_p"] == pytest.approx(p_t)
    assert got["signflip_p"] == pytest.approx(p_flip)
    assert _paired(a, a)["t_p"] == 1.0 and _paired(a, a)["signflip_p"] == 1.0


def test_group_summary_averages_conditions_per_seed_before_the_test():
    def res(x):
        return {"intra": {"0.5": {"MAE": x}, "0.9": {"MAE": x + 0.2}, "0.0": {"MAE": 9.0}}, "inter": {}}

    results = {"models": {"A": {"per_seed": {"1": res(1.0), "2": res(1.2), "3": res(1.1)}},
                          "B": {"per_seed": {"1": res(1.1), "2": res(1.25), "3": res(1.3)}}}}
    summary = summarise(results)
    assert summary["A"]["intra r>=0.5"]["per_seed"]["2"]["MAE"] == pytest.approx(1.3)
    assert summary["A"]["intra r<0.5"]["per_seed"]["2"]["MAE"] == pytest.approx(9.0)
    results["summary"] = summary
    t = paired_tests(results, "A")["B"]["groups"]["intra r>=0.5"]["MAE"]
    assert t["diff"] == pytest.approx(np.mean([-0.1, -0.05, -0.2]))


def test_bad_arguments_are_clear(tiny_file, tmp_path):
    data = load_mmsa(tiny_file)
    with pytest.raises(ValueError, match="must differ"):
        compare(data, [ModelSpec("a b", kind="mult"), ModelSpec("a-b", kind="mult")], tmp_path, log=None)
    with pytest.raises(ValueError, match="reference must be one of"):
        compare(data, _specs(), tmp_path, reference="FSRF", log=None)
    with pytest.raises(ValueError, match="seeds must not repeat"):
        compare(data, _specs(), tmp_path, seeds=[1, 1], log=None)
    with pytest.raises(TypeError, match=r"specs\[0\] must be"):
        compare(data, ["late fusion"], tmp_path, log=None)
    with pytest.raises(ValueError, match=r"split must be one of \('test', 'valid'\); got 'train'"):
        compare(data, _specs(), tmp_path, split="train", log=None)


def test_cli_compare_runs_and_refuses_unknown_models(tiny_file, tmp_path, capsys):
    rc = cli.main(["compare", "--data", str(tiny_file), "--models", "late-fusion,late-fusion-md", "--seeds", "1",
                   "--d-model", "8", "--epochs", "1", "--batch-size", "16", "--rates", "0,0.5",
                   "--patterns", "l,lav", "--no-progress", "--out", str(tmp_path / "c")])
    assert rc == 0
    res = json.loads((tmp_path / "c" / "results.json").read_text())
    assert list(res["models"]) == ["late fusion", "late fusion + modality dropout"]
    capsys.readouterr()
    rc = cli.main(["compare", "--data", str(tiny_file), "--models", "fsrf,nope", "--out", str(tmp_path / "d")])
    assert rc == 2
    assert "--models takes 'all' or a comma list" in capsys.readouterr().err


def test_cli_compare_split_choices_are_the_harness_splits():
    from fsrf.cli.compare import SPLITS
    from fsrf.training.comparison import EVAL_SPLITS

    assert SPLITS == EVAL_SPLITS


def _fake_run(values, data):
    """A compare-shaped results dict: values = {model: {seed: MAE at r = 0.0}} (F1 = 1 - MAE / 2)."""
    models = {}
    for name, per in values.items():
        per_seed = {str(s): {"intra": {"0.0": {"MAE": v, "Has0_F1_score": 1 - v / 2}}} for s, v in per.items()}
        models[name] = {"per_seed": per_seed}
    meta = {"dataset": "mosei", "reference": "A", "split": "test", "rates": [0.0], "patterns": [], "data": data,
            "seeds": sorted(next(iter(values.values())))}
    return {"models": models, "meta": meta}


def test_replicates_merge_into_one_comparison_over_every_draw():
    from scipy import stats

    from fsrf.training.comparison import format_comparison, merge_replicates

    r1 = _fake_run({"A": {1: 0.70, 2: 0.72}, "B": {1: 0.71, 2: 0.75}}, "d1.pkl")
    r2 = _fake_run({"A": {1: 0.66, 3: 0.69}, "B": {1: 0.70, 3: 0.69}}, "d2.pkl")
    m = merge_replicates([r1, r2], labels=["d1", "d2"])
    a, b = np.array([0.70, 0.72, 0.66, 0.69]), np.array([0.71, 0.75, 0.70, 0.69])
    assert list(m["models"]["A"]["per_seed"]) == ["d1:1", "d1:2", "d2:1", "d2:3"]
    assert m["models"]["B"]["mean"]["intra"]["0.0"]["MAE"] == pytest.approx(b.mean())
    assert m["models"]["B"]["std"]["intra"]["0.0"]["MAE"] == pytest.approx(b.std(ddof=1))
    t = m["tests"]["B"]["groups"]["intra r<0.5"]["MAE"]
    assert t["n"] == 4 and t["t_p"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert [x["data"] for x in m["meta"]["replicates"]] == ["d1.pkl", "d2.pkl"]
    assert format_comparison(m).startswith("Test split, 4 replicates, each its own data file")
    assert list(merge_replicates([r1, r2])["models"]["A"]["per_seed"])[0] == "r1:1"


def test_replicates_of_other_models_or_protocols_are_refused():
    from fsrf.training.comparison import merge_replicates

    r1 = _fake_run({"A": {1: 0.7}, "B": {1: 0.7}}, "d1.pkl")
    with pytest.raises(ValueError, match="at least two"):
        merge_replicates([r1])
    with pytest.raises(ValueError, match=r"runs\[1\] holds the models \['A'\]"):
        merge_replicates([r1, _fake_run({"A": {1: 0.7}}, "d2.pkl")])
    other = _fake_run({"A": {1: 0.7}, "B": {1: 0.7}}, "d2.pkl")
    other["meta"]["split"] = "valid"
    with pytest.raises(ValueError, match=r"runs\[1\] has meta split='valid'; runs\[0\] has 'test'"):
        merge_replicates([r1, other])
    with pytest.raises(ValueError, match="distinct names"):
        merge_replicates([r1, r1], labels=["x", "x"])
    with pytest.raises(TypeError, match=r"runs\[1\] must be a results dict"):
        merge_replicates([r1, {"models": {}}])


def test_the_term_ablations_keep_the_architecture_and_drop_only_their_terms():
    from fsrf.cli.compare import MODEL_KEYS, parse_models
    from fsrf.training.comparison import DAS_WEIGHTS, NO_AUX_NAME, NO_DAS_LOSSES_NAME, default_specs

    specs = {s.name: s for s in default_specs(16, term_ablations=True, first_reconstruction=True)}
    assert list(MODEL_KEYS.values()) == list(specs)  # the command line's keys name every spec, in order
    assert {NO_AUX_NAME, NO_DAS_LOSSES_NAME} <= set(parse_models("all"))
    dims = {"text": 6, "audio": 4, "vision": 3}
    g = torch.Generator().manual_seed(0)
    inputs = {m: torch.randn(8, 5, d, generator=g) for m, d in dims.items()}
    masks = {m: torch.rand(8, 5, generator=g) > 0.3 for m in dims}
    labels = torch.randn(8, generator=g)
    full = specs["FSRF"].instantiate(dims)
    for name in (NO_AUX_NAME, NO_DAS_LOSSES_NAME):
        model = specs[name].instantiate(dims).train()
        assert list(model.state_dict()) == list(full.state_dict()), name  # the same architecture
        cfg = model.config
        assert cfg.das, name  # view B and its task loss stay
        loss, parts = model.training_loss(inputs, masks, labels)
        kept = {"orth": cfg.w_orth, "dered": cfg.w_dered, "hom": cfg.w_hom, "rec": cfg.w_rec,
                "loo": cfg.w_recov, "kl": cfg.w_kl, "dist": cfg.w_dist, "recov": cfg.w_recov, "pred": cfg.w_pred}
        aux = sum(w * parts[k].item() for k, w in kept.items())
        want = parts["task_a"].item() + parts["task_b"].item() + parts["aux_scale"].item() * aux
        assert loss.item() == pytest.approx(want, rel=1e-6)
        assert parts["task_b"].item() > 0
        if name == NO_AUX_NAME:
            assert aux == 0.0 and loss.item() == pytest.approx(parts["task_a"].item() + parts["task_b"].item())
        else:
            assert all(getattr(cfg, w) == 0.0 for w in DAS_WEIGHTS)
            assert cfg.w_orth > 0 and cfg.w_hom > 0 and parts["orth"].item() > 0  # the DHF terms stay
