"""Tests of fsrf.missing: dataset-level protocols (numpy) and the tensor-level corrupt()."""

import numpy as np
import pytest
import torch

from fsrf import missing

from _helpers import requires_cuda


def _arrays(n=64, seed=0, L=(12, 20, 16), D=(6, 4, 5), ids=False):
    """Random features with padding (zero beyond each sample's length) and matching masks."""
    rng = np.random.default_rng(seed)
    feats, masks = {}, {}
    for m, l, d in zip(("text", "audio", "vision"), L, D):
        ln = rng.integers(3, l + 1, n)
        k = np.arange(l)[None, :] < ln[:, None]
        if m == "text" and ids:
            x = np.zeros((n, 3, l), dtype=np.int64)
            x[:, 0, :] = rng.integers(1000, 30000, (n, l)) * k
            x[np.arange(n), 0, 0] = 101
            x[np.arange(n), 0, ln - 1] = 102
            x[:, 1, :] = k
        else:
            x = (rng.standard_normal((n, l, d)) + 3.0).astype(np.float32) * k[..., None]  # no exact zeros inside
        feats[m], masks[m] = x, k
    return feats, masks


def _copy(d):
    return {k: v.copy() for k, v in d.items()}


# ----------------------------------------------------------------------------- patterns
def test_patterns():
    assert missing.PATTERNS == ("l", "a", "v", "la", "lv", "av")
    assert missing.ALL_PATTERNS[-1] == "lav"
    assert missing.pattern_modalities("l") == ("text",)
    assert missing.pattern_modalities("av") == ("audio", "vision")
    assert missing.pattern_modalities("vl") == ("text", "vision")
    assert missing.pattern_modalities("lav") == ("text", "audio", "vision")
    for bad in ("", "x", "ll", "lavx", 3):
        with pytest.raises(ValueError, match="pattern"):
            missing.pattern_modalities(bad)


# ---------------------------------------------------------------------------- drop_frames
def test_drop_frames_rate_zero_and_one_do_not_mutate():
    f, k = _arrays()
    f0, k0 = _copy(f), _copy(k)
    g, km = missing.drop_frames(f, k, 0.0)
    for m in f:
        np.testing.assert_array_equal(g[m], f0[m])
        np.testing.assert_array_equal(km[m], k0[m])
        assert g[m] is not f[m] and km[m] is not k[m]
    g, km = missing.drop_frames(f, k, 1.0)
    for m in f:
        assert not km[m].any()
        assert not g[m].any()
        np.testing.assert_array_equal(f[m], f0[m])  # inputs untouched
        np.testing.assert_array_equal(k[m], k0[m])


def test_drop_frames_statistics_and_zeroing():
    f, k = _arrays(n=400)
    g, km = missing.drop_frames(f, k, 0.3, seed=5)
    for m in f:
        assert not (km[m] & ~k[m]).any()  # padding never becomes valid
        n_valid = int(k[m].sum())
        dropped = int((k[m] & ~km[m]).sum())
        # Binomial(n_valid, 0.3): mean 0.3 n, sd sqrt(0.21 n); allow 5 sd.
        assert abs(dropped - 0.3 * n_valid) < 5 * np.sqrt(0.21 * n_valid)
        np.testing.assert_array_equal(g[m][~km[m]], 0)  # dropped and padded frames are zero vectors
        np.testing.assert_array_equal(g[m][km[m]], f[m][km[m]])  # kept frames unchanged


def test_drop_frames_seeding_and_per_modality_independence():
    f, k = _arrays()
    _, a = missing.drop_frames(f, k, 0.5, seed=1111)
    _, b = missing.drop_frames(f, k, 0.5, seed=1111)
    _, c = missing.drop_frames(f, k, 0.5, seed=1112)
    for m in f:
        np.testing.assert_array_equal(a[m], b[m])
    assert any((a[m] != c[m]).any() for m in f)
    # Changing vision's rate leaves text/audio masks unchanged (separate generators per modality).
    _, d = missing.drop_frames(f, k, {"text": 0.5, "audio": 0.5, "vision": 0.9}, seed=1111)
    np.testing.assert_array_equal(a["text"], d["text"])
    np.testing.assert_array_equal(a["audio"], d["audio"])
    assert (a["vision"] != d["vision"]).any()
    # Same shapes for two modalities must not give the same mask (no shared seed).
    f2, k2 = _arrays(L=(16, 16, 16), D=(3, 3, 3))
    _, e = missing.drop_frames(f2, k2, 0.5)
    assert (e["audio"] != e["vision"]).any()


