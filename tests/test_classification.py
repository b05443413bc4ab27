"""Classification end to end: a class-labelled synthetic file, training a user's classifier with
FSRFObjective through fit, robustness evaluation with accuracy and weighted F1, and compare."""

import json
import math
import pickle

import numpy as np
import pytest
import torch
from torch import nn

from fsrf import FSRFConfig, FSRFLayer, FSRFObjective, cli
from fsrf.data import load_mmsa, make_synthetic
from fsrf.missing import corrupt_split
from fsrf.models import ModelSpec
from fsrf.training import TrainSettings, compare, fit
from fsrf.training.evaluation import robust_eval
from fsrf.training.trainer import load_weights, predict_split

DIMS = {"text": 16, "audio": 6, "vision": 5}
LENS = {"text": 6, "audio": 6, "vision": 6}
C = 4
TINY = TrainSettings(epochs=2, batch_size=16, progress=False)


@pytest.fixture(scope="module")
def class_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("cls") / "emotions.pkl"
    make_synthetic("mosei", path, n_train=48, n_valid=16, n_test=24, seed=2, dims=DIMS, seq_lens=LENS, classes=C)
    return path


def fsrf_classifier(dims, classes=C):
    layer = FSRFLayer(dims, config=FSRFConfig(d_model=16, num_heads=2))
    return FSRFObjective(layer, nn.Linear(16, classes), task="classification")


class MeanClassifier(nn.Module):
    """A user's classifier without training_loss: masked means, concatenated, a linear map."""

    task = "classification"

    def __init__(self, dims):
        super().__init__()
        self.lin = nn.Linear(sum(dims.values()), C)

    def forward(self, inputs, masks):
        pooled = [(x * masks[m].unsqueeze(-1)).sum(1) / masks[m].sum(1, keepdim=True).clamp_min(1)
                  for m, x in inputs.items()]
        return self.lin(torch.cat(pooled, -1))


def test_the_class_labelled_file_keeps_the_rest_of_the_file(class_file, tmp_path):
    plain = make_synthetic("mosei", tmp_path / "plain.pkl", n_train=48, n_valid=16, n_test=24, seed=2, dims=DIMS,
                           seq_lens=LENS)
    with open(class_file, "rb") as fh:
        a = pickle.load(fh)
    with open(plain, "rb") as fh:
        b = pickle.load(fh)
    for split in ("train", "valid", "test"):
        for key in ("text", "audio", "vision", "regression_labels"):
            np.testing.assert_array_equal(a[split][key], b[split][key])
        assert set(np.unique(a[split]["classification_labels"])) <= set(range(C))
    assert a["config"]["class_names"] == ["sad", "neutral", "happy", "angry"]
    data = load_mmsa(class_file)
    sp = data.split("train")
    assert sp.class_labels.dtype == np.int64 and sp.class_names == ("sad", "neutral", "happy", "angry")
    assert sp.batch([0, 1])["class_labels"].tolist() == sp.class_labels[:2].tolist()


def test_classes_are_nominal_and_about_balanced():
    from fsrf.data.synthetic import _generate_with_truth

    data, _ = _generate_with_truth("mosei", n_train=4000, n_valid=2, n_test=2, dims=DIMS, seq_lens=LENS, classes=C)
    y = data["train"]["classification_labels"]
    counts = np.bincount(y, minlength=C)
    assert counts.min() > 0.18 * len(y)  # four sectors of a roughly round cloud
    reg = data["train"]["regression_labels"]
    means = [reg[y == c].mean() for c in range(C)]
    # two classes on each side of the sentiment axis: not an ordering of the label
    assert sum(m > 0 for m in means) == 2


