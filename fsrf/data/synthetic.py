"""Synthetic MMSA-format feature files for tests, demos and CI (no real data is needed).

:func:`make_synthetic` writes a pickle with exactly the MMSA schema (see :mod:`fsrf.data.mmsa`):
the real feature dimensions and padded lengths of each dataset, ``text`` features and
``text_bert`` ids, lengths in unaligned files, zero padding, a few ``-inf`` in audio, ``$_$`` ids,
MOSI/MOSEI labels on their annotation grids in [-3, 3], SIMS labels in {-1, -0.8, ..., 1} with
unimodal labels. It loads unchanged in MMSA's own loader.

Two generators with different structure share that schema (:data:`SYNTHETIC_GENERATORS`); a method
tuned on one can be checked on the other. This module assembles the MMSA dict (lengths, ``-inf``,
``text_bert`` ids, label grids, SIMS unimodal labels, annotations, ids, ``config``) and holds the
``"factor"`` generator; :mod:`fsrf.data.synthetic_events` holds ``"events"`` (an event window
marked in the text, nonlinear labels with a cross-modal interaction, heavy-tailed label noise).
A generator only maps latents to a standardised label and to features.

``"factor"`` generative model (per sample ``i``; all draws seeded)::

    z_s ~ N(0, I_4)                                  shared factor, visible in every modality
    z_m = rho * C_m z_s + sqrt(1 - rho^2) * u_m       modality-specific factor (u_m ~ N(0, I_3)),
                                                      partly predictable from z_s (rho = 0.5)
    n_m ~ N(0, I_2)                                   nuisance (speaker/recording), label-free
    y*  = a . z_s + sum_m b_m . z_m + eps             label before scaling/rounding
    x_m[t] = mu_m + s_m * (g_t (P_m z_s + Q_m z_m) + R_m n_m + e_t)   for valid frames t,
             0 for padding                            (g_t ~ U(0.5, 1.5), e_t ~ N(0, I))

The label variance splits roughly as shared 40 %, text-specific 25 %, audio- and
vision-specific 12 % each, noise 11 %. Each modality therefore carries label information the
others lack (removing it costs accuracy; about a quarter of its specific part is recoverable
from the shared factor, which is what semantic recovery can exploit), while the shared factor
is visible in all of them. Per-frame noise makes frame dropping cost accuracy too, gradually.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Mapping

import numpy as np

from fsrf.data import synthetic_content, synthetic_events
from fsrf.runtime.io import atomic_write

__all__ = ["PRESETS", "SYNTHETIC_GENERATORS", "make_synthetic"]

#: Dataset presets: real dims and padded lengths (MMSA README / configs), real split sizes
#: (for reference only) and the small default sizes used here.
PRESETS: dict[str, dict] = {
    "mosi": {
        "dims": {"text": 768, "audio": 5, "vision": 20},
        "aligned_lens": {"text": 50, "audio": 50, "vision": 50},
        "unaligned_lens": {"text": 50, "audio": 375, "vision": 500},
        "real_sizes": (1284, 229, 686),
        "default_sizes": (1000, 200, 200),
        "default_aligned": True,
        "vocab": 30522,
        "label_grid": 0.2,      # mean of 5 annotators' integer scores
    },
    "mosei": {
        "dims": {"text": 768, "audio": 74, "vision": 35},
        "aligned_lens": {"text": 50, "audio": 50, "vision": 50},
        "unaligned_lens": {"text": 50, "audio": 500, "vision": 500},
        "real_sizes": (16326, 1871, 4659),
        "default_sizes": (1500, 300, 300),
        "default_aligned": True,
        "vocab": 30522,
        "label_grid": 1.0 / 3.0,  # mean of 3 annotators
    },
    "sims": {
        "dims": {"text": 768, "audio": 33, "vision": 709},
        "aligned_lens": None,   # MMSA publishes only unaligned_39.pkl for SIMS
        "unaligned_lens": {"text": 39, "audio": 400, "vision": 55},
        "real_sizes": (1368, 456, 457),
        "default_sizes": (1000, 250, 250),
        "default_aligned": False,
        "vocab": 21128,         # bert-base-chinese
        "label_grid": 0.2,
    },
}

#: Names accepted by ``make_synthetic(generator=...)``: ``"factor"`` (static latent factors, frames
#: i.i.d. given them, a linear label; the default), ``"events"`` (see
#: :mod:`fsrf.data.synthetic_events`) and ``"content"`` (frames that vary with content: words
#: with order-dependent negation, a brief facial expression, a tone contour, speaker offsets; see
#: :mod:`fsrf.data.synthetic_content`).
SYNTHETIC_GENERATORS: tuple[str, ...] = ("factor", "events", "content")

_MODS = ("text", "audio", "vision")
_K_SHARED, _K_SPEC, _K_NUIS = 4, 3, 2
_RHO = 0.5
# Label-variance budget (before noise normalisation): shared, per-modality specific, noise.
_VAR_SHARED = 0.40
_VAR_SPEC = {"text": 0.25, "audio": 0.12, "vision": 0.12}
_VAR_NOISE = 0.11
# Effective signal-to-noise ratio of the mean over a typical number of valid frames, per
# latent direction: the per-dimension signal scale is derived from it so that difficulty does not
# depend on the feature dimension or the sequence length.
_SNR = {"text": 20.0, "audio": 4.0, "vision": 4.0}
_FEAT_MEAN = {"text": 0.0, "audio": 0.5, "vision": 0.2}
_SPLITS = ("train", "valid", "test")
# Valid text lengths are drawn around this fraction of the padded length, unaligned audio/vision
# lengths around _OTHER_LEN_FRAC of theirs.
_TEXT_LEN_FRAC, _OTHER_LEN_FRAC = 0.5, 0.55


# ------------------------------------------------------------------------------ "factor" generator
def _unit(rng: np.random.Generator, k: int) -> np.ndarray:
    v = rng.standard_normal(k)
    return v / np.linalg.norm(v)


def _factor_world(rng: np.random.Generator, dims: Mapping[str, int], mean_len: Mapping[str, float]) -> dict:
    """Parameters shared by all splits (projections, label weights)."""
    w: dict = {"C": {}, "b": {}, "P": {}, "Q": {}, "R": {}, "scale": {}, "mu": {}}
    w["a"] = _unit(rng, _K_SHARED) * np.sqrt(_VAR_SHARED)
    for m in _MODS:
        c = rng.standard_normal((_K_SPEC, _K_SHARED))
        w["C"][m] = c / np.linalg.norm(c, axis=1, keepdims=True)  # each row unit norm: var(z_m) = 1
        w["b"][m] = _unit(rng, _K_SPEC) * np.sqrt(_VAR_SPEC[m])
        d = dims[m]
        # Mean over n frames has noise variance 1/n per dim; a direction spread over d dims with
        # per-dim scale c then has SNR d * c^2 * n.
        c_sig = np.sqrt(_SNR[m] / (d * max(mean_len[m], 1.0)))
        w["P"][m] = rng.standard_normal((d, _K_SHARED)) * c_sig
        w["Q"][m] = rng.standard_normal((d, _K_SPEC)) * c_sig
        w["R"][m] = rng.standard_normal((d, _K_NUIS)) * c_sig
        w["scale"][m] = (np.exp(rng.uniform(-0.7, 0.7, d)) if m != "text" else np.full(d, 1.0)).astype(np.float32)
        w["mu"][m] = (rng.standard_normal(d) * _FEAT_MEAN[m]).astype(np.float32)
    # Exact variance of y* (z_m is correlated with z_s) so every split is scaled identically.
    eff_shared = w["a"] + _RHO * sum(w["C"][m].T @ w["b"][m] for m in _MODS)
    var = float(eff_shared @ eff_shared) + (1 - _RHO**2) * sum(float(w["b"][m] @ w["b"][m]) for m in _MODS) + _VAR_NOISE
    w["y_sd"] = np.sqrt(var)
    w["uni_sd"] = {}
    for m in _MODS:
        e = w["a"] + _RHO * w["C"][m].T @ w["b"][m]
        w["uni_sd"][m] = np.sqrt(float(e @ e) + (1 - _RHO**2) * float(w["b"][m] @ w["b"][m]))
    return w


def _factor_latents(rng: np.random.Generator, world: dict, n: int):
    """Latents of ``n`` samples: ``(state, y_star, unimodal, y_clean)`` (see :func:`_split`)."""
    zs = rng.standard_normal((n, _K_SHARED))
    zm = {m: _RHO * zs @ world["C"][m].T + np.sqrt(1 - _RHO**2) * rng.standard_normal((n, _K_SPEC)) for m in _MODS}
    nu = {m: rng.standard_normal((n, _K_NUIS)) for m in _MODS}
    shared = zs @ world["a"]
    spec = {m: zm[m] @ world["b"][m] for m in _MODS}
    clean = shared + sum(spec.values())
    y_star = (clean + rng.standard_normal(n) * np.sqrt(_VAR_NOISE)) / world["y_sd"]
    unimodal = {m: (shared + spec[m]) / world["uni_sd"][m] for m in _MODS}
    return {"zs": zs, "zm": zm, "nu": nu}, y_star, unimodal, clean / world["y_sd"]


def _factor_features(rng: np.random.Generator, world: dict, state: dict, lengths: Mapping[str, np.ndarray], *,
                     dims: Mapping[str, int], lens: Mapping[str, int], aligned: bool):
    """Frame features ``{modality: (n, L, d) float32}`` and the (empty) ground truth."""
    zs, zm, nu = state["zs"], state["zm"], state["nu"]
    n = zs.shape[0]
    feats = {}
    for m in _MODS:
        L, d = lens[m], dims[m]
        sig = (zs @ world["P"][m].T + zm[m] @ world["Q"][m].T).astype(np.float32)      # (n, d)
        nuis = (nu[m] @ world["R"][m].T).astype(np.float32)
        x = np.empty((n, L, d), dtype=np.float32)
        valid = np.arange(L)[None, :] < lengths[m][:, None]
        for s in range(0, n, 256):  # chunks keep float temporaries small
            e = slice(s, min(n, s + 256))
            g = rng.uniform(0.5, 1.5, (e.stop - s, L, 1)).astype(np.float32)
            blk = g * sig[e, None, :] + nuis[e, None, :] + rng.standard_normal((e.stop - s, L, d), dtype=np.float32)
            blk = world["mu"][m] + world["scale"][m] * blk
            blk *= valid[e, :, None]
            x[e] = blk
        feats[m] = x
    return feats, {}


# A generator is (world, latents, features) with the signatures of the "factor" functions above.
# The order of random draws within a split (latents, SIMS unimodal noise, lengths, features, -inf,
# token ids) is fixed by _split so that "factor" files stay identical across refactors.
_STRUCTURES = {
    "factor": (_factor_world, _factor_latents, _factor_features),
    "events": (synthetic_events.world, synthetic_events.latents, synthetic_events.features),
    "content": (synthetic_content.world, synthetic_content.latents, synthetic_content.features),
}


# ------------------------------------------------------------------------------ shared MMSA assembly
def _grid(v: np.ndarray, step: float, lo: float, hi: float) -> np.ndarray:
    out = np.clip(np.round(v / step) * step, lo, hi)
    out[out == 0] = 0.0  # no negative zeros
    return np.round(out, 6)


def _lengths(rng: np.random.Generator, n: int, L: int, frac_mean: float, lo: int) -> np.ndarray:
    ln = np.round(rng.normal(frac_mean * L, 0.2 * L, n)).astype(np.int64)
    return np.clip(ln, min(lo, L), L)


def _emotion_classes(rng: np.random.Generator, y_star: np.ndarray, unimodal: Mapping[str, np.ndarray],
                     classes: int) -> np.ndarray:
    """Nominal class labels: the sector of a circumplex-like plane in which each sample falls.

    One axis is the sentiment (the noisy standardised label), the other what audio says beyond
    vision (their unimodal sentiments' difference), each with noise; ``classes`` equal angular
    sectors of that plane are the classes. So a class needs the text-dominated sentiment and the
    audio-vision contrast at once: no single modality determines it, and the classes are not an
    ordering of one score.
    """
    u = y_star + 0.3 * rng.standard_normal(y_star.shape[0])
    v = (unimodal["audio"] - unimodal["vision"]) / np.sqrt(2.0) + 0.3 * rng.standard_normal(y_star.shape[0])
    sector = np.floor((np.arctan2(v, u) + np.pi) / (2 * np.pi / classes)).astype(np.int64)
    return np.clip(sector, 0, classes - 1)


def class_names_for(classes: int) -> tuple[str, ...]:
    """Names of the synthetic classes: the four emotions of the usual IEMOCAP set for 4 (in sector
    order: negative-calm, positive-calm, positive-aroused, negative-aroused), else ``class<k>``."""
    if classes == 4:
        return ("sad", "neutral", "happy", "angry")
    return tuple(f"class{k}" for k in range(classes))


def _split(rng: np.random.Generator, structure: str, world: dict, n: int, *, preset: str, cfg: dict,
           dims: Mapping[str, int], lens: Mapping[str, int], aligned: bool, offset: int,
           classes: int | None = None, class_rng: np.random.Generator | None = None) -> tuple[dict, dict]:
    """One split in the MMSA schema, and the generator's ground truth for tests.

    The generator gives ``y_star`` (the noisy label, standardised), ``unimodal`` (per modality a
    unit-variance sentiment a single-modality annotator would see, for SIMS) and ``y_clean`` (the
    noise-free standardised label). The truth holds ``label_clean`` (``y_clean`` on the file's label
    scale, before rounding) plus whatever the generator's ``features`` reports.
    """
    _, latents, features = _STRUCTURES[structure]
    state, y_star, unimodal, y_clean = latents(rng, world, n)

    out: dict = {}
    if preset == "sims":
        label_scale = 0.5
        y = _grid(label_scale * y_star, 0.2, -1.0, 1.0)
        for m, k in (("text", "T"), ("audio", "A"), ("vision", "V")):
            out[f"regression_labels_{k}"] = _grid(0.5 * (0.85 * unimodal[m] + 0.5 * rng.standard_normal(n)),
                                                  0.2, -1.0, 1.0)
    else:
        label_scale = 1.5
        y = _grid(label_scale * y_star, cfg["label_grid"], -3.0, 3.0)

    # Valid lengths: text tokens (with [CLS] and [SEP]); aligned audio/vision follow the words.
    t_len = _lengths(rng, n, lens["text"], _TEXT_LEN_FRAC, 4)
    if aligned:
        lengths = {"text": t_len, "audio": t_len.copy(), "vision": t_len.copy()}
    else:
        lengths = {"text": t_len,
                   "audio": _lengths(rng, n, lens["audio"], _OTHER_LEN_FRAC, 8),
                   "vision": _lengths(rng, n, lens["vision"], _OTHER_LEN_FRAC, 8)}

    feats, truth = features(rng, world, state, lengths, dims=dims, lens=lens, aligned=aligned)
    truth = {"label_clean": label_scale * y_clean, **truth}

    # COVAREP writes -inf for undefined values; sprinkle a few inside valid audio frames.
    n_inf = max(1, n // 50)
    rows = rng.choice(n, size=min(n, n_inf), replace=False)
    for i in rows:
        t = rng.integers(0, max(1, lengths["audio"][i]))
        feats["audio"][i, t, rng.integers(0, dims["audio"])] = -np.inf

    ids = np.zeros((n, 3, lens["text"]), dtype=np.int64)
    tok = rng.integers(1000, cfg["vocab"], (n, lens["text"]))
    for i in range(n):
        k = int(t_len[i])
        ids[i, 0, 0] = 101
        ids[i, 0, 1:k - 1] = tok[i, 1:k - 1]
        ids[i, 0, k - 1] = 102
        ids[i, 1, :k] = 1

    idx = np.arange(offset, offset + n)
    out.update({
        "raw_text": np.array([f"synthetic {preset} utterance {j}" for j in idx], dtype=object),
        "id": np.array([f"syn_{preset}_{j // 10:05d}$_${j % 10}" for j in idx], dtype=object),
        "text": feats["text"],
        "text_bert": ids,
        "audio": feats["audio"],
        "vision": feats["vision"],
        "regression_labels": y.astype(np.float32),
        "classification_labels": np.where(y < 0, 0, np.where(y == 0, 1, 2)).astype(np.int64),
        "annotations": np.array([("Negative", "Neutral", "Positive")[c] for c in
                                 np.where(y < 0, 0, np.where(y == 0, 1, 2))], dtype=object),
    })
    if not aligned:
        out["audio_lengths"] = lengths["audio"]
        out["vision_lengths"] = lengths["vision"]
    if classes:
        # a generator of its own, so that the rest of the file is what it is without classes
        cls = _emotion_classes(class_rng, y_star, unimodal, classes)
        names = class_names_for(classes)
        out["classification_labels"] = cls
        out["annotations"] = np.array([names[c] for c in cls], dtype=object)
    return out, truth


def _check_count(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an int; got {type(v).__name__}")
    if v < 1:
        raise ValueError(f"{name} must be >= 1; got {v}")
    return int(v)


def _override(name: str, base: Mapping[str, int], new: Mapping[str, int] | None) -> dict[str, int]:
    out = dict(base)
    for k, v in (new or {}).items():
        if k not in out:
            raise ValueError(f"{name} keys must be among {list(out)}; got {k!r}")
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}[{k!r}] must be a positive int; got {v!r}")
        out[k] = int(v)
    return out


def _settings(preset, *, n_train, n_valid, n_test, seed, aligned, dims, seq_lens, generator, classes=None) -> dict:
    """Validated, completed arguments of :func:`make_synthetic`."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}; got {preset!r}")
    if not isinstance(generator, str) or generator not in SYNTHETIC_GENERATORS:
        raise ValueError(f"generator must be one of {list(SYNTHETIC_GENERATORS)}; got {generator!r}")
    cfg = PRESETS[preset]
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    if aligned is None:
        aligned = cfg["default_aligned"]
    if aligned and cfg["aligned_lens"] is None:
        raise ValueError(f"preset {preset!r} has no aligned variant in MMSA (only unaligned_39.pkl); use aligned=False")
    sizes = [
        _check_count(name, cfg["default_sizes"][i] if v is None else v)
        for i, (name, v) in enumerate((("n_train", n_train), ("n_valid", n_valid), ("n_test", n_test)))
    ]
    dims_ = _override("dims", cfg["dims"], dims)
    lens = _override("seq_lens", cfg["aligned_lens"] if aligned else cfg["unaligned_lens"], seq_lens)
    if aligned and len(set(lens.values())) != 1:
        raise ValueError(f"aligned files have one length for all modalities; got seq_lens {lens}")
    if lens["text"] < 4:
        raise ValueError(f"seq_lens['text'] must be >= 4 ([CLS], two tokens, [SEP]); got {lens['text']}")
    if classes is not None and (isinstance(classes, bool) or not isinstance(classes, (int, np.integer))
                                or classes < 2):
        raise ValueError(f"classes must be an int >= 2 or None; got {classes!r}")
    return {"preset": preset, "seed": int(seed), "aligned": bool(aligned), "sizes": sizes, "dims": dims_,
            "seq_lens": lens, "generator": generator, "classes": None if classes is None else int(classes)}


