"""Model folders: save_pretrained / from_pretrained (config.json + model.safetensors + model card), the
Hugging Face Hub (push_to_hub, from_pretrained("user/repo"), offline) and `fsrf export`."""

import json
import os
import pickle
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from fsrf import FSRFConfig, cli
from fsrf.models import (
    FSRFModel,
    LateFusion,
    ModelSpec,
    MulT,
    build_model,
    from_pretrained,
)
from fsrf.models.pretrained import (
    CONFIG_NAME,
    FORMAT,
    WEIGHTS_NAME,
    read_pretrained_config,
)

CARD_NAME = "README.md"
FIXTURES = Path(__file__).parent / "fixtures" / "pretrained_v1"

DIMS = {"text": 12, "audio": 5, "vision": 4}
KINDS = {
    "fsrf": (FSRFModel, FSRFConfig(d_model=16, num_heads=2, conv_kernel=3, das=False, w_orth=0.25).to_dict()),
    "late_fusion": (LateFusion, {"d_model": 8, "hidden": 12, "dropout": 0.2, "modality_dropout": 0.3}),
    "mult": (MulT, {"d_model": 16, "num_heads": 2, "layers": 1, "conv_kernel": 3}),
}


def _batch(seed=0, B=5, T=7):
    g = torch.Generator().manual_seed(seed)
    inputs = {m: torch.randn(B, T, D, generator=g) for m, D in DIMS.items()}
    masks = {m: torch.rand(B, T, generator=g) > 0.3 for m in DIMS}
    masks["audio"][0] = False  # one sample without audio
    return inputs, masks


def _model(kind, seed=0):
    torch.manual_seed(seed)
    return build_model(kind, DIMS, **KINDS[kind][1]).eval()


def _same_state(a: nn.Module, b: nn.Module):
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and torch.equal(sa[k], sb[k]), k


@pytest.fixture
def umask():
    saved = os.umask(0o027)
    try:
        yield 0o027
    finally:
        os.umask(saved)


# ----------------------------------------------------------------------------------- round trip
@pytest.mark.parametrize("kind", list(KINDS))
def test_round_trip_gives_identical_state_and_predictions(kind, tmp_path, umask):
    cls, kwargs = KINDS[kind]
    model = _model(kind)
    out = model.save_pretrained(tmp_path / "m")
    assert out == tmp_path / "m" and sorted(os.listdir(out)) == [CARD_NAME, CONFIG_NAME, WEIGHTS_NAME]
    for name in (CARD_NAME, CONFIG_NAME, WEIGHTS_NAME):  # like open(path, "w"): 0o666 & ~umask
        assert os.stat(out / name).st_mode & 0o777 == 0o666 & ~umask, name

    cfg = json.loads((out / CONFIG_NAME).read_text())
    assert cfg["format"] == FORMAT and cfg["model_kind"] == kind and cfg["modality_dims"] == DIMS
    assert cfg["fsrf_version"] == __import__("fsrf").__version__
    if kind == "fsrf":
        assert FSRFConfig.from_dict(cfg["model_config"]) == FSRFConfig.from_dict(kwargs)
    else:  # every constructor argument, defaults included
        assert {k: cfg["model_config"][k] for k in kwargs} == kwargs
        assert set(cfg["model_config"]) >= set(kwargs)

    inputs, masks = _batch()
    with torch.no_grad():
        want = model(inputs, masks)
    for loaded in (cls.from_pretrained(out), from_pretrained(out)):
        assert type(loaded) is cls and not loaded.training
        _same_state(model, loaded)
        with torch.no_grad():
            assert torch.equal(loaded(inputs, masks), want)


def test_saving_over_a_folder_replaces_both_files(tmp_path):
    a, b = _model("late_fusion", seed=1), _model("late_fusion", seed=2)
    a.save_pretrained(tmp_path)
    (tmp_path / "README.md").write_text("kept")
    b.save_pretrained(tmp_path)
    _same_state(b, LateFusion.from_pretrained(tmp_path))
    assert (tmp_path / "README.md").read_text() == "kept"
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".fsrf-tmp")]