def test_drop_frames_per_sample_rates():
    f, k = _arrays(n=4)
    rate = np.array([0.0, 1.0, 0.0, 1.0])
    _, km = missing.drop_frames(f, k, rate)
    for m in f:
        np.testing.assert_array_equal(km[m][[0, 2]], k[m][[0, 2]])
        assert not km[m][[1, 3]].any()


def test_drop_frames_bert_ids_unk_and_special_tokens():
    f, k = _arrays(ids=True)
    f0 = _copy(f)
    g, km = missing.drop_frames(f, k, 1.0)
    ids, new = f0["text"], g["text"]
    attn = ids[:, 1, :] > 0
    ln = attn.sum(1)
    n = ids.shape[0]
    np.testing.assert_array_equal(new[:, 1:, :], ids[:, 1:, :])       # attention mask and segments unchanged
    np.testing.assert_array_equal(new[np.arange(n), 0, 0], 101)       # [CLS] kept
    np.testing.assert_array_equal(new[np.arange(n), 0, ln - 1], 102)  # [SEP] kept
    inner = attn.copy()
    inner[:, 0] = False
    inner[np.arange(n), ln - 1] = False
    assert (new[:, 0, :][inner] == 100).all()                         # everything else is [UNK]
    assert (new[:, 0, :][~attn] == 0).all()                           # padding stays [PAD]
    np.testing.assert_array_equal(km["text"], attn & ~inner)          # only the special tokens stay observed
    np.testing.assert_array_equal(f["text"], f0["text"])


def test_drop_frames_text_features_have_no_protected_tokens():
    f, k = _arrays()
    g, km = missing.drop_frames(f, k, 1.0)
    assert not g["text"].any() and not km["text"].any()


@pytest.mark.parametrize("rate,match", [(1.5, r"rate must be in \[0, 1\]"), (-0.1, "rate must be in"),
                                        (float("nan"), "rate must be in"), ("0.5", "rate must be a number"),
                                        ({"text": 0.1}, "no entry for modality 'audio'"),
                                        (np.zeros(3), r"shape \(64,\)"), (np.full(64, 2.0), r"lie in \[0, 1\]")])
def test_drop_frames_bad_rates(rate, match):
    f, k = _arrays()
    with pytest.raises(ValueError, match=match):
        missing.drop_frames(f, k, rate)


def test_bad_arrays():
    f, k = _arrays()
    bad = dict(k)
    bad["audio"] = k["audio"].astype(np.int8)
    with pytest.raises(ValueError, match=r"masks\['audio'\] must be a bool array"):
        missing.drop_frames(f, bad, 0.1)
    with pytest.raises(ValueError, match="same modalities"):
        missing.drop_frames(f, {"text": k["text"]}, 0.1)
    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        missing.drop_frames(f, k, 0.1, seed=-1)


# ------------------------------------------------------------------------ remove_modalities
@pytest.mark.parametrize("pattern", missing.ALL_PATTERNS)
def test_remove_modalities(pattern):
    f, k = _arrays(ids=True)
    f0 = _copy(f)
    g, km = missing.remove_modalities(f, k, pattern)
    keep = missing.pattern_modalities(pattern)
    for m in f:
        if m in keep:
            np.testing.assert_array_equal(g[m], f0[m])
            np.testing.assert_array_equal(km[m], k[m])
        else:
            assert not km[m].any()
            if m == "text":  # ids: [CLS] [UNK] ... [SEP] [PAD] ...
                ids = g[m][:, 0, :]
                attn = f0[m][:, 1, :] > 0
                assert ((ids == 100) | (ids == 101) | (ids == 102))[attn].all()
                np.testing.assert_array_equal(g[m][:, 1:], f0[m][:, 1:])
            else:
                assert not g[m].any()
        np.testing.assert_array_equal(f[m], f0[m])


