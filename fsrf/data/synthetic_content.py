"""The ``"content"`` generator of :func:`fsrf.data.make_synthetic`: frames that vary with content.

:mod:`fsrf.data.synthetic` assembles the file (schema, lengths, ``-inf``, ids, label grids). Where
``"factor"`` draws every frame from one per-sample mean and ``"events"`` marks one window, here
each modality's frames carry its evidence the way real streams do:

* **text** is a sequence of words from a fixed vocabulary: fillers, sentiment words and a negator.
  A sentiment word's lexical polarity is flipped by a negator right before it, so the sentence's
  sentiment depends on word order (about a third of the sentiment words are negated): a bag of
  the word vectors sees the lexical polarities and that negators occur, not which word they
  negate.
* **vision** shows a brief expression: 2-4 consecutive frames whose expression vector carries the
  face's sentiment (1.5 times the axis), while every frame moves along the same axis by chance
  (sd 0.4 times the axis). A mean over all frames dilutes the expression by the frame count; the
  frames at the expression stand out.
* **audio** carries a tone contour: a rise or fall over the utterance (``sin`` from -1 to 1, plus
  0.2) whose sign and size are the voice's sentiment, on top of pitch jitter; the mean over
  frames keeps a fifth of it, the slope all of it.
* every sample has a **speaker** (40 per file, shared by the splits) whose constant offset in the
  audio and vision frames is larger than the signal: label-free nuisance a model must see past
  (the words carry none).

Latents (per sample; all draws seeded)::

    s ~ N(0, 1)                               shared sentiment
    t, a, v ~ N(0, 1)                         what only the words, the voice, the face say
    text sentiment   tau = 0.75 s + 0.66 t    (unit variance; also SIMS's unimodal T label)
    voice sentiment  alpha = 0.6 s + 0.8 a
    face sentiment   phi = 0.6 s + 0.8 v
    y* = (0.55 s + 0.45 t + 0.35 v + 0.30 a + 0.35 eps) / norm,   eps ~ N(0, 1)

Words: ``k ~ 1 + Poisson(1)`` sentiment words (at most the inner length less one), each with
strength ``|tau| / k + |N(0, 0.1)|`` and effective sign ``sign(tau)`` (5 % flipped: mixed
sentences), lexical sign = effective sign, except after a negator (probability 0.35), where
it is the opposite. Word vector = ``lexical sign * strength * u_pol + e_word`` (``e_word`` the
word's identity, unit norm, 12 sentiment words per sign), negator = ``u_neg + e_neg``, filler =
one of 200 identity vectors; plus ``N(0, 0.3^2)`` per dimension of context noise.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["world", "latents", "features"]

_MODS = ("text", "audio", "vision")
_N_SPEAKERS = 40
_SPEAKER_SD = 1.5          # per-dimension sd of a speaker's offset, relative to the frame noise
_N_FILLERS, _N_SENT_WORDS = 200, 12
_P_NEG = 0.35
_P_MIXED = 0.05
_CONTEXT_SD = 0.3
_EXPR_FRAMES = (2, 4)
# Per-frame signal amplitudes (the frame noise has unit sd per dimension).
_EXPR_GAIN, _TONE_GAIN = 1.5, 0.2
# sd of every vision frame's movement along the expression axis (in units of the axis)
_FACE_MOTION = 0.4
_FEAT_MEAN = {"text": 0.0, "audio": 0.5, "vision": 0.2}
# label weights on s, t, v, a and the noise
_W = {"s": 0.55, "t": 0.45, "v": 0.35, "a": 0.30, "eps": 0.35}
_CHUNK = 128


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def world(rng: np.random.Generator, dims: Mapping[str, int], mean_len: Mapping[str, float]) -> dict:
    """Parameters shared by all splits: vocabulary, expression and tone directions, speakers."""
    dt, da, dv = dims["text"], dims["audio"], dims["vision"]
    w: dict = {"dims": dict(dims)}
    w["u_pol"] = _unit_rows(rng, 1, dt)[0] * np.sqrt(dt) / 2.0
    w["u_neg"] = _unit_rows(rng, 1, dt)[0] * np.sqrt(dt) / 2.0
    scale = np.sqrt(dt) / 2.0  # a word's identity is as strong as its polarity
    w["fillers"] = _unit_rows(rng, _N_FILLERS, dt) * scale
    w["sent_words"] = _unit_rows(rng, 2 * _N_SENT_WORDS, dt) * scale
    w["neg_word"] = _unit_rows(rng, 1, dt)[0] * scale
    w["u_expr"] = _unit_rows(rng, 1, dv)[0] * np.sqrt(dv) / 2.0
    w["u_tone"] = _unit_rows(rng, 1, da)[0] * np.sqrt(da) / 2.0
    # a speaker shows in the voice and the face, not in the words
    w["speaker"] = {m: rng.standard_normal((_N_SPEAKERS, dims[m])) * _SPEAKER_SD for m in ("audio", "vision")}
    w["scale"] = {m: (np.exp(rng.uniform(-0.5, 0.5, dims[m])) if m != "text" else np.ones(dims[m])).astype(np.float32)
                  for m in _MODS}
    w["mu"] = {m: (rng.standard_normal(dims[m]) * _FEAT_MEAN[m]).astype(np.float32) for m in _MODS}
    w["y_norm"] = float(np.sqrt(sum(v ** 2 for v in _W.values())))
    return w


def latents(rng: np.random.Generator, w: dict, n: int):
    """``(state, y_star, unimodal, y_clean)`` of ``n`` samples (see the module docstring)."""
    s, t, a, v, eps = (rng.standard_normal(n) for _ in range(5))
    tau = 0.75 * s + np.sqrt(1 - 0.75 ** 2) * t
    alpha = 0.6 * s + 0.8 * a
    phi = 0.6 * s + 0.8 * v
    clean = (_W["s"] * s + _W["t"] * t + _W["v"] * v + _W["a"] * a) / w["y_norm"]
    y_star = clean + _W["eps"] * eps / w["y_norm"]
    speaker = rng.integers(0, _N_SPEAKERS, n)
    unimodal = {"text": tau, "audio": alpha, "vision": phi}
    return {"tau": tau, "alpha": alpha, "phi": phi, "speaker": speaker}, y_star, unimodal, clean


def _sentence(rng: np.random.Generator, w: dict, tau: float, inner: int) -> tuple[np.ndarray, int]:
    """The inner token vectors (inner, d) of one sentence, and how many sentiment words it negates."""
    d = w["u_pol"].shape[0]
    vecs = w["fillers"][rng.integers(0, _N_FILLERS, inner)].copy()
    k = int(min(1 + rng.poisson(1.0), max(1, inner // 2)))
    slots = np.sort(rng.choice(np.arange(1, inner) if inner > 1 else np.arange(inner), size=min(k, max(1, inner - 1)),
                               replace=False))
    negated = 0
    sign = 1.0 if tau >= 0 else -1.0
    for pos in slots:
        eff = -sign if rng.random() < _P_MIXED else sign
        strength = abs(tau) / len(slots) + abs(rng.normal(0.0, 0.1))
        neg = pos >= 1 and rng.random() < _P_NEG and not np.any(slots == pos - 1)
        lex = -eff if neg else eff
        word = rng.integers(0, _N_SENT_WORDS) + (0 if lex > 0 else _N_SENT_WORDS)
        vecs[pos] = lex * strength * w["u_pol"] + w["sent_words"][word]
        if neg:
            vecs[pos - 1] = w["u_neg"] + w["neg_word"]
            negated += 1
    return vecs + rng.standard_normal((inner, d)) * _CONTEXT_SD, negated


def features(rng: np.random.Generator, w: dict, state: dict, lengths: Mapping[str, np.ndarray], *,
             dims: Mapping[str, int], lens: Mapping[str, int], aligned: bool):
    """Frame features ``{modality: (n, L, d) float32}`` and the truth: the expression frames
    ``"expression"`` (n, 2) ``[start, stop)``, the number of negated words ``"negated"`` (n,) and
    the speaker ``"speaker"`` (n,)."""
    n = state["tau"].shape[0]
    spk = state["speaker"]
    feats = {}
    # text: [CLS] and [SEP] are fixed vectors (the filler of index 0 and 1), words in between
    L, d = lens["text"], dims["text"]
    x = np.zeros((n, L, d), dtype=np.float32)
    negated = np.zeros(n, dtype=np.int64)
    for i in range(n):
        k = int(lengths["text"][i])
        row = np.empty((k, d))
        row[0], row[k - 1] = w["fillers"][0], w["fillers"][1]
        if k > 2:
            row[1:k - 1], negated[i] = _sentence(rng, w, float(state["tau"][i]), k - 2)
        x[i, :k] = (w["mu"]["text"] + w["scale"]["text"] * row).astype(np.float32)
    feats["text"] = x
    # vision: neutral frames, a brief expression at a random place
    L, d = lens["vision"], dims["vision"]
    ln = lengths["vision"].astype(np.int64)
    width = np.minimum(rng.integers(_EXPR_FRAMES[0], _EXPR_FRAMES[1] + 1, n), ln)
    start = np.floor(rng.random(n) * (ln - width + 1)).astype(np.int64)
    t = np.arange(L)[None, :]
    x = np.empty((n, L, d), dtype=np.float32)
    for c0 in range(0, n, _CHUNK):
        e = slice(c0, min(n, c0 + _CHUNK))
        on = ((t >= start[e, None]) & (t < start[e, None] + width[e, None])).astype(np.float32)
        motion = _FACE_MOTION * rng.standard_normal((e.stop - c0, L, 1))
        blk = ((on[..., None] * _EXPR_GAIN * state["phi"][e, None, None] + motion) * w["u_expr"]
               + w["speaker"]["vision"][spk[e]][:, None, :]
               + rng.standard_normal((e.stop - c0, L, d), dtype=np.float32))
        blk = w["mu"]["vision"] + w["scale"]["vision"] * blk
        x[e] = blk * (t < ln[e, None])[..., None]
    feats["vision"] = x
    # audio: a tone contour from -1 to +1 over the utterance, scaled by the voice's sentiment
    L, d = lens["audio"], dims["audio"]
    ln = lengths["audio"].astype(np.int64)
    t = np.arange(L)[None, :]
    x = np.empty((n, L, d), dtype=np.float32)
    for c0 in range(0, n, _CHUNK):
        e = slice(c0, min(n, c0 + _CHUNK))
        pos = (t + 0.5) / np.maximum(ln[e, None], 1)                       # (c, L) in (0, 1)
        contour = np.sin(np.pi * (pos - 0.5)) + 0.2                        # mean over frames 0.2, rising
        blk = ((_TONE_GAIN * state["alpha"][e, None] * contour)[..., None] * w["u_tone"]
               + w["speaker"]["audio"][spk[e]][:, None, :]
               + rng.standard_normal((e.stop - c0, L, d), dtype=np.float32))
        blk = w["mu"]["audio"] + w["scale"]["audio"] * blk
        x[e] = blk * (t < ln[e, None])[..., None]
    feats["audio"] = x
    return feats, {"expression": np.stack([start, start + width], 1), "negated": negated, "speaker": spk}
