"""Tests of the "events" synthetic generator: the schema of "factor", a different structure.

The structural checks fit closed-form ridge regressions (and Gaussian reference statistics) that
know nothing of how the generator works; only the event windows and the noise-free label come from
the generator's testing hook, which the written file never contains.
"""

import pickle

import numpy as np
import pytest

from fsrf import cli, data, missing
from fsrf.data import synthetic

MODS = ("text", "audio", "vision")
SMALL_DIMS = {"text": 48, "audio": 12, "vision": 16}
ALIGNED = {"text": 20, "audio": 20, "vision": 20}
UNALIGNED = {"text": 20, "audio": 60, "vision": 40}
N_TRAIN, N_TEST = 2000, 1000


# ------------------------------------------------------------------------------ helpers
def _load(tmp_path, raw: dict, name: str):
    p = tmp_path / name
    p.write_bytes(pickle.dumps(raw, protocol=4))
    return data.load_mmsa(p)


def _pool(sp, mods, windows=None):
    """Masked mean over all observed frames, or over the observed frames of a window."""
    cols = []
    for m in mods:
        x, k = sp.features[m], sp.masks[m]
        if windows is not None:
            t = np.arange(k.shape[1])[None, :]
            k = k & (t >= windows[m][:, :1]) & (t < windows[m][:, 1:])
        cols.append((x * k[..., None]).sum(1) / np.maximum(k.sum(1, keepdims=True), 1))
    return np.concatenate(cols, 1).astype(np.float64)


def _ridge(X, y, Xt, yt, lam=30.0):
    """Closed-form ridge on standardised columns; (test MAE, test R²)."""
    mu, sd = X.mean(0), X.std(0) + 1e-8
    Z, Zt = (X - mu) / sd, (Xt - mu) / sd
    w = np.linalg.solve(Z.T @ Z + lam * np.eye(Z.shape[1]), Z.T @ (y - y.mean()))
    p = Zt @ w + y.mean()
    return float(np.mean(np.abs(p - yt))), 1.0 - float(np.mean((p - yt) ** 2) / np.var(yt))


def _fit(tr, te, mods, win_tr=None, win_te=None, extra=None):
    X, Xt = _pool(tr, mods, win_tr), _pool(te, mods, win_te)
    if extra is not None:
        X, Xt = np.c_[X, extra[0]], np.c_[Xt, extra[1]]
    return _ridge(X, tr.labels.astype(np.float64), Xt, te.labels.astype(np.float64))


def _top_components(a, b, k):
    mu, sd = a.mean(0), a.std(0) + 1e-8
    vt = np.linalg.svd((a - mu) / sd, full_matrices=False)[2][:k]
    return ((a - mu) / sd) @ vt.T, ((b - mu) / sd) @ vt.T


def _cross_products(tr, te, m1, m2, win_tr, win_te, k=6):
    """Pairwise products of the top principal components of two modalities' window means."""
    p1 = _top_components(_pool(tr, (m1,), win_tr), _pool(te, (m1,), win_te), k)
    p2 = _top_components(_pool(tr, (m2,), win_tr), _pool(te, (m2,), win_te), k)
    return tuple((u[:, :, None] * v[:, None, :]).reshape(len(u), -1) for u, v in zip(p1, p2))


def _excess_kurtosis(r):
    r = r - r.mean()
    return float(np.mean(r**4) / np.mean(r**2) ** 2 - 3.0)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same aligned MOSEI-like layout from both generators, with the events' ground truth."""
    tmp = tmp_path_factory.mktemp("pair")
    out = {}
    for gen in synthetic.SYNTHETIC_GENERATORS:
        raw, truth = synthetic._generate_with_truth("mosei", n_train=N_TRAIN, n_valid=2, n_test=N_TEST, seed=0,
                                                    dims=SMALL_DIMS, seq_lens=ALIGNED, generator=gen)
        ds = _load(tmp, raw, f"{gen}.pkl")
        out[gen] = (ds.split("train"), ds.split("test"), truth)
    return out


# ------------------------------------------------------------------------------ schema
def _schema(raw):
    return {s: {k: (np.asarray(v).dtype, np.asarray(v).shape) for k, v in raw[s].items()} for s in data.SPLITS}


@pytest.mark.parametrize("preset,aligned", [("mosi", True), ("mosi", False), ("mosei", True), ("mosei", False),
                                            ("sims", False)])