def test_fit_and_evaluate_a_classifier(class_file, tmp_path):
    data = load_mmsa(class_file)
    spec = ModelSpec("fsrf classifier", build=fsrf_classifier)
    res = fit(data, tmp_path / "run", model=spec, settings=TINY, seed=1, dataset="mosei", log=None)
    assert all("select_ce" in row and "select_mae" not in row for row in res["history"])
    model = load_weights(spec, data.dims, tmp_path / "run" / "best.pt")
    ev = robust_eval(model, data.split("test"), "mosei", rates=(0.0, 0.5), patterns=("l", "lav"))
    assert set(ev["intra"]) == {"0.0", "0.5"} and set(ev["inter"]) == {"l", "lav"}
    # the accuracy at r = 0 from the logits, counted here
    logits = predict_split(model, data.split("test"))
    assert logits.shape == (24, C)
    acc = float(np.mean(logits.argmax(1) == data.split("test").class_labels))
    assert ev["intra"]["0.0"]["Acc"] == pytest.approx(acc)
    assert {"WF1", "MacroF1", "sad_F1", "angry_acc"} <= set(ev["inter"]["l"])
    # the selection score is the validation cross-entropy of the selected weights, averaged over
    # the selection rates (the frame-drop masks of the evaluation seed)
    ces = []
    for r in TINY.select_rates:
        val = corrupt_split(data.split("valid"), rate=r, seed=TINY.eval_seed) if r > 0 else data.split("valid")
        z = torch.tensor(predict_split(model, val), dtype=torch.float64)
        ces.append(torch.nn.functional.cross_entropy(z, torch.tensor(val.class_labels)).item())
    assert res["best_score"] == pytest.approx(float(np.mean(ces)), rel=1e-5)


def test_compare_classifiers_writes_accuracy_and_weighted_f1_tables(class_file, tmp_path):
    data = load_mmsa(class_file)
    specs = [ModelSpec("fsrf classifier", build=fsrf_classifier), ModelSpec("mean classifier", build=MeanClassifier)]
    res = compare(data, specs, tmp_path, seeds=[1, 2], dataset="mosei", settings=TINY, rates=(0.0, 0.5),
                  patterns=("a", "lav"), log=None)
    group = res["summary"]["fsrf classifier"]["inter (7 patterns)"]
    assert {"Acc", "WF1"} <= set(group["mean"])
    t = res["tests"]["mean classifier"]["groups"]["intra r>=0.5"]["WF1"]
    assert t["n"] == 2 and math.isfinite(t["diff"])
    md = (tmp_path / "comparison.md").read_text(encoding="utf-8")
    assert "WF1 by intra-modal missing rate r" in md and "Acc by available modalities" in md
    assert (tmp_path / "robustness.png").is_file()
    saved = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    assert "Acc" in saved["models"]["mean classifier"]["mean"]["intra"]["0.5"]


def test_a_classifier_on_a_file_without_class_labels_is_refused_by_name(class_file, tmp_path):
    with open(class_file, "rb") as fh:
        obj = pickle.load(fh)
    for split in ("train", "valid", "test"):
        del obj[split]["classification_labels"]
    path = tmp_path / "no_classes.pkl"
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=4)
    data = load_mmsa(path)
    with pytest.raises(ValueError, match=r"split 'train' has no usable classification_labels"):
        fit(data, tmp_path / "run", model=ModelSpec("c", build=fsrf_classifier), settings=TINY, log=None)
    with pytest.raises(ValueError, match="has no classification_labels"):
        robust_eval(fsrf_classifier(DIMS), data.split("test"), "mosei", rates=(0.0,))


def test_a_head_with_too_few_classes_names_the_labels(class_file, tmp_path):
    data = load_mmsa(class_file)
    spec = ModelSpec("three", build=lambda dims: fsrf_classifier(dims, classes=3))
    with pytest.raises(ValueError, match=r"labels must be class indices in \[0, 2\]"):
        fit(data, tmp_path / "run", model=spec, settings=TINY, log=None)


def test_make_synthetic_classes_on_the_command_line(tmp_path, capsys):
    out = tmp_path / "c.pkl"
    assert cli.main(["make-synthetic", "--preset", "sims", "--n-train", "8", "--n-valid", "4", "--n-test", "4",
                     "--classes", "3", "--out", str(out)]) == 0
    data = load_mmsa(out)
    assert data.split("test").class_names == ("class0", "class1", "class2")
    assert cli.main(["make-synthetic", "--preset", "sims", "--classes", "1", "--out", str(out)]) == 2
    assert "classes must be an int >= 2" in capsys.readouterr().err