def _generate(st: dict) -> tuple[dict, dict]:
    """The MMSA dict for validated settings, and per split the generator's ground truth."""
    preset, seed, aligned, dims, lens = st["preset"], st["seed"], st["aligned"], st["dims"], st["seq_lens"]
    # Typical valid lengths (see the length draws in _split): they set the per-frame signal scale.
    mean_len = {"text": _TEXT_LEN_FRAC * lens["text"]}
    for m in ("audio", "vision"):
        mean_len[m] = mean_len["text"] if aligned else _OTHER_LEN_FRAC * lens[m]
    world = _STRUCTURES[st["generator"]][0](np.random.default_rng([seed, 0]), dims, mean_len)
    data: dict = {}
    truth: dict = {}
    offset = 0
    for k, (name, n) in enumerate(zip(_SPLITS, st["sizes"])):
        data[name], truth[name] = _split(np.random.default_rng([seed, k + 1]), st["generator"], world, n,
                                         preset=preset, cfg=PRESETS[preset], dims=dims, lens=lens, aligned=aligned,
                                         offset=offset, classes=st.get("classes"),
                                         class_rng=np.random.default_rng([seed, 97, k + 1]))
        offset += n
    # "generator" is the tag fsrf.data.load_mmsa recognises; "structure" is left out for "factor" so
    # that its files stay byte-identical to those written before there was a second generator.
    data["config"] = {"generator": "fsrf.data.make_synthetic", "preset": preset, "seed": seed,
                      "aligned": aligned, "sizes": st["sizes"], "dims": dims, "seq_lens": lens}
    if st["generator"] != "factor":
        data["config"]["structure"] = st["generator"]
    if st.get("classes"):
        data["config"]["classes"] = st["classes"]
        data["config"]["class_names"] = list(class_names_for(st["classes"]))
    return data, truth