def test_schema_is_the_factor_generators(tmp_path, preset, aligned):
    kw = dict(n_train=5, n_valid=3, n_test=4, seed=2, aligned=aligned)
    fac = data.safe_load(data.make_synthetic(preset, tmp_path / "f.pkl", **kw))
    ev_path = data.make_synthetic(preset, tmp_path / "e.pkl", generator="events", **kw)
    ev = data.safe_load(ev_path)
    assert set(ev) == set(fac) == {"train", "valid", "test", "config"}
    assert _schema(ev) == _schema(fac)
    assert ev["config"] == {**fac["config"], "structure": "events"}
    for s in data.SPLITS:
        for key in ("id", "raw_text"):
            np.testing.assert_array_equal(ev[s][key], fac[s][key])
        assert np.isneginf(ev[s]["audio"]).any()
    a, b = data.load_mmsa(ev_path), data.load_mmsa(tmp_path / "f.pkl")
    assert (a.dataset_kind, a.aligned, a.dims, a.seq_lens) == (b.dataset_kind, b.aligned, b.dims, b.seq_lens)
    assert a.synthetic["structure"] == "events" and "structure" not in b.synthetic


def test_content(tmp_path):
    raw = data.safe_load(data.make_synthetic("mosei", tmp_path / "u.pkl", n_train=300, n_valid=20, n_test=20,
                                             aligned=False, dims=SMALL_DIMS, seq_lens=UNALIGNED,
                                             generator="events"))
    tr = raw["train"]
    y = tr["regression_labels"]
    assert y.min() >= -3 and y.max() <= 3 and y.std() > 0.8 and (y == 0).any()
    np.testing.assert_allclose(y * 3, np.round(y * 3), atol=1e-4)
    tb = tr["text_bert"]
    ln = tb[:, 1].sum(1).astype(int)
    assert (tb[:, 0, 0] == 101).all() and (tb[np.arange(300), 0, ln - 1] == 102).all()
    sp = data.load_mmsa(tmp_path / "u.pkl").split("train")
    for m in sp.modalities:
        x, k = sp.features[m], sp.masks[m]
        assert np.isfinite(x).all() and not x[~k].any() and (np.abs(x[k]).sum(-1) > 0).all()
        assert k.sum(1).std() > 0
    np.testing.assert_array_equal(sp.lengths["vision"], tr["vision_lengths"])


def test_sims_unimodal_labels(tmp_path):
    path = data.make_synthetic("sims", tmp_path / "s.pkl", n_train=400, n_valid=5, n_test=5, dims=SMALL_DIMS,
                               seq_lens={"text": 10, "audio": 20, "vision": 12}, generator="events")
    sp = data.load_mmsa(path).split("train")
    grid = np.round(np.arange(-1.0, 1.01, 0.2), 1)
    for y in [sp.labels] + [sp.unimodal_labels[k] for k in "TAV"]:
        assert np.abs(y[:, None] - grid[None, :]).min(1).max() < 1e-6
        assert len(np.unique(np.round(y, 1))) >= 5
    for k in "TAV":
        assert 0.3 < np.corrcoef(sp.labels, sp.unimodal_labels[k])[0, 1] < 0.95


def test_deterministic_and_seeded(tmp_path):
    kw = dict(n_train=10, n_valid=3, n_test=3, dims=SMALL_DIMS, generator="events")
    a = data.make_synthetic("mosi", tmp_path / "a.pkl", seed=4, **kw)
    b = data.make_synthetic("mosi", tmp_path / "b.pkl", seed=4, **kw)
    c = data.make_synthetic("mosi", tmp_path / "c.pkl", seed=5, **kw)
    assert a.read_bytes() == b.read_bytes()
    ra, rc = data.safe_load(a), data.safe_load(c)
    for key in ("text", "audio", "vision", "regression_labels"):
        assert not np.array_equal(ra["train"][key], rc["train"][key])
    # The testing hook builds exactly what make_synthetic writes.
    hook, _ = synthetic._generate_with_truth("mosi", seed=4, **kw)
    for s in data.SPLITS:
        for key, v in ra[s].items():
            np.testing.assert_array_equal(np.asarray(hook[s][key]), np.asarray(v))


