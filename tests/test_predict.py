"""fsrf predict / fsrf.training.predict_file on feature files as users have them: no labels, some
splits, a modality absent from the file or from some samples, a pretrained folder, bad dims."""

import csv
import json
import pickle

import numpy as np
import pytest
import torch

from _helpers import write_tiny_mmsa
from fsrf import cli
from fsrf.data import load_mmsa
from fsrf.training.prediction import predict_file, write_predictions
from fsrf.training.trainer import TrainSettings, fit, load_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_mmsa(tmp_path_factory.mktemp("data") / "tiny.pkl")


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory):
    from fsrf import FSRFConfig

    out = tmp_path_factory.mktemp("run") / "run"
    fit(load_mmsa(tiny), out, config=FSRFConfig(d_model=16, num_heads=2),
        settings=TrainSettings(epochs=1, batch_size=16, progress=False), seed=1, log=None)
    return out


def _variant(src, dst, edit):
    with open(src, "rb") as fh:
        obj = pickle.load(fh)
    edit(obj)
    with open(dst, "wb") as fh:
        pickle.dump(obj, fh, protocol=4)
    return dst


def _expected(run, split, drop=()):
    """The model's predictions computed here: its forward on the split's batch, modalities in
    ``drop`` left out of the inputs."""
    model, _ = load_model(run / "best.pt")
    b = split.batch(np.arange(len(split)))
    inputs = {m: x for m, x in b["inputs"].items() if m not in drop}
    masks = {m: x for m, x in b["masks"].items() if m not in drop}
    with torch.no_grad():
        return model(inputs, masks).numpy()


def test_every_split_with_labels_and_ids(run, tiny, tmp_path):
    res = predict_file(run, tiny)
    data = load_mmsa(tiny)
    assert res["meta"]["splits"] == ["train", "valid", "test"] and res["meta"]["task"] == "regression"
    test_rows = [r for r in res["rows"] if r["split"] == "test"]
    np.testing.assert_allclose([r["prediction"] for r in test_rows], _expected(run, data.split("test")), rtol=1e-5,
                               atol=1e-6)
    assert [r["id"] for r in test_rows] == list(data.split("test").ids)
    assert [r["label"] for r in test_rows] == pytest.approx(data.split("test").labels.tolist())
    paths = write_predictions(res, tmp_path / "out")
    with open(paths["csv"], newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == len(res["rows"]) and set(rows[0]) == {"split", "index", "id", "available", "prediction", "label"}
    assert float(rows[0]["prediction"]) == res["rows"][0]["prediction"]  # repr keeps every digit
    saved = json.loads(paths["json"].read_text())
    assert saved["meta"]["samples"] == len(rows) and saved["rows"][0] == res["rows"][0]


def test_a_file_without_labels_and_with_only_a_test_split(run, tiny, tmp_path):
    def edit(obj):
        for s in ("train", "valid"):
            del obj[s]
        del obj["test"]["regression_labels"], obj["test"]["classification_labels"]

    path = _variant(tiny, tmp_path / "nolabels.pkl", edit)
    res = predict_file(run, path)
    assert res["meta"]["splits"] == ["test"]
    assert all("label" not in r for r in res["rows"])
    np.testing.assert_allclose([r["prediction"] for r in res["rows"]],
                               _expected(run, load_mmsa(tiny).split("test")), rtol=1e-5, atol=1e-6)


def test_a_modality_missing_from_the_file_or_from_some_samples(run, tiny, tmp_path):
    def no_audio(obj):
        for s in ("train", "valid", "test"):
            del obj[s]["audio"]

    res = predict_file(run, _variant(tiny, tmp_path / "noaudio.pkl", no_audio), splits=["test"])
    assert {r["available"] for r in res["rows"]} == {"text,vision"}
    np.testing.assert_allclose([r["prediction"] for r in res["rows"]],
                               _expected(run, load_mmsa(tiny).split("test"), drop=("audio",)), rtol=1e-5, atol=1e-6)

    def blank(obj):
        obj["test"]["vision"][0] = 0.0  # sample 0: every vision frame zero
        obj["test"]["text"][1] = 0.0    # sample 1: no text
        obj["test"]["text_bert"][1, 1] = 0

    res = predict_file(run, _variant(tiny, tmp_path / "blank.pkl", blank), splits=["test"])
    assert res["rows"][0]["available"] == "text,audio" and res["rows"][1]["available"] == "audio,vision"
    assert res["rows"][2]["available"] == "text,audio,vision"


def test_a_flat_file_of_one_split(run, tiny, tmp_path):
    path = _variant(tiny, tmp_path / "flat.pkl", lambda obj: [obj.update(obj["test"]), obj.pop("train"),
                                                                    obj.pop("valid"), obj.pop("test")])
    res = predict_file(run, path)
    assert res["meta"]["splits"] == ["all"] and len(res["rows"]) == len(load_mmsa(tiny).split("test"))


def test_the_command_line_with_an_exported_model(run, tiny, tmp_path, capsys):
    assert cli.main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "model")]) == 0
    assert cli.main(["predict", "--model", str(tmp_path / "model"), "--data", str(tiny), "--split", "test",
                     "--no-progress", "--out", str(tmp_path / "pred")]) == 0
    assert "predicted 16 samples of test" in capsys.readouterr().out
    rows = json.loads((tmp_path / "pred" / "predictions.json").read_text())["rows"]
    np.testing.assert_allclose([r["prediction"] for r in rows], _expected(run, load_mmsa(tiny).split("test")),
                               rtol=1e-5, atol=1e-6)