def _generate_with_truth(preset: str, **kwargs) -> tuple[dict, dict]:
    """Testing hook: the MMSA dict :func:`make_synthetic` would write, and per split the ground truth
    (``label_clean``; for ``"events"`` also ``window``: ``{modality: (n, 2) [start, stop)}``), which
    the file itself never contains."""
    full = {"n_train": None, "n_valid": None, "n_test": None, "seed": 0, "aligned": None, "dims": None,
            "seq_lens": None, "generator": "factor", "classes": None, **kwargs}
    return _generate(_settings(preset, **full))


def make_synthetic(preset: str, out_path: str | os.PathLike, *, n_train: int | None = None,
                   n_valid: int | None = None, n_test: int | None = None, seed: int = 0,
                   aligned: bool | None = None, dims: Mapping[str, int] | None = None,
                   seq_lens: Mapping[str, int] | None = None, generator: str = "factor",
                   classes: int | None = None) -> Path:
    """Write a synthetic MMSA feature pickle and return its path.

    Args:
        preset: ``"mosi"``, ``"mosei"`` or ``"sims"`` — sets the feature dims, padded lengths and
            label scheme of that dataset (§1.4 of the MMSA format: MOSI text 768 / audio 5 /
            vision 20; MOSEI 768 / 74 / 35; SIMS 768 / 33 / 709; aligned length 50; unaligned
            MOSI audio 375, vision 500; MOSEI 500, 500; SIMS text 39, audio 400, vision 55).
        out_path: the file to write (atomically: temp file in the same folder, fsync, rename).
        n_train, n_valid, n_test: split sizes. Defaults are small so the demo trains in minutes on
            two CPU cores: mosi 1000/200/200, mosei 1500/300/300, sims 1000/250/250. (The real
            datasets have mosi 1284/229/686, mosei 16326/1871/4659, sims 1368/456/457 samples.)
        seed: all randomness derives from it (same seed and arguments → identical file).
        aligned: ``True`` writes an ``aligned_50``-style file (all modalities 50 steps, no
            lengths), ``False`` an unaligned one with ``audio_lengths``/``vision_lengths``.
            Default: aligned for mosi/mosei, unaligned for sims (which has no aligned file).
        dims, seq_lens: per-modality overrides of feature dims / padded lengths (tests).
        generator: the data-generating structure, one of :data:`SYNTHETIC_GENERATORS`:
            ``"factor"`` (default; static factors, linear label — see this module) or ``"events"``
            (an event window marked in the text, a nonlinear label with a text × audio
            interaction, heavy-tailed label noise — see :mod:`fsrf.data.synthetic_events`) or
            ``"content"`` (words with order-dependent negation, a brief expression, a tone
            contour, speaker offsets — see :mod:`fsrf.data.synthetic_content`). All three write
            the same schema, dims, lengths and label grids.
        classes: ``None`` (default) keeps MMSA's 3-class ``classification_labels`` (negative,
            neutral, positive from the label). An int C >= 2 writes C nominal classes instead
            (:func:`_emotion_classes`: sectors of the plane of sentiment and audio-vision contrast;
            for 4 they are named sad, neutral, happy, angry), with their names in ``annotations``
            and ``config["class_names"]``: a class-labelled file for a classifier
            (``FSRFObjective(task="classification")``). The regression labels stay as they are.

    The top-level ``"config"`` entry records the generator tag and its settings (MMSA loaders ignore
    it; :func:`fsrf.data.load_mmsa` uses it to report the preset). ``config["structure"]`` names the
    generator when it is not ``"factor"``; ``"factor"`` files carry no such key and are
    byte-identical to those of earlier versions.
    """
    st = _settings(preset, n_train=n_train, n_valid=n_valid, n_test=n_test, seed=seed, aligned=aligned,
                   dims=dims, seq_lens=seq_lens, generator=generator, classes=classes)
    out_path = Path(os.fspath(out_path))
    folder = out_path.parent if str(out_path.parent) else Path(".")
    if not folder.is_dir():  # fail before spending time generating
        raise FileNotFoundError(f"output folder does not exist: {folder}")
    data, _ = _generate(st)
    return atomic_write(out_path, lambda fh: pickle.dump(data, fh, protocol=4))