def test_remove_modalities_needs_named_modalities():
    f, k = _arrays()
    with pytest.raises(ValueError, match="pattern 'la' needs modality 'text'"):
        missing.remove_modalities({"audio": f["audio"]}, {"audio": k["audio"]}, "la")


# --------------------------------------------------------------------------------- LNLN
def test_lnln_rates_and_epochs():
    f, k = _arrays(n=101)
    g, km, rates = missing.lnln_drop(f, k, seed=1111, epoch=0)
    for m in f:
        r = rates[m]
        assert r.shape == (101,) and ((r >= 0) & (r < 1)).all()
        assert int((r == 0).sum()) == 50                      # int(N / 2) samples complete
        complete = r == 0
        np.testing.assert_array_equal(km[m][complete], k[m][complete])
    assert not np.array_equal(rates["text"], rates["audio"])  # independent per modality
    _, km2, rates2 = missing.lnln_drop(f, k, seed=1111, epoch=0)
    _, km3, rates3 = missing.lnln_drop(f, k, seed=1111, epoch=1)
    for m in f:
        np.testing.assert_array_equal(rates[m], rates2[m])
        np.testing.assert_array_equal(km[m], km2[m])
        assert not np.array_equal(rates[m], rates3[m])        # redrawn every epoch
    # Over many samples the dropped fraction matches the per-sample rates: E[dropped | r] = r * valid.
    for m in f:
        valid = k[m].sum(1)
        dropped = (k[m] & ~km[m]).sum(1)
        assert abs(dropped.sum() - (rates[m] * valid).sum()) < 5 * np.sqrt((valid * 0.25).sum())


def test_lnln_sampler_on_split(tmp_path):
    from fsrf.data import load_mmsa, make_synthetic

    p = make_synthetic("mosi", tmp_path / "m.pkl", n_train=20, n_valid=4, n_test=4,
                       dims={"text": 8, "audio": 3, "vision": 4}, seq_lens={"text": 10, "audio": 10, "vision": 10})
    sp = load_mmsa(p).split("train")
    s = missing.LNLNSampler(sp, seed=3)
    e0 = s.epoch(0)
    assert len(e0) == len(sp) and set(s.rates) == {"text", "audio", "vision"}
    assert not (e0.masks["audio"] & ~sp.masks["audio"]).any()
    e1 = s.epoch(1)
    assert any((e0.masks[m] != e1.masks[m]).any() for m in sp.modalities)
    np.testing.assert_array_equal(e0.labels, sp.labels)


@pytest.mark.parametrize("text", ["features", "bert_ids"])
def test_the_sampler_batches_are_those_of_lnln_drop_without_copying_the_features(tmp_path, text):
    """The epoch view zeroes dropped frames per batch; its batches equal those of the split built
    from lnln_drop's arrays (ids replaced by [UNK] as there)."""
    from fsrf.data import load_mmsa, make_synthetic

    p = make_synthetic("mosei", tmp_path / "m.pkl", n_train=24, n_valid=4, n_test=4,
                       dims={"text": 8, "audio": 3, "vision": 4}, seq_lens={"text": 10, "audio": 10, "vision": 10})
    sp = load_mmsa(p, text=text).split("train")
    view = missing.LNLNSampler(sp, seed=5).epoch(2)
    f, k, _ = missing.lnln_drop(sp.features, sp.masks, seed=5, epoch=2)
    eager = sp.with_arrays(features=f, masks=k)
    for m in ("audio", "vision"):
        assert view._features[m] is sp.features[m]  # no copy
        np.testing.assert_array_equal(view.features[m], eager.features[m])
    idx = np.array([3, 0, 17, 9, 23])
    a, b = view.batch(idx), eager.batch(idx)
    for m in sp.modalities:
        assert torch.equal(a["inputs"][m], b["inputs"][m]), m
        assert torch.equal(a["masks"][m], b["masks"][m]), m
    assert any((a["masks"][m] != torch.from_numpy(sp.masks[m][idx])).any() for m in sp.modalities)
    item_a, item_b = view[7], eager[7]
    assert all(torch.equal(item_a[m], item_b[m]) for m in sp.modalities)