def test_tied_and_non_contiguous_tensors_are_saved(tmp_path):
    # none of the built-in models ties or transposes a tensor; a user may, after construction
    model = _model("late_fusion")
    model.proj["audio"].bias = model.proj["text"].bias  # two names, one storage: safetensors refuses that
    w = model.head[0].weight.detach()
    model.head[0].weight = nn.Parameter(w.t().contiguous().t())  # same values, transposed strides
    assert not model.head[0].weight.is_contiguous()
    model.save_pretrained(tmp_path)
    loaded = LateFusion.from_pretrained(tmp_path)
    _same_state(model, loaded)
    inputs, masks = _batch()
    with torch.no_grad():
        assert torch.equal(loaded(inputs, masks), model(inputs, masks))


def test_shared_encoder_of_fsrf_is_one_module_not_aliased_tensors():
    sd = _model("fsrf").state_dict()
    ptrs = [t.untyped_storage().data_ptr() for t in sd.values()]
    assert len(set(ptrs)) == len(ptrs)


# ------------------------------------------------------------------------------------ old folders
def _recorded():
    from safetensors.torch import load_file

    saved = load_file(str(FIXTURES / "expected.safetensors"))
    inputs = {k.split(".", 1)[1]: v for k, v in saved.items() if k.startswith("input.")}
    masks = {k.split(".", 1)[1]: v for k, v in saved.items() if k.startswith("mask.")}
    return inputs, masks, saved


@pytest.mark.parametrize("kind", list(KINDS))
def test_folders_written_before_the_hub_mixin_load_as_trained(kind, tmp_path):
    # tests/fixtures/record_pretrained_v1.py wrote these with the hand-written save_pretrained of
    # commit bc83079, and the outputs of each model on a fixed batch
    from safetensors.torch import load_file

    folder = FIXTURES / kind
    assert sorted(os.listdir(folder)) == [CONFIG_NAME, WEIGHTS_NAME] and _config(folder)["format"] == FORMAT
    inputs, masks, saved = _recorded()
    weights = load_file(str(folder / WEIGHTS_NAME))
    cls = KINDS[kind][0]
    for model in (cls.from_pretrained(folder), from_pretrained(folder), from_pretrained(str(folder))):
        assert type(model) is cls and not model.training
        state = model.state_dict()
        assert sorted(state) == sorted(weights) and all(torch.equal(state[k], weights[k]) for k in weights)
        with torch.no_grad():
            torch.testing.assert_close(model(inputs, masks), saved[f"output.{kind}"], rtol=1e-5, atol=1e-6)
    assert sorted(os.listdir(folder)) == [CONFIG_NAME, WEIGHTS_NAME]  # loading writes nothing
    model.save_pretrained(tmp_path)  # and saves again as a folder of today
    _same_state(model, cls.from_pretrained(tmp_path))


# ------------------------------------------------------------------------------ wrong kind / class
def test_class_method_refuses_a_folder_of_another_kind(tmp_path):
    _model("late_fusion").save_pretrained(tmp_path / "lf")
    _model("fsrf").save_pretrained(tmp_path / "fsrf")
    with pytest.raises(ValueError, match=r"holds a 'late_fusion' model \(LateFusion\); FSRFModel.from_pretrained "
                                         r"loads 'fsrf' models only"):
        FSRFModel.from_pretrained(tmp_path / "lf")
    with pytest.raises(ValueError, match="MulT.from_pretrained loads 'mult' models only"):
        MulT.from_pretrained(tmp_path / "fsrf")
    assert type(from_pretrained(tmp_path / "lf")) is LateFusion


def test_subclasses_are_not_saved_as_their_base_kind(tmp_path):
    class Mine(LateFusion):
        """A user's variant: the folder of a late_fusion could not rebuild it."""

    with pytest.raises(ValueError, match="save_pretrained needs a built-in model .*got Mine"):
        Mine(DIMS).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="Mine is not a built-in model kind"):
        Mine.from_pretrained(tmp_path)


@pytest.mark.parametrize("value, match", [((12,), "does not survive a JSON round trip"),
                                          (float("nan"), "must hold JSON values only"),
                                          (torch.tensor(12), "must hold JSON values only")])