def test_generator_argument_is_checked(tmp_path):
    assert data.SYNTHETIC_GENERATORS == ("factor", "events", "content")
    for bad in ("Events", "mixture", None, 3):
        with pytest.raises(ValueError, match=r"generator must be one of \['factor', 'events', 'content'\]; got "):
            data.make_synthetic("mosi", tmp_path / "x.pkl", n_train=2, n_valid=2, n_test=2, generator=bad)
    assert not (tmp_path / "x.pkl").exists()


# ------------------------------------------------------------------------------ structure
def test_pooled_linear_model_does_much_worse_than_on_factor(pair):
    """Nonlinear label and diluted evidence: plain pooling loses most of what the window holds."""
    f_tr, f_te, _ = pair["factor"]
    e_tr, e_te, truth = pair["events"]
    _, r2_factor = _fit(f_tr, f_te, MODS)
    _, r2_events = _fit(e_tr, e_te, MODS)
    _, r2_window = _fit(e_tr, e_te, MODS, truth["train"]["window"], truth["test"]["window"])
    assert r2_factor > 0.6
    assert r2_events < r2_factor - 0.2
    assert r2_window > r2_events + 0.12


def test_text_audio_interaction(pair):
    """Products of text and audio window features help on "events" (irony flips the words' sign),
    products of text and vision do not, and neither helps on "factor"."""
    e_tr, e_te, truth = pair["events"]
    wtr, wte = truth["train"]["window"], truth["test"]["window"]
    lin, _ = _fit(e_tr, e_te, MODS, wtr, wte)
    ta, _ = _fit(e_tr, e_te, MODS, wtr, wte, _cross_products(e_tr, e_te, "text", "audio", wtr, wte))
    tv, _ = _fit(e_tr, e_te, MODS, wtr, wte, _cross_products(e_tr, e_te, "text", "vision", wtr, wte))
    assert ta < lin - 0.015
    assert tv > lin - 0.005
    f_tr, f_te, _ = pair["factor"]
    f_lin, _ = _fit(f_tr, f_te, MODS)
    f_ta, _ = _fit(f_tr, f_te, MODS, extra=_cross_products(f_tr, f_te, "text", "audio", None, None))
    assert f_ta > f_lin - 0.005


def test_text_marks_the_event(pair):
    e_tr, _, truth = pair["events"]
    win = truth["train"]["window"]["text"]
    x, k = e_tr.features["text"], e_tr.masks["text"]
    t = np.arange(k.shape[1])[None, :]
    inside = (t >= win[:, :1]) & (t < win[:, 1:])
    assert (inside <= k).all() and (inside.sum(1) >= 2).all()
    assert not inside[:, 0].any() and not inside[np.arange(len(k)), k.sum(1) - 1].any()  # not [CLS]/[SEP]
    diff = (x * inside[..., None]).sum(1) / inside.sum(1, keepdims=True) \
        - (x * (k & ~inside)[..., None]).sum(1) / (k & ~inside).sum(1, keepdims=True)
    # One direction separates event tokens from the others in every sample ...
    direction = diff.mean(0) / np.linalg.norm(diff.mean(0))
    assert np.linalg.norm(diff.mean(0)) > 2.0 and (diff @ direction > 0).mean() > 0.97
    # ... and the event does not sit at a fixed position.
    assert len(np.unique(win[:, 0])) > 5


def test_unaligned_signal_is_in_the_mapped_window(tmp_path):
    raw, truth = synthetic._generate_with_truth("mosei", n_train=N_TRAIN, n_valid=2, n_test=N_TEST, seed=1,
                                                aligned=False, dims=SMALL_DIMS, seq_lens=UNALIGNED,
                                                generator="events")
    ds = _load(tmp_path, raw, "u.pkl")
    tr, te = ds.split("train"), ds.split("test")
    wtr, wte = truth["train"]["window"], truth["test"]["window"]
    for sp, w in ((tr, wtr), (te, wte)):
        # The window sits at the same relative time in every modality.
        rel = {m: (w[m][:, 0] + w[m][:, 1]) / 2 / sp.masks[m].sum(1) for m in MODS}
        for m in ("audio", "vision"):
            assert np.abs(rel[m] - rel["text"]).max() < 0.15
    _, r2_mean = _fit(tr, te, ("vision",))
    _, r2_win = _fit(tr, te, ("vision",), wtr, wte)
    assert r2_win > r2_mean + 0.05


