"""Tests of fsrf.data: safe loading, schema validation, checksums, datasets, synthetic files."""

import hashlib
import io
import os
import pickle
import sys
import warnings

import numpy as np
import pytest
import torch

from fsrf import data
from fsrf.data import mmsa as mmsa_mod

SMALL_DIMS = {"text": 8, "audio": 3, "vision": 4}


def _split(n, *, L=(6, 7, 5), D=(8, 3, 4), aligned=False, rng=None, sims=False):
    """A hand-built MMSA split (the schema of §1.3)."""
    rng = rng or np.random.default_rng(0)
    lt = rng.integers(3, L[0] + 1, n)
    tb = np.zeros((n, 3, L[0]), dtype=np.int64)
    for i, k in enumerate(lt):
        tb[i, 0, :k] = np.r_[101, rng.integers(1000, 2000, k - 2), 102]
        tb[i, 1, :k] = 1
    text = rng.standard_normal((n, L[0], D[0])) * (tb[:, 1, :, None] > 0)
    la = rng.integers(1, L[1] + 1, n)
    lv = rng.integers(1, L[2] + 1, n)
    audio = (rng.standard_normal((n, L[1], D[1])) + 2) * (np.arange(L[1])[None, :, None] < la[:, None, None])
    vision = (rng.standard_normal((n, L[2], D[2])) + 2) * (np.arange(L[2])[None, :, None] < lv[:, None, None])
    d = {"raw_text": np.array([f"utt {i}" for i in range(n)], dtype=object),
         "id": np.array([f"vid$_${i}" for i in range(n)], dtype=object),
         "text": text, "text_bert": tb.astype(np.float64), "audio": audio, "vision": vision,
         "regression_labels": rng.uniform(-3, 3, n), "annotations": np.array(["Neutral"] * n, dtype=object),
         "classification_labels": np.ones(n)}
    if not aligned:
        d["audio_lengths"] = la
        d["vision_lengths"] = lv
    if sims:
        for k in "TAV":
            d[f"regression_labels_{k}"] = rng.uniform(-1, 1, n)
    return d


def _file(tmp_path, name="feat.pkl", *, sims=False, aligned=False, over=None):
    rng = np.random.default_rng(1)
    obj = {s: _split(n, rng=rng, sims=sims, aligned=aligned) for s, n in (("train", 5), ("valid", 3), ("test", 4))}
    for (split, key), v in (over or {}).items():
        if v is None:
            del obj[split][key]
        else:
            obj[split][key] = v
    path = tmp_path / name
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=4)
    return path, obj


# ------------------------------------------------------------------------------ unsafe pickles
class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"echo pwned > {self.marker}",))


class _EvilWrite:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


@pytest.mark.parametrize("cls,refused", [(_Evil, "system"), (_EvilWrite, "builtins.exec")])
def test_malicious_pickle_runs_nothing(tmp_path, cls, refused):
    marker = tmp_path / "marker.txt"
    path, obj = _file(tmp_path)
    obj["train"]["audio"] = cls(marker)  # the payload sits deep inside a split
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)
    with pytest.raises(data.UnsafePickleError, match=refused) as ei:
        data.load_mmsa(path)
    assert str(path) in str(ei.value) and "nothing was executed" in str(ei.value)
    assert isinstance(ei.value, ValueError)
    assert not marker.exists()
    # Sanity check of the test itself: the plain unpickler WOULD run the payload.
    if cls is _EvilWrite:
        pickle.loads(pickle.dumps(cls(marker)))
        assert marker.exists()


def test_protocol0_global_refused(tmp_path):
    path = tmp_path / "p0.pkl"
    path.write_bytes(b"cos\nsystem\n(S'echo hi'\ntR.")
    with pytest.raises(data.UnsafePickleError, match=r"'os\.system'"):
        data.safe_load(path)


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_safe_load_round_trips_numpy(tmp_path, protocol):
    obj = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "s": np.array(["x", "yz"]),
           "o": np.array(["u", "v"], dtype=object), "f": np.asfortranarray(np.ones((2, 3))), "n": np.float64(2.5),
           "i": [1, 2.0, "t", (3,), {4}, b"b", None, True], "slice": np.zeros((4, 4))[:, ::2]}
    p = tmp_path / "ok.pkl"
    p.write_bytes(pickle.dumps(obj, protocol=protocol))
    got = data.safe_load(p)
    for k in ("a", "s", "o", "f", "slice"):
        np.testing.assert_array_equal(got[k], obj[k])
        assert got[k].dtype == obj[k].dtype
    assert got["n"] == 2.5 and got["i"] == obj["i"]