def test_a_configuration_that_is_not_plain_json_is_refused_before_writing(value, match, tmp_path):
    # the constructors refuse such values; the check stands behind them (and behind a registered
    # kind whose arguments they do not all validate)
    model = _model("late_fusion")
    model._fsrf_init_args["hidden"] = value
    with pytest.raises(ValueError, match=match):
        model.save_pretrained(tmp_path / "m")
    assert not (tmp_path / "m").exists()


# ------------------------------------------------------------------------------ no code on load
def _config(folder):
    return json.loads((folder / CONFIG_NAME).read_text())


def _write_config(folder, cfg):
    (folder / CONFIG_NAME).write_text(json.dumps(cfg))


def test_loading_runs_no_pickle(tmp_path, monkeypatch):
    _model("mult").save_pretrained(tmp_path)

    def forbidden(*a, **k):
        raise AssertionError("from_pretrained must not unpickle")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    assert type(from_pretrained(tmp_path)) is MulT


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this creates the marker file
        return (open, (self.marker, "w"))


def test_a_pickle_in_place_of_the_weights_is_refused_without_running(tmp_path):
    _model("late_fusion").save_pretrained(tmp_path)
    marker = tmp_path / "pwned"
    (tmp_path / WEIGHTS_NAME).write_bytes(pickle.dumps(_Payload(str(marker))))
    with pytest.raises(ValueError, match=f"{tmp_path / WEIGHTS_NAME} is truncated, corrupted or not a safetensors"):
        from_pretrained(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("kind", ["this", "builtins.eval", "os.system", "fsrf.models.LateFusion", "", None, 3])
def test_only_registry_kinds_are_built(kind, tmp_path):
    _model("late_fusion").save_pretrained(tmp_path)
    cfg = _config(tmp_path)
    cfg["model_kind"] = kind
    _write_config(tmp_path, cfg)
    was_imported = "this" in sys.modules  # `import this` prints the Zen of Python: nothing may import it
    with pytest.raises(ValueError, match=r"config.json: model_kind must be one of \['fsrf', 'late_fusion', 'mult'\]"):
        from_pretrained(tmp_path)
    assert ("this" in sys.modules) == was_imported


@pytest.mark.parametrize("change, match", [
    ({"d_model": "torch.nn.Identity"}, "d_model must be a positive int; got 'torch.nn.Identity'"),
    ({"d_model": {"__class__": "os.system", "args": ["true"]}}, "d_model must be a positive int"),
    ({"__init__": "os.system"}, "unexpected keyword argument '__init__'"),
    ({"modality_dims": {"x": 1}}, "multiple values for argument 'modality_dims'"),
])
def test_model_config_values_are_plain_arguments(change, match, tmp_path):
    _model("late_fusion").save_pretrained(tmp_path)
    cfg = _config(tmp_path)
    cfg["model_config"].update(change)
    _write_config(tmp_path, cfg)
    with pytest.raises(ValueError, match=f"cannot build a 'late_fusion' model from its model_config: .*{match}"):
        from_pretrained(tmp_path)


@pytest.mark.parametrize("text, match", [
    (f'{{"format": "{FORMAT}", "d_model": NaN}}', "NaN is not a JSON value"),
    (f'{{"format": "{FORMAT}", "x": Infinity}}', "Infinity is not a JSON value"),
    (f'{{"format": "{FORMAT}", "format": "{FORMAT}"}}', "duplicate key 'format'"),
    ("cos\nsystem\n(S'true'\ntR.", "is not valid JSON"),
    ("[1, 2]", "must hold a JSON object; got list"),
])
def test_config_json_must_be_strict_json(text, match, tmp_path):
    _model("late_fusion").save_pretrained(tmp_path)
    (tmp_path / CONFIG_NAME).write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        from_pretrained(tmp_path)
    assert str(tmp_path / CONFIG_NAME) in str(err.value) and "\n" not in str(err.value)


# -------------------------------------------------------------------------------- damaged folders
def test_truncated_weights_are_refused_naming_the_file(tmp_path):
    _model("fsrf").save_pretrained(tmp_path)
    path = tmp_path / WEIGHTS_NAME
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) // 2, 40, 3, 0):
        path.write_bytes(data[:cut])
        with pytest.raises(ValueError, match="is truncated, corrupted or not a safetensors file") as err:
            FSRFModel.from_pretrained(tmp_path)
        assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_a_foreign_safetensors_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    _model("late_fusion").save_pretrained(tmp_path)
    save_file({"w": torch.zeros(2)}, str(tmp_path / WEIGHTS_NAME), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=f"{tmp_path / WEIGHTS_NAME} is a safetensors file but not an fsrf model"):
        from_pretrained(tmp_path)