# ---------------------------------------------------------------------------- TFR-Net mode
def _tfr_reference(text_bert, audio, audio_len, rate, seed):
    """MMSA/TFR-Net generate_m, written out from its description (global np.random state on purpose)."""
    # text
    input_mask = text_bert[:, 1, :]
    input_len = np.argmin(input_mask, axis=1)
    np.random.seed(seed)
    missing_mask = (np.random.uniform(size=input_mask.shape) > rate) * input_mask
    missing_mask[:, 0] = 1
    missing_mask[np.arange(len(input_len)), input_len - 1] = 1
    ids_m = missing_mask * text_bert[:, 0, :] + 100 * (input_mask - missing_mask)
    # audio
    amask = np.array([[1] * int(n) + [0] * (audio.shape[1] - int(n)) for n in audio_len])
    np.random.seed(seed)
    amiss = (np.random.uniform(size=amask.shape) > rate) * amask
    return ids_m, missing_mask, audio * amiss[..., None], amiss


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.7, 1.0])
def test_tfr_drop_is_bit_compatible(rate):
    f, k = _arrays(ids=True, n=32)
    # One sample without padding exercises TFR's argmin quirk (input_len - 1 = -1 = last token).
    f["text"][0, 1, :] = 1
    f["text"][0, 0, :] = np.r_[101, np.arange(2000, 2000 + f["text"].shape[2] - 2), 102]
    k["text"][0, :] = True
    state = np.random.get_state()
    ids_m, tmask, audio_m, amask = _tfr_reference(f["text"], f["audio"], k["audio"].sum(1), rate, 1111)
    np.random.set_state(state)
    g, km = missing.tfr_drop(f, k, rate, seeds=1111)
    np.testing.assert_array_equal(g["text"][:, 0, :], ids_m)
    np.testing.assert_array_equal(g["text"][:, 1:, :], f["text"][:, 1:, :])
    np.testing.assert_array_equal(km["text"], tmask.astype(bool))
    np.testing.assert_array_equal(g["audio"], audio_m)
    np.testing.assert_array_equal(km["audio"], amask.astype(bool))
    # numpy's global state is left alone.
    np.testing.assert_array_equal(np.random.get_state()[1], state[1])


def test_tfr_drop_per_modality_seeds():
    f, k = _arrays(L=(16, 16, 16), D=(3, 3, 3))
    _, same = missing.tfr_drop(f, k, 0.5, seeds=1111)
    _, diff = missing.tfr_drop(f, k, 0.5, seeds={"text": 111, "audio": 1111, "vision": 11111})
    # One seed for all: equal-shape masks share their draws (as in MMSA); per-modality seeds differ.
    u = np.random.RandomState(1111).uniform(size=(64, 16)) > 0.5
    np.testing.assert_array_equal(same["audio"], u & k["audio"])
    np.testing.assert_array_equal(same["vision"], u & k["vision"])
    assert (diff["text"] != same["text"]).any()


def test_corrupt_split(tmp_path):
    from fsrf.data import load_mmsa, make_synthetic

    p = make_synthetic("mosei", tmp_path / "m.pkl", n_train=4, n_valid=4, n_test=30,
                       dims={"text": 8, "audio": 3, "vision": 4}, seq_lens={"text": 10, "audio": 10, "vision": 10})
    te = load_mmsa(p).split("test")
    a = missing.corrupt_split(te, rate=0.5, pattern="lv")
    b = missing.corrupt_split(te, rate=0.5, pattern="lv")
    assert not a.masks["audio"].any() and not a.features["audio"].any()
    for m in te.modalities:
        np.testing.assert_array_equal(a.masks[m], b.masks[m])  # same seed (1111) -> same corrupted test set
    _, expect = missing.drop_frames(te.features, te.masks, 0.5, seed=1111)
    np.testing.assert_array_equal(a.masks["text"], expect["text"])
    t = missing.corrupt_split(te, rate=0.2, mode="tfr")
    _, expect = missing.tfr_drop(te.features, te.masks, 0.2, seeds=1111)
    np.testing.assert_array_equal(t.masks["vision"], expect["vision"])
    with pytest.raises(ValueError, match="mode must be"):
        missing.corrupt_split(te, mode="lnln")
    with pytest.raises(ValueError, match="pattern"):
        missing.corrupt_split(te, pattern="lq")