def test_numpy1_module_names_load(tmp_path):
    # Files written with numpy 1.x reference numpy.core.multiarray; they must load on numpy 2 as well.
    raw = pickle.dumps({"a": np.arange(3.0)}, protocol=2)
    if b"numpy._core.multiarray" in raw:
        raw = raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in raw
    p = tmp_path / "np1.pkl"
    p.write_bytes(raw)
    np.testing.assert_array_equal(data.safe_load(p)["a"], np.arange(3.0))


def test_not_a_pickle(tmp_path):
    p = tmp_path / "junk.pkl"
    p.write_bytes(b"this is not a pickle")
    with pytest.raises(ValueError, match="could not read .*junk.pkl"):
        data.safe_load(p)
    with pytest.raises(FileNotFoundError, match="not found"):
        data.load_mmsa(tmp_path / "absent.pkl")


def test_torch_tensors_are_refused(tmp_path):
    p = tmp_path / "pt.pkl"
    buf = io.BytesIO()
    pickle.dump({"train": {"audio": torch.zeros(2)}}, buf)
    p.write_bytes(buf.getvalue())
    with pytest.raises(data.UnsafePickleError, match="torch"):
        data.safe_load(p)


# ------------------------------------------------------------------------------ loading
def test_load_hand_built_file(tmp_path):
    path, obj = _file(tmp_path, sims=True)
    ds = data.load_mmsa(path)
    assert ds.dims == {"text": 8, "audio": 3, "vision": 4}
    assert ds.seq_lens == {"text": 6, "audio": 7, "vision": 5}
    assert not ds.aligned and ds.dataset_kind == "sims" and ds.text_source == "features"
    for s in ("train", "valid", "test"):
        sp, raw = ds.split(s), obj[s]
        assert len(sp) == len(raw["regression_labels"])
        np.testing.assert_allclose(sp.labels, raw["regression_labels"].astype(np.float32))
        np.testing.assert_allclose(sp.features["audio"], raw["audio"].astype(np.float32))
        assert all(sp.features[m].dtype == np.float32 for m in sp.modalities)
        # Masks: text from the BERT attention mask, audio/vision from the lengths.
        np.testing.assert_array_equal(sp.masks["text"], raw["text_bert"][:, 1, :] > 0)
        np.testing.assert_array_equal(sp.masks["audio"].sum(1), raw["audio_lengths"])
        np.testing.assert_array_equal(sp.masks["vision"][:, 0], raw["vision_lengths"] > 0)
        for k in "TAV":
            np.testing.assert_allclose(sp.unimodal_labels[k], raw[f"regression_labels_{k}"].astype(np.float32))
        assert sp.ids == list(raw["id"]) and sp.raw_text[0] == "utt 0"
        assert sp.text_bert.dtype == np.int64
    with pytest.raises(ValueError, match="split must be one of"):
        ds.split("dev")


def test_minus_inf_in_audio_set_to_zero_and_other_nonfinite(tmp_path):
    rng = np.random.default_rng(3)
    tr = _split(5, rng=rng)
    tr["audio"][0, 0, 1] = -np.inf
    tr["audio"][2, 3, 0] = -np.inf
    path, _ = _file(tmp_path, over={("train", "audio"): tr["audio"], ("train", "audio_lengths"): tr["audio_lengths"]})
    ds = data.load_mmsa(path)
    a = ds.split("train").features["audio"]
    assert a[0, 0, 1] == 0 and a[2, 3, 0] == 0 and np.isfinite(a).all()
    keep = np.isfinite(tr["audio"])
    np.testing.assert_allclose(a[keep], tr["audio"][keep].astype(np.float32))
    # NaN in vision is an error that names the split and key, unless nonfinite="zero".
    v = _split(3, rng=rng)["vision"]
    v[1, 0, 0] = np.nan
    path, _ = _file(tmp_path, "nan.pkl", over={("valid", "vision"): v})
    with pytest.raises(ValueError, match=r"split 'valid', key 'vision': 1 non-finite value"):
        data.load_mmsa(path)
    assert data.load_mmsa(path, nonfinite="zero").split("valid").features["vision"][1, 0, 0] == 0