def test_shape_mismatch_is_refused(tmp_path):
    _model("late_fusion").save_pretrained(tmp_path)
    cfg = _config(tmp_path)
    cfg["model_config"]["d_model"] = 10
    _write_config(tmp_path, cfg)
    with pytest.raises(ValueError, match=f"{tmp_path / WEIGHTS_NAME} does not match the 'late_fusion' model .*"
                                         r"shape mismatch: proj.text.weight is \(8, 12\) in the file, \(10, 12\)"):
        from_pretrained(tmp_path)


def test_weights_and_config_of_different_saves_are_refused(tmp_path):
    # what a reader sees between the two renames of a save over an existing folder
    _model("late_fusion", seed=1).save_pretrained(tmp_path)
    old = (tmp_path / CONFIG_NAME).read_text()
    _model("late_fusion", seed=2).save_pretrained(tmp_path)
    (tmp_path / CONFIG_NAME).write_text(old)
    with pytest.raises(ValueError, match="come from different saves"):
        from_pretrained(tmp_path)


@pytest.mark.parametrize("fmt, match", [
    ("fsrf-pretrained-v2", r"has format 'fsrf-pretrained-v2'; this fsrf .* reads 'fsrf-pretrained-v1'"),
    (None, r"has no 'format' field \(not written by fsrf\)"),
])
def test_config_of_another_format_is_refused(fmt, match, tmp_path):
    _model("mult").save_pretrained(tmp_path)
    cfg = _config(tmp_path)
    if fmt is None:
        cfg = {"model_type": "bert", "hidden_size": 768}  # a transformers config.json
    else:
        cfg["format"] = fmt
    _write_config(tmp_path, cfg)
    with pytest.raises(ValueError, match=match):
        from_pretrained(tmp_path)


def test_missing_folder_and_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"pretrained folder {tmp_path / 'nope'} does not exist"):
        from_pretrained(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=f"no config.json in {tmp_path}"):
        from_pretrained(tmp_path)
    _model("late_fusion").save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="is a file, not a folder.*fsrf export"):
        from_pretrained(tmp_path / CONFIG_NAME)
    os.unlink(tmp_path / WEIGHTS_NAME)
    with pytest.raises(FileNotFoundError, match=f"no model.safetensors in {tmp_path}"):
        from_pretrained(tmp_path)
    assert read_pretrained_config(tmp_path)["model_kind"] == "late_fusion"  # the config alone still reads


# ------------------------------------------------------------------------------ Hugging Face Hub
# every test here runs offline: the Hub's client is replaced where it would reach the network
@pytest.fixture
def offline(monkeypatch):
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # the env is read at import


def _forbidden(*a, **k):
    raise AssertionError("must not be called")