def test_every_modality_is_needed(pair):
    """Each modality carries label information the others lack, and the vision is the strongest."""
    e_tr, e_te, truth = pair["events"]
    wtr, wte = truth["train"]["window"], truth["test"]["window"]
    full, _ = _fit(e_tr, e_te, MODS, wtr, wte)
    full_pooled, _ = _fit(e_tr, e_te, MODS)
    for drop in MODS:
        rest = tuple(m for m in MODS if m != drop)
        assert _fit(e_tr, e_te, rest, wtr, wte)[0] > full + 0.03, f"removing {drop} should cost accuracy"
        assert _fit(e_tr, e_te, rest)[0] > full_pooled + 0.01, f"removing {drop} should cost accuracy (pooled)"
    alone = {m: _fit(e_tr, e_te, (m,), wtr, wte)[1] for m in MODS}
    assert alone["vision"] > alone["text"] > alone["audio"]


def test_frame_dropping_costs_gradually(pair):
    e_tr, e_te, _ = pair["events"]
    X = _pool(e_tr, MODS)
    maes = [_ridge(X, e_tr.labels.astype(np.float64), _pool(missing.corrupt_split(e_te, rate=r), MODS),
                   e_te.labels.astype(np.float64))[0] for r in (0.0, 0.6, 0.95)]
    assert maes[0] < maes[1] < maes[2]


def test_label_noise_is_heavy_tailed(pair):
    """Residuals from the noise-free label: far heavier tails than a Gaussian ("factor" is Gaussian)."""
    res = {}
    for gen, (tr, te, truth) in pair.items():
        clean = np.concatenate([truth["train"]["label_clean"], truth["test"]["label_clean"]])
        r = np.concatenate([tr.labels, te.labels]) - clean
        # Far from the ends of [-3, 3], so clipping does not shape the residual's tails.
        res[gen] = r[np.abs(clean) < 1.5].astype(np.float64)
    se = np.sqrt(24.0 / len(res["factor"]))  # standard error of the excess kurtosis of a Gaussian sample
    assert abs(_excess_kurtosis(res["factor"])) < 4 * se  # rounding onto the grid is light-tailed
    assert _excess_kurtosis(res["events"]) > 3.0
    # Beyond 4 robust standard deviations a Gaussian puts 0.006 % of its mass.
    for gen, lo, hi in (("factor", 0.0, 0.002), ("events", 0.01, 0.2)):
        r = res[gen] - np.median(res[gen])
        robust_sd = 1.4826 * np.median(np.abs(r))
        assert lo <= np.mean(np.abs(r) > 4 * robust_sd) <= hi, gen


# ------------------------------------------------------------------------------ CLI
def test_cli_generator(tmp_path, capsys):
    out = tmp_path / "e.pkl"
    common = ["make-synthetic", "--preset", "mosi", "--n-train", "6", "--n-valid", "3", "--n-test", "4"]
    assert cli.main([*common, "--out", str(out), "--generator", "events", "--unaligned"]) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    ds = data.load_mmsa(out)
    assert [len(ds.split(s)) for s in data.SPLITS] == [6, 3, 4]
    assert ds.synthetic["structure"] == "events" and not ds.aligned
    # "factor" is the default, and the same file as without the flag.
    assert cli.main([*common, "--out", str(tmp_path / "f1.pkl")]) == 0
    assert cli.main([*common, "--out", str(tmp_path / "f2.pkl"), "--generator", "factor"]) == 0
    assert (tmp_path / "f1.pkl").read_bytes() == (tmp_path / "f2.pkl").read_bytes()
    capsys.readouterr()
    with pytest.raises(SystemExit) as ei:
        cli.main([*common, "--out", str(tmp_path / "x.pkl"), "--generator", "mixture"])
    assert ei.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fsrf make-synthetic: error: ")
    assert "--generator" in lines[0] and "'mixture'" in lines[0] and "'events'" in lines[0]
    assert not (tmp_path / "x.pkl").exists()


def test_cli_choices_are_the_librarys():
    sub = next(a for a in cli.build_parser()._actions if a.dest == "command")
    gen = next(a for a in sub.choices["make-synthetic"]._actions if a.dest == "generator")
    assert tuple(gen.choices) == data.SYNTHETIC_GENERATORS and gen.default == "factor"