def test_the_command_line_with_a_hub_repo_id(run, tiny, tmp_path, monkeypatch, capsys):
    import shutil

    import huggingface_hub

    # offline: the repo sits in the Hub's cache as a download leaves it, at one commit of main
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["export", "--checkpoint", str(run), "--out", str(tmp_path / "model")]) == 0
    repo = tmp_path / "cache" / "models--someone--fsrf-tiny"
    shutil.copytree(tmp_path / "model", repo / "snapshots" / ("b" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("b" * 40)
    assert cli.main(["predict", "--model", "someone/fsrf-tiny", "--data", str(tiny), "--split", "test",
                     "--no-progress", "--out", str(tmp_path / "pred")]) == 0
    assert "predicted 16 samples of test" in capsys.readouterr().out
    rows = json.loads((tmp_path / "pred" / "predictions.json").read_text())["rows"]
    np.testing.assert_allclose([r["prediction"] for r in rows], _expected(run, load_mmsa(tiny).split("test")),
                               rtol=1e-5, atol=1e-6)
    assert cli.main(["predict", "--model", "someone/absent", "--data", str(tiny), "--out", str(tmp_path / "p2")]) != 0
    err = capsys.readouterr().err
    assert "'someone/absent' is no folder here" in err and "\n" not in err.strip()


def test_bad_input_is_one_line_naming_what_is_wrong(run, tiny, tmp_path, capsys):
    wide = _variant(tiny, tmp_path / "wide.pkl",
                    lambda obj: obj["test"].update(audio=np.zeros((16, 6, 9), dtype=np.float32)))
    assert cli.main(["predict", "--model", str(run), "--data", str(wide), "--split", "test", "--out",
                     str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert "split 'test', key 'audio': feature dimension 9 does not match the model's 6" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    with pytest.raises(ValueError, match=r"splits \['dev'\] are not in .* it has \['train', 'valid', 'test'\]"):
        predict_file(run, tiny, splits=["dev"])
    with pytest.raises(ValueError, match="batch_size must be a positive int; got 0"):
        predict_file(run, tiny, batch_size=0)
    with pytest.raises(FileNotFoundError, match="feature file .* does not exist"):
        predict_file(run, tmp_path / "nope.pkl")


def test_lengths_beyond_the_padded_length_are_clipped_with_the_loaders_warning(run, tmp_path):
    from fsrf.data import make_synthetic
    from fsrf.data.mmsa import MMSALengthWarning

    src = make_synthetic("mosei", tmp_path / "u.pkl", n_train=4, n_valid=4, n_test=6, seed=2, aligned=False,
                         dims={"text": 16, "audio": 6, "vision": 5}, seq_lens={"text": 6, "audio": 8, "vision": 8})
    path = _variant(src, tmp_path / "long.pkl", lambda obj: obj["test"]["audio_lengths"].__setitem__(0, 99))
    with pytest.warns(MMSALengthWarning, match="exceed the padded length"):
        res = predict_file(run, path, splits=["test"])
    assert len(res["rows"]) == 6