# --------------------------------------------------------------------------- tensor corrupt
def _batch(B=8, dev="cpu", dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    shapes = {"text": (B, 10, 6), "audio": (B, 14, 3), "vision": (B, 12, 4)}
    x = {m: (torch.randn(*s, generator=g) + 3).to(dev, dtype) for m, s in shapes.items()}
    k = {m: (torch.arange(s[1])[None, :] < torch.randint(2, s[1] + 1, (B, 1), generator=g)).to(dev)
         for m, s in shapes.items()}
    return x, k


def test_corrupt_identity_and_full_drop():
    x, k = _batch()
    x0 = {m: v.clone() for m, v in x.items()}
    y, km = missing.corrupt(x, k, rate=0.0, inter_prob=0.0)
    for m in x:
        torch.testing.assert_close(km[m], k[m])
        torch.testing.assert_close(y[m], x[m] * k[m][..., None])
        assert y[m].data_ptr() != x[m].data_ptr()
        torch.testing.assert_close(x[m], x0[m])
    y, km = missing.corrupt(x, None, rate=1.0, inter_prob=0.0)
    for m in x:
        assert not km[m].any() and not y[m].any()
    y, km = missing.corrupt(x, None, rate=0.0, inter_prob=0.0)  # masks=None means all observed
    for m in x:
        assert km[m].all()
        torch.testing.assert_close(y[m], x[m])


def test_corrupt_inter_modal_removes_one_or_two():
    x, k = _batch(B=2000)
    ones = {m: torch.ones_like(v) for m, v in k.items()}
    g = torch.Generator().manual_seed(1)
    _, km = missing.corrupt(x, ones, rate=0.0, inter_prob=1.0, generator=g)
    removed = torch.stack([~km[m].any(1) for m in x], 1).sum(1)
    assert set(removed.tolist()) == {1, 2}                   # never zero, never all three
    frac_two = (removed == 2).float().mean().item()
    assert abs(frac_two - 0.5) < 0.05                        # k uniform in {1, 2}
    per_mod = torch.stack([~km[m].any(1) for m in x], 1).float().mean(0)
    assert torch.allclose(per_mod, torch.full((3,), 0.5), atol=0.05)  # each modality removed 1/2 of the time
    # Partially: inter_prob 0.3 -> about 30 % of samples lose a modality.
    _, km = missing.corrupt(x, ones, rate=0.0, inter_prob=0.3, generator=g)
    hit = torch.stack([~km[m].any(1) for m in x], 1).any(1).float().mean().item()
    assert abs(hit - 0.3) < 0.05


def test_corrupt_random_rates_and_existing_masks():
    x, k = _batch(B=3000)
    g = torch.Generator().manual_seed(2)
    y, km = missing.corrupt(x, k, rate=None, inter_prob=0.0, generator=g)
    for m in x:
        assert not (km[m] & ~k[m]).any()                     # missing frames stay missing
        kept = km[m].sum().item() / k[m].sum().item()
        assert abs(kept - 0.5) < 0.03                        # E[1 - r] with r ~ U(0, 1)
        torch.testing.assert_close(y[m][~km[m]], torch.zeros_like(y[m][~km[m]]))
        torch.testing.assert_close(y[m][km[m]], x[m][km[m]])
    # Per-sample rates: kept fractions spread over (0, 1) instead of concentrating at 0.5.
    frac = km["text"].float().sum(1) / k["text"].float().sum(1)
    assert frac.std() > 0.2


def test_corrupt_generator_reproducible_and_gradient():
    x, k = _batch()
    a = missing.corrupt(x, k, generator=torch.Generator().manual_seed(7))
    b = missing.corrupt(x, k, generator=torch.Generator().manual_seed(7))
    for m in x:
        torch.testing.assert_close(a[0][m], b[0][m])
        assert torch.equal(a[1][m], b[1][m])
    xd = {m: v.double().requires_grad_(True) for m, v in x.items()}
    y, km = missing.corrupt(xd, k, rate=0.5, generator=torch.Generator().manual_seed(7))
    sum(((y[m] * torch.arange(y[m].shape[-1], dtype=torch.float64)).sum() for m in y)).backward()
    for m in x:  # d/dx of sum(w * mask * x) = w * mask
        expect = km[m][..., None].double() * torch.arange(x[m].shape[-1], dtype=torch.float64)
        torch.testing.assert_close(xd[m].grad, expect.expand_as(xd[m]))


def test_corrupt_keeps_dtype():
    x, k = _batch(dtype=torch.bfloat16)
    y, _ = missing.corrupt(x, k, rate=0.3)
    assert all(y[m].dtype == torch.bfloat16 for m in y)


@pytest.mark.parametrize("kwargs,exc,match", [
    ({"rate": 1.5}, ValueError, r"rate must be in \[0, 1\]"),
    ({"rate": {"text": 0.1}}, ValueError, "rate has no entry"),
    ({"inter_prob": -0.1}, ValueError, r"inter_prob must be in \[0, 1\]"),
    ({"inter_prob": True}, ValueError, "inter_prob must be a number"),
    ({"generator": 3}, TypeError, "generator must be a torch.Generator"),
])
def test_corrupt_bad_arguments(kwargs, exc, match):
    x, k = _batch()
    with pytest.raises(exc, match=match):
        missing.corrupt(x, k, **kwargs)


def test_corrupt_bad_shapes():
    x, k = _batch()
    with pytest.raises(ValueError, match=r"inputs\['audio'\] must have shape \(B, T, D\)"):
        missing.corrupt({**x, "audio": x["audio"][0]}, None)
    with pytest.raises(ValueError, match="batch size"):
        missing.corrupt({**x, "audio": x["audio"][:3]}, None)
    with pytest.raises(TypeError, match="floating-point"):
        missing.corrupt({**x, "audio": x["audio"].long()}, None)
    with pytest.raises(ValueError, match=r"masks\['text'\] must have shape"):
        missing.corrupt(x, {**k, "text": k["text"][:, :3]})
    with pytest.raises(TypeError, match=r"masks\['text'\] must be a bool tensor"):
        missing.corrupt(x, {**k, "text": k["text"].float()})
    with pytest.raises(ValueError, match="same modalities"):
        missing.corrupt(x, {"text": k["text"]})
    with pytest.raises(ValueError, match="non-empty dict"):
        missing.corrupt({}, None)


@requires_cuda
def test_corrupt_on_cuda_with_cpu_generator():
    x, k = _batch(dev="cuda")
    y, km = missing.corrupt(x, k, generator=torch.Generator().manual_seed(0))
    assert all(v.device.type == "cuda" for v in list(y.values()) + list(km.values()))
    y2, km2 = missing.corrupt({m: v.cpu() for m, v in x.items()}, {m: v.cpu() for m, v in k.items()},
                              generator=torch.Generator().manual_seed(0))
    for m in x:  # same draws whatever the data's device
        assert torch.equal(km[m].cpu(), km2[m])


@pytest.mark.parametrize("rate, pattern", [(0.0, "lav"), (0.3, "lav"), (0.7, "av"), (0.0, "l"), (1.0, "la")])
def test_corrupt_split_view_gives_the_batches_of_the_corrupted_arrays(tmp_path, rate, pattern):
    from fsrf.data import load_mmsa, make_synthetic

    p = make_synthetic("mosei", tmp_path / "m.pkl", n_train=4, n_valid=4, n_test=12,
                       dims={"text": 8, "audio": 3, "vision": 4}, seq_lens={"text": 10, "audio": 10, "vision": 10})
    sp = load_mmsa(p).split("test")
    view = missing.corrupt_split(sp, rate=rate, pattern=pattern, seed=1111)
    f, k = missing.drop_frames(sp.features, sp.masks, rate, seed=1111)
    if pattern != "lav":
        f, k = missing.remove_modalities(f, k, pattern)
    eager = sp.with_arrays(features=f, masks=k)
    assert view._features["audio"] is sp.features["audio"]  # a view, not a copy
    for m in sp.modalities:  # read directly, its arrays are the corrupted ones
        np.testing.assert_array_equal(view.features[m], eager.features[m])
    a, b = view.batch(np.arange(12)), eager.batch(np.arange(12))
    for m in sp.modalities:
        assert torch.equal(a["inputs"][m], b["inputs"][m]) and torch.equal(a["masks"][m], b["masks"][m]), m