def test_unknown_keys_ignored(tmp_path):
    path, obj = _file(tmp_path, over={("train", "mystery"): np.zeros(3), ("test", "classification_labels_T"): "x"})
    obj["config"] = {"anything": [1, 2]}
    obj["extra_split"] = {"foo": 1}
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)
    ds = data.load_mmsa(path)
    assert set(ds.splits) == {"train", "valid", "test"}


def test_aligned_file_masks_from_nonzero_frames(tmp_path):
    path, obj = _file(tmp_path, aligned=True)
    ds = data.load_mmsa(path)
    assert ds.aligned
    for s in ("train", "valid", "test"):
        raw = obj[s]
        np.testing.assert_array_equal(ds.split(s).masks["audio"], np.abs(raw["audio"]).sum(-1) > 0)
        assert "audio" not in ds.split(s).lengths


def test_text_mask_without_text_bert(tmp_path):
    path, obj = _file(tmp_path, over={(s, "text_bert"): None for s in ("train", "valid", "test")})
    ds = data.load_mmsa(path)
    raw = obj["train"]
    np.testing.assert_array_equal(ds.split("train").masks["text"], np.abs(raw["text"]).sum(-1) > 0)
    assert ds.split("train").text_bert is None
    with pytest.raises(ValueError, match="split 'train', key 'text_bert': missing, but text='bert_ids'"):
        data.load_mmsa(path, text="bert_ids")


def test_bert_ids_mode(tmp_path):
    path, obj = _file(tmp_path)
    ds = data.load_mmsa(path, text="bert_ids")
    sp = ds.split("test")
    assert ds.text_source == "bert_ids" and ds.dims["text"] == 768
    assert sp.features["text"].dtype == np.int64 and sp.features["text"].shape == (4, 3, 6)
    np.testing.assert_array_equal(sp.features["text"], obj["test"]["text_bert"].astype(np.int64))
    item = sp[1]
    assert item["text"].shape == (3, 6) and item["masks"]["text"].shape == (6,)
    b = sp.batch([0, 1])
    assert b["inputs"]["text"].shape == (2, 3, 6) and b["inputs"]["text"].dtype == torch.int64
    # "auto" picks features when present.
    assert data.load_mmsa(path, text="auto").text_source == "features"
    with pytest.raises(ValueError, match="text must be one of"):
        data.load_mmsa(path, text="glove")


@pytest.mark.parametrize("override,match", [
    ({("valid", "audio"): None}, r"split 'valid', key 'audio': missing \(expected an array of shape \(N, L, D\)"),
    ({("train", "audio"): np.zeros((5, 7))}, r"split 'train', key 'audio': expected shape \(N, L, D\) with N=5; "
                                              r"found \(5, 7\)"),
    ({("test", "vision"): np.zeros((3, 5, 4))}, r"split 'test', key 'vision': expected shape \(N, L, D\) with N=4; "
                                                r"found \(3, 5, 4\)"),
    ({("train", "text_bert"): np.zeros((5, 6, 768))}, r"key 'text_bert': expected shape \(N, 3, L\).*found "
                                                      r"\(5, 6, 768\).*belong under the key 'text'"),
    ({("train", "text"): np.zeros((5, 9, 8))}, r"key 'text': has 9 tokens per sample but 'text_bert' has 6"),
    ({("valid", "vision"): np.ones((3, 5, 9))}, r"split 'valid', key 'vision': feature dimension 9 differs from "
                                                r"the train split's 4"),
    ({("train", "regression_labels"): np.array([0.1, np.nan, 0, 0, 0])}, r"key 'regression_labels': 1 non-finite"),
    ({("train", "regression_labels"): np.zeros((5, 2))}, r"key 'regression_labels': expected shape \(N,\) or"),
    ({("test", "audio_lengths"): np.array([1, -2, 3, 4])}, r"split 'test', key 'audio_lengths': lengths must be"),
    ({("train", "audio"): np.array([["a"]] * 5, dtype=object)}, r"key 'audio': expected a numeric array"),
])
def test_validation_messages_name_file_split_key_shape(tmp_path, override, match):
    path, _ = _file(tmp_path, over=override)
    with pytest.raises(ValueError, match=match) as ei:
        data.load_mmsa(path)
    assert str(path) in str(ei.value) and "\n" not in str(ei.value)