def _hub_cache(cache, repo_id, folder, commit="a" * 40):
    """``folder`` as the Hugging Face cache holds a repo downloaded at ``commit`` (its ``main``)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return repo / "snapshots" / commit


def test_push_to_hub_uploads_a_folder_that_loads(offline, tmp_path, monkeypatch):
    import huggingface_hub

    calls = {}

    def create_repo(self, repo_id, **kwargs):
        calls["create_repo"] = (repo_id, kwargs)
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(self, *, repo_id, folder_path, **kwargs):
        calls["upload_folder"] = (repo_id, kwargs)
        shutil.copytree(folder_path, tmp_path / "uploaded")
        return f"https://huggingface.co/{repo_id}/commit/{'c' * 40}"

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    model = _model("mult")
    url = model.push_to_hub("someone/fsrf-mult", private=True, commit_message="first")
    assert url == f"https://huggingface.co/someone/fsrf-mult/commit/{'c' * 40}"
    assert calls["create_repo"] == ("someone/fsrf-mult", {"private": True, "exist_ok": True})
    assert calls["upload_folder"][0] == "someone/fsrf-mult" and calls["upload_folder"][1]["commit_message"] == "first"

    up = tmp_path / "uploaded"
    assert sorted(os.listdir(up)) == [CARD_NAME, CONFIG_NAME, WEIGHTS_NAME]
    card = huggingface_hub.ModelCard.load(up / CARD_NAME)
    assert card.data.library_name == "fsrf" and card.data.license == "mit" and "fsrf" in card.data.tags
    assert "# MulT" in card.text and "from_pretrained(" in card.text
    loaded = MulT.from_pretrained(up)
    _same_state(model, loaded)
    inputs, masks = _batch()
    with torch.no_grad():
        assert torch.equal(loaded(inputs, masks), model(inputs, masks))
    with pytest.raises(TypeError, match="config= is not accepted"):  # config.json is the model's own
        model.push_to_hub("someone/fsrf-mult", config={"d_model": 3})


def test_a_repo_id_loads_from_the_hub_cache_offline(offline, tmp_path):
    model = _model("late_fusion")
    model.save_pretrained(tmp_path / "m")
    cache = tmp_path / "cache"
    _hub_cache(cache, "someone/lf", tmp_path / "m")
    for loaded in (LateFusion.from_pretrained("someone/lf", cache_dir=cache),
                   from_pretrained("someone/lf", cache_dir=cache, revision="main", local_files_only=True)):
        assert type(loaded) is LateFusion and not loaded.training
        _same_state(model, loaded)
    assert read_pretrained_config("someone/lf", cache_dir=cache)["model_kind"] == "late_fusion"
    with pytest.raises(ValueError, match=r"someone/lf holds a 'late_fusion' model \(LateFusion\); "
                                         r"FSRFModel.from_pretrained loads 'fsrf' models only"):
        FSRFModel.from_pretrained("someone/lf", cache_dir=cache)


def test_hub_weights_come_from_the_commit_of_the_checked_config(offline, tmp_path, monkeypatch):
    import huggingface_hub

    _model("fsrf").save_pretrained(tmp_path / "m")
    commit = "b" * 40
    snapshot = _hub_cache(tmp_path / "cache", "someone/fsrf", tmp_path / "m", commit=commit)
    calls = []

    def download(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs.get("revision"), kwargs.get("token")))
        return str(snapshot / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", download)
    assert type(FSRFModel.from_pretrained("someone/fsrf", revision="v1", token="hf_x")) is FSRFModel
    assert calls == [("someone/fsrf", CONFIG_NAME, "v1", "hf_x"), ("someone/fsrf", WEIGHTS_NAME, commit, "hf_x")]

    calls.clear()  # a repo of another kind, or of another library: its weights are never downloaded
    with pytest.raises(ValueError, match="holds a 'fsrf' model"):
        MulT.from_pretrained("someone/fsrf")
    (snapshot / CONFIG_NAME).write_text(json.dumps({"model_type": "bert", "hidden_size": 768}))
    with pytest.raises(ValueError, match=r"has no 'format' field \(not written by fsrf\)"):
        from_pretrained("someone/fsrf")
    assert [c[1] for c in calls] == [CONFIG_NAME, CONFIG_NAME]


def test_a_repo_that_cannot_be_had_is_one_clear_error(offline, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"'someone/nothing' is no folder here, and config.json of the Hub "
                                                r"model repo 'someone/nothing' cannot be had: ") as err:
        from_pretrained("someone/nothing", cache_dir=tmp_path / "cache")
    assert "\n" not in str(err.value)


def test_paths_and_existing_folders_are_never_repo_ids(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _forbidden)
    monkeypatch.chdir(tmp_path)
    _model("late_fusion").save_pretrained(tmp_path / "models" / "lf")
    assert type(from_pretrained("models/lf")) is LateFusion  # exists here: a folder
    for name in ("nope", Path("someone/nope"), "./someone/nope", "a/b/c"):  # no namespace, a Path, not a repo id
        with pytest.raises(FileNotFoundError, match=f"pretrained folder {Path(name)} does not exist"):
            from_pretrained(name)
    with pytest.raises(TypeError, match="unexpected keyword argument.*revison.*the Hub options are revision"):
        from_pretrained("models/lf", revison="main")


def test_the_mixin_hooks_are_the_checked_path(tmp_path, monkeypatch):
    model = _model("late_fusion")
    model._save_pretrained(tmp_path)  # huggingface_hub's hook writes fsrf's folder
    assert read_pretrained_config(tmp_path)["model_kind"] == "late_fusion"
    # no pickle fallback (PyTorchModelHubMixin's own _from_pretrained reads pytorch_model.bin)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    os.unlink(tmp_path / WEIGHTS_NAME)
    monkeypatch.setattr(torch, "load", _forbidden)
    with pytest.raises(FileNotFoundError, match=f"no model.safetensors in {tmp_path}"):
        LateFusion._from_pretrained(model_id=str(tmp_path), revision=None, cache_dir=None, force_download=False,
                                    local_files_only=False, token=None)


# ------------------------------------------------------------------------------------ fsrf export
TINY_DIMS = {"text": 16, "audio": 6, "vision": 5}
TINY_LENS = {"text": 6, "audio": 6, "vision": 6}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from fsrf.data import load_mmsa, make_synthetic
    from fsrf.training import TrainSettings, fit

    root = tmp_path_factory.mktemp("export")
    make_synthetic("mosei", root / "tiny.pkl", n_train=24, n_valid=8, n_test=8, seed=3, dims=TINY_DIMS,
                   seq_lens=TINY_LENS)
    data = load_mmsa(root / "tiny.pkl")
    settings = TrainSettings(epochs=1, batch_size=8, progress=False)
    fit(data, root / "fsrf", config=FSRFConfig(d_model=16, num_heads=2), settings=settings, seed=7,
        dataset="mosei", log=None)
    fit(data, root / "lf", model=ModelSpec("LF", kind="late_fusion", kwargs={"d_model": 8}), settings=settings,
        seed=7, dataset="mosei", log=None)
    return root, data


@pytest.mark.parametrize("run, cls", [("fsrf", FSRFModel), ("lf", LateFusion)])
def test_export_writes_a_folder_with_equal_predictions(run, cls, tiny_run, tmp_path, capsys, umask):
    from fsrf.training import load_model, predict_split

    root, data = tiny_run
    out = tmp_path / "exported"
    assert cli.main(["export", "--checkpoint", str(root / run / "best.pt"), "--out", str(out)]) == 0
    assert f"wrote {out / WEIGHTS_NAME} and {out / CONFIG_NAME}" in capsys.readouterr().out
    for name in (CONFIG_NAME, WEIGHTS_NAME):
        assert os.stat(out / name).st_mode & 0o777 == 0o666 & ~umask, name
    model, _ = load_model(root / run / "best.pt")
    loaded = cls.from_pretrained(out)
    _same_state(model, loaded)
    test = data.split("test")
    assert (predict_split(loaded, test) == predict_split(model, test)).all()
    info = _config(out)["metadata"]
    assert info["dataset"] == "mosei" and info["seed"] == 7 and info["checkpoint"] == str(root / run / "best.pt")


def test_export_takes_a_run_folder_and_reports_errors_in_one_line(tiny_run, tmp_path, capsys):
    root, _ = tiny_run
    assert cli.main(["export", "--checkpoint", str(root / "fsrf"), "--out", str(tmp_path / "a")]) == 0
    assert type(from_pretrained(tmp_path / "a")) is FSRFModel
    capsys.readouterr()
    assert cli.main(["export", "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fsrf export: error:") and "missing.pt" in err and "\n" not in err
    seeds = tmp_path / "seeds"
    for s in (1, 2):
        (seeds / f"seed_{s}").mkdir(parents=True)
        shutil.copy(root / "fsrf" / "best.pt", seeds / f"seed_{s}" / "best.pt")
    assert cli.main(["export", "--checkpoint", str(seeds), "--out", str(tmp_path / "c")]) == 2
    assert "holds runs of 2 seeds (1, 2); export one of them" in capsys.readouterr().err
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