def test_top_level_errors(tmp_path):
    p = tmp_path / "list.pkl"
    p.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match="expected a dict with keys 'train', 'valid', 'test'; found list"):
        data.load_mmsa(p)
    p.write_bytes(pickle.dumps({"train": {}, "test": {}}))
    with pytest.raises(ValueError, match=r"missing split\(s\) \['valid'\]"):
        data.load_mmsa(p)


def test_lengths_clipped_to_padded_length(tmp_path):
    path, obj = _file(tmp_path, over={("train", "vision_lengths"): np.array([99, 1, 2, 3, 4])})
    with pytest.warns(mmsa_mod.MMSALengthWarning, match=r"1 stored length\(s\)"):
        sp = data.load_mmsa(path).split("train")
    assert sp.lengths["vision"][0] == 5 and sp.masks["vision"][0].all()


# ------------------------------------------------------------------------------ checksums
def test_sha_mismatch_warns_for_published_name(tmp_path):
    path, _ = _file(tmp_path, "aligned_50.pkl")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.warns(data.MMSAChecksumWarning, match=f"SHA-256 {digest} matches none.*MOSEI/Processed/aligned_50.pkl"):
        ds = data.load_mmsa(path)
    assert ds.sha256 == digest and ds.sha256_status == "mismatch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = data.load_mmsa(path, check_sha256=False)
    assert ds.sha256 is None and ds.sha256_status == "not-checked"


def test_sha_match_and_unknown_name(tmp_path, monkeypatch):
    path, _ = _file(tmp_path, "unaligned_39.pkl")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setitem(mmsa_mod.KNOWN_SHA256, "SIMS/Processed/unaligned_39.pkl", digest)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = data.load_mmsa(path)
        assert ds.sha256_status == "match:SIMS/Processed/unaligned_39.pkl"
        other, _ = _file(tmp_path, "my_features.pkl")
        ds = data.load_mmsa(other)  # not a published name: not hashed, no warning
    assert ds.sha256_status == "unknown-name" and ds.sha256 is None
    assert data.sha256_file(path, progress=False) == digest


def test_published_checksums_table():
    assert set(data.KNOWN_SHA256) == {"MOSI/Processed/unaligned_50.pkl", "MOSI/Processed/aligned_50.pkl",
                                      "MOSEI/Processed/unaligned_50.pkl", "MOSEI/Processed/aligned_50.pkl",
                                      "SIMS/Processed/unaligned_39.pkl"}
    assert data.KNOWN_SHA256["SIMS/Processed/unaligned_39.pkl"].startswith("c9e20c13ec04")
    assert all(len(v) == 64 for v in data.KNOWN_SHA256.values())


# ------------------------------------------------------------------------------ torch side
def test_dataset_items_dataloader_and_batch(tmp_path):
    path, obj = _file(tmp_path, sims=True)
    sp = data.load_mmsa(path).split("train")
    item = sp[2]
    assert item["text"].shape == (6, 8) and item["audio"].shape == (7, 3) and item["vision"].shape == (5, 4)
    assert item["masks"]["audio"].dtype == torch.bool and item["index"] == 2
    assert item["label"] == pytest.approx(float(np.float32(obj["train"]["regression_labels"][2])))
    assert set(item["unimodal_labels"]) == {"T", "A", "V"}
    loader = torch.utils.data.DataLoader(sp, batch_size=4, shuffle=False, collate_fn=data.collate_mmsa)
    b = next(iter(loader))
    # the file has MMSA's classification_labels (all 1 here): they come as class indices
    assert set(b) == {"inputs", "masks", "labels", "index", "unimodal_labels", "class_labels"}
    assert b["class_labels"].dtype == torch.int64 and b["class_labels"].tolist() == [1, 1, 1, 1]
    assert b["inputs"]["audio"].shape == (4, 7, 3) and b["inputs"]["audio"].dtype == torch.float32
    assert b["masks"]["vision"].shape == (4, 5) and b["masks"]["vision"].dtype == torch.bool
    assert b["labels"].shape == (4,) and b["labels"].dtype == torch.float32
    direct = sp.batch(torch.arange(4))
    for m in sp.modalities:
        torch.testing.assert_close(direct["inputs"][m], b["inputs"][m])
        assert torch.equal(direct["masks"][m], b["masks"][m])
    torch.testing.assert_close(direct["labels"], b["labels"])
    torch.testing.assert_close(direct["unimodal_labels"]["A"], b["unimodal_labels"]["A"])
    assert torch.equal(direct["class_labels"], b["class_labels"])
    with pytest.raises(IndexError):
        sp[5]
    with pytest.raises(IndexError):
        sp.batch([0, 9])


# ------------------------------------------------------------------------------ describe
def test_describe_prints_and_returns(tmp_path, capsys):
    path, obj = _file(tmp_path)
    info = data.describe(path)
    out = capsys.readouterr().out
    assert "train: 5 samples" in out and "valid: 3 samples" in out and "test: 4 samples" in out
    assert "audio" in out and "unaligned" in out
    assert info["dims"] == {"text": 8, "audio": 3, "vision": 4}
    assert info["seq_lens"] == {"text": 6, "audio": 7, "vision": 5}
    y = obj["test"]["regression_labels"].astype(np.float32)
    assert info["splits"]["test"]["n"] == 4
    assert info["splits"]["test"]["label"]["min"] == pytest.approx(float(y.min()))
    assert info["splits"]["test"]["label"]["max"] == pytest.approx(float(y.max()))
    assert f"[{y.min():.3f}, {y.max():.3f}]" in out
    la = obj["valid"]["audio_lengths"]
    assert info["splits"]["valid"]["frames"]["audio"] == pytest.approx(
        {"min": la.min(), "mean": la.mean(), "max": la.max()})
    assert data.describe(path, quiet=True) == info and capsys.readouterr().out == ""


# ------------------------------------------------------------------------------ synthetic
@pytest.mark.parametrize("preset,aligned,shapes", [
    ("mosi", True, {"text": (50, 768), "audio": (50, 5), "vision": (50, 20)}),
    ("mosi", False, {"text": (50, 768), "audio": (375, 5), "vision": (500, 20)}),
    ("mosei", True, {"text": (50, 768), "audio": (50, 74), "vision": (50, 35)}),
    ("mosei", False, {"text": (50, 768), "audio": (500, 74), "vision": (500, 35)}),
    ("sims", False, {"text": (39, 768), "audio": (400, 33), "vision": (55, 709)}),
])
def test_synthetic_schema_real_dims(tmp_path, preset, aligned, shapes):
    path = data.make_synthetic(preset, tmp_path / "s.pkl", n_train=3, n_valid=2, n_test=2, seed=1, aligned=aligned)
    raw = data.safe_load(path)
    assert set(raw) == {"train", "valid", "test", "config"}
    tr = raw["train"]
    for m, (L, D) in shapes.items():
        assert tr[m].shape == (3, L, D) and tr[m].dtype == np.float32
    assert tr["text_bert"].shape == (3, 3, shapes["text"][0])
    assert ("audio_lengths" in tr) == (not aligned) and ("vision_lengths" in tr) == (not aligned)
    assert all("$_$" in i for i in tr["id"])
    assert ("regression_labels_T" in tr) == (preset == "sims")
    ds = data.load_mmsa(path)
    assert ds.dataset_kind == preset and ds.aligned == aligned
    assert ds.dims == {m: D for m, (L, D) in shapes.items()}
    assert ds.seq_lens == {m: L for m, (L, D) in shapes.items()}


def test_synthetic_content(tmp_path):
    path = data.make_synthetic("mosei", tmp_path / "u.pkl", n_train=300, n_valid=20, n_test=20, seed=0,
                               aligned=False, dims=SMALL_DIMS, seq_lens={"text": 20, "audio": 40, "vision": 30})
    raw = data.safe_load(path)["train"]
    y = raw["regression_labels"]
    assert y.min() >= -3 and y.max() <= 3 and y.std() > 0.8
    np.testing.assert_allclose(y * 3, np.round(y * 3), atol=1e-4)  # MOSEI: mean of 3 annotators
    assert (y == 0).any()                                          # Non0 metrics have something to drop
    assert np.isneginf(raw["audio"]).sum() >= 1                    # COVAREP-style -inf present ...
    ds = data.load_mmsa(path)
    sp = ds.split("train")
    assert np.isfinite(sp.features["audio"]).all()                 # ... and zeroed by the loader
    tb = raw["text_bert"]
    ln = tb[:, 1].sum(1).astype(int)
    assert (tb[:, 0, 0] == 101).all() and (tb[np.arange(300), 0, ln - 1] == 102).all()
    assert (tb[:, 2] == 0).all() and ((tb[:, 1] == 0) == (tb[:, 0] == 0)).all()
    for m in sp.modalities:
        x, k = sp.features[m], sp.masks[m]
        assert not x[~k].any()                                     # zero padding ...
        assert (np.abs(x[k]).sum(-1) > 0).all()                    # ... and only padding is zero
        assert 0 < k.sum(1).min() and k.sum(1).max() <= x.shape[1] and k.sum(1).std() > 0  # variable lengths
    np.testing.assert_array_equal(sp.lengths["audio"], raw["audio_lengths"])


def test_synthetic_sims_labels(tmp_path):
    path = data.make_synthetic("sims", tmp_path / "s.pkl", n_train=200, n_valid=5, n_test=5, dims=SMALL_DIMS,
                               seq_lens={"text": 10, "audio": 20, "vision": 12})
    sp = data.load_mmsa(path).split("train")
    grid = np.round(np.arange(-1.0, 1.01, 0.2), 1)
    for y in [sp.labels] + [sp.unimodal_labels[k] for k in "TAV"]:
        assert np.abs(y[:, None] - grid[None, :]).min(1).max() < 1e-6
        assert len(np.unique(np.round(y, 1))) >= 5
    # Unimodal labels share the multimodal label's sentiment but are not copies of it.
    assert np.corrcoef(sp.labels, sp.unimodal_labels["T"])[0, 1] > 0.4
    assert not np.array_equal(sp.labels, sp.unimodal_labels["T"])


def test_synthetic_deterministic_and_atomic(tmp_path):
    kw = dict(n_train=10, n_valid=3, n_test=3, seed=4, dims=SMALL_DIMS)
    a = data.make_synthetic("mosi", tmp_path / "a.pkl", **kw)
    b = data.make_synthetic("mosi", tmp_path / "b.pkl", **kw)
    c = data.make_synthetic("mosi", tmp_path / "c.pkl", **{**kw, "seed": 5})
    assert a.read_bytes() == b.read_bytes() and a.read_bytes() != c.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pkl", "b.pkl", "c.pkl"]  # no temp files left
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(a).st_mode & 0o777 == 0o666 & ~umask  # like a plain open(), not mkstemp's 0600
    with pytest.raises(FileNotFoundError, match="output folder does not exist"):
        data.make_synthetic("mosi", tmp_path / "nope" / "x.pkl", **kw)


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"preset": "iemocap"}, ValueError, "preset must be one of"),
    ({"preset": "sims", "aligned": True}, ValueError, "no aligned variant"),
    ({"n_train": 0}, ValueError, "n_train must be >= 1"),
    ({"n_test": 2.5}, TypeError, "n_test must be an int"),
    ({"dims": {"depth": 3}}, ValueError, "dims keys must be among"),
    ({"seq_lens": {"text": 2, "audio": 2, "vision": 2}}, ValueError, r"seq_lens\['text'\] must be >= 4"),
    ({"seq_lens": {"audio": 10}}, ValueError, "aligned files have one length"),
    ({"seed": -1}, ValueError, "seed must be a non-negative int"),
])
def test_synthetic_bad_arguments(tmp_path, kwargs, exc, match):
    kw = {"preset": "mosi", "n_train": 2, "n_valid": 2, "n_test": 2, "dims": SMALL_DIMS, **kwargs}
    with pytest.raises(exc, match=match):
        data.make_synthetic(out_path=tmp_path / "x.pkl", **kw)


def _pooled(sp, mods):
    cols = []
    for m in mods:
        x, k = sp.features[m], sp.masks[m]
        cols.append((x * k[..., None]).sum(1) / np.maximum(k.sum(1, keepdims=True), 1))
    return np.concatenate(cols, 1).astype(np.float64)


def _ridge_mae(tr, te, mods, lam=30.0):
    """Closed-form ridge regression on masked-mean-pooled features; test MAE."""
    X, Xt = _pooled(tr, mods), _pooled(te, mods)
    mu, sd = X.mean(0), X.std(0) + 1e-8
    Z, Zt = (X - mu) / sd, (Xt - mu) / sd
    y = tr.labels.astype(np.float64)
    w = np.linalg.solve(Z.T @ Z + lam * np.eye(Z.shape[1]), Z.T @ (y - y.mean()))
    return float(np.mean(np.abs(Zt @ w + y.mean() - te.labels)))


def test_losing_a_modality_costs_accuracy(tmp_path):
    """The generator's labels depend on a shared factor and on factors unique to each modality."""
    path = data.make_synthetic("mosei", tmp_path / "r.pkl", n_train=1500, n_valid=2, n_test=1500, seed=0,
                               dims={"text": 48, "audio": 12, "vision": 10},
                               seq_lens={"text": 16, "audio": 16, "vision": 16})
    ds = data.load_mmsa(path)
    tr, te = ds.split("train"), ds.split("test")
    full = _ridge_mae(tr, te, ("text", "audio", "vision"))
    label_sd = float(np.mean(np.abs(te.labels - tr.labels.mean())))
    assert full < 0.7 * label_sd  # the features predict the label well
    for drop in ("text", "audio", "vision"):
        rest = tuple(m for m in ("text", "audio", "vision") if m != drop)
        assert _ridge_mae(tr, te, rest) > full + 0.03, f"removing {drop} should cost accuracy"
    # Any single modality still carries the shared factor: better than predicting the mean.
    for m in ("text", "audio", "vision"):
        assert _ridge_mae(tr, te, (m,)) < 0.9 * label_sd
    # Dropping frames costs accuracy gradually.
    from fsrf import missing

    maes = []
    for r in (0.0, 0.6, 0.95):
        te_r = missing.corrupt_split(te, rate=r)
        maes.append(_ridge_mae(tr, te_r, ("text", "audio", "vision")))
    assert maes[0] < maes[1] < maes[2]


# ------------------------------------------------------------------------------ BERT encoder
def test_bert_encoder_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="BERT model folder not found"):
        data.BertTextEncoder(tmp_path / "no_such_model")


def test_bert_encoder_without_transformers(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` fail
    with pytest.raises(ImportError, match="optional package 'transformers'.*text='features'"):
        data.BertTextEncoder(tmp_path)


@pytest.mark.parametrize("bad", [np.array([0.5, 1, 2, 0, 1]), np.array([-1, 0, 1, 0, 1]), np.array([0, np.nan, 1, 0, 1]),
                                 np.array(["a", "b", "c", "d", "e"], dtype=object), np.array([0, 1, 2])])
def test_unusable_classification_labels_are_left_out_not_refused(tmp_path, bad):
    """MMSA deprecated the key: a damaged one must not stop a regression user from loading."""
    path, obj = _file(tmp_path, over={("train", "classification_labels"): bad})
    d = data.load_mmsa(path)
    assert d.split("train").class_labels is None
    assert d.split("valid").class_labels is not None  # the intact splits keep theirs
