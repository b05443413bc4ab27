"""The ``"events"`` generator of :func:`fsrf.data.make_synthetic`: a marked event, a nonlinear label.

:mod:`fsrf.data.synthetic` assembles the file, so the schema, dims, lengths, ``-inf`` values, ids and
label grids are those of the ``"factor"`` generator. The problem is different in structure: the
evidence sits in a short event window among distractors, the label is a saturated nonlinear
function with a cross-modal interaction, the modalities are informative in another order, and the
label noise is heavy-tailed. This module only maps latents to a standardised label and to frames.

Latents (per sample ``i``; all draws seeded)::

    s    ~ N(0, I_3)                          shared sentiment, visible in every modality
    t    ~ N(0, I_2)                          literal sentiment of the words (text only)
    q, a ~ N(0, 1)                            prosodic incongruence, vocal tone (audio only)
    v    = rho C s + sqrt(1 - rho^2) u        facial expression (vision only; rho = 0.3, u ~ N(0, I_2))
    n_m  ~ N(0, I_2)                          nuisance (speaker / recording), label-free

Label::

    g  = tanh(3 (q + 0.85))                   sincerity gate: g < 0 (irony) for about 20 % of samples
    h  = w_s.s + g (w_t.t) + w_v.v + w_a a    |w_s|^2 = .35, |w_t|^2 = .30, |w_v|^2 = .25, w_a^2 = .10
    c  = (tanh(1.2 h) - E[.]) / SD[.]         saturated; the moments are estimated once per seed
    y* = (sqrt(1 - .08) c + eps + o delta) / sqrt(1 + .03 E[delta^2])
         eps = sqrt(.08 / 3) T_3              Student-t with 3 degrees of freedom, variance .08
         o ~ Bernoulli(.03), delta = +-U(1, 2)  annotator-disagreement outliers

So irony makes positive words with incongruent prosody negative: the text's own term enters
linearly only through E[g] = 0.59 (E[g^2] = 0.82), and its sign flips on the ironic samples.

Variance budget of ``y*`` (unit variance): noise 14 % (Student-t 7.5 %, outliers 6.5 %), clean
label 86 %. Inside ``h``: shared 35 %, gated text 25 %, vision 25 %, audio tone 10 % (the
shared/vision covariance adds about +-10 % depending on the seed). ``h`` explains 91 % of the clean
label (saturation); a linear function of all latents only 77 % (100 % for ``"factor"``); adding
the product ``g t`` restores the 91 %. Dropping a modality's latents from that linear fit costs
10 % (text: the words; audio: tone, and the gate for any nonlinear model) to 24 % (vision).

Frames (modality ``m``, valid frame ``j``; zero padding)::

    x_m[j] = mu_m + sc_m * ( b(j) (P_m s + Q_m z_m + k_m) + 0.3 out(j) (P_m s + Q_m z_m)
                             + sum_{r=1,2} b_r(j) (P_m s'_r + Q_m z'_r) + R_m n_m + e_j )

with ``z_text = t``, ``z_audio = (q, a)`` (the ``q`` column 2.5 times as strong: irony is salient
even where the voice says little about sentiment), ``z_vision = v``; ``b`` a smooth bump of mean
square 1 over the event window and ``out = 1`` outside it (a weak leak of the signal); ``k_m`` a
fixed marker direction, of norm 3 in the text (unmistakable on every event token) and 1 in audio
and vision (a weak per-frame cue that attention can key on); two distractor bursts ``b_r`` of the
window's width and the same magnitude at random positions outside it, carrying fresh label-free
latents ``s'_r, z'_r ~ N(0, I)``; ``e_j ~ N(0, I)``. Mean pooling therefore mixes the event with
distractors of equal strength, while pooling at the event (found through the text marker) does not.

Event window: text tokens ``[w0, w0 + w)``, ``w = clip(round(U(.12, .30) (len - 2)), 2, len - 2)``,
never covering ``[CLS]``/``[SEP]``, ``w0`` uniform. Audio and vision use the same frames in aligned
files and ``[floor(w0 l_m / len), ceil((w0 + w) l_m / len))`` (at least one frame) in unaligned
ones, so the event happens at the same time in every modality.

Informativeness: the per-frame SNR of one latent direction is ``snr_m d / (d + 16) / r_m`` with
``snr`` text 5, audio 2, vision 12, ``d`` the feature dim and ``r_m`` the frames per text token
(1 when aligned; an event of a given duration is then equally informative at any frame rate).
Vision is strongest, text medium, audio weak; the presets differ only through their dims (MOSI's
5-dim audio is the weakest stream, SIMS's 709-dim vision the strongest).

What a linear model sees (ridge on pooled features, 2000 / 1000 samples, small dims; seeds 0-7):
R^2 0.25-0.42 with masked mean pooling (``"factor"``: 0.69-0.85), 0.49-0.62 pooling only the event
window; products of text and audio window features lower the MAE further, text x vision
products do not; removing any modality raises the MAE; dropping frames raises it gradually;
the label residual has excess kurtosis about 9 (Gaussian: 0). ``tests/test_synthetic_events.py``
checks these.

SIMS unimodal labels are what an annotator of one modality perceives: the literal words (no irony
flip) for T, shared + tone for A, shared + face for V.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

__all__ = ["world", "latents", "features"]

_MODS = ("text", "audio", "vision")
_K_SHARED = 3
_K_SPEC = {"text": 2, "audio": 2, "vision": 2}  # audio: [incongruence q, tone a]
_K_NUIS = 2
# Squared norms of the label weights inside the saturation (the budget of h before gating).
_W2_SHARED = 0.35
_W2_SPEC = {"text": 0.30, "audio": 0.10, "vision": 0.25}
_GATE_SHIFT, _GATE_SLOPE = 0.85, 3.0
_KAPPA = 1.2
_RHO_V = 0.3
# Label noise: Student-t with _NU degrees of freedom (unit variance, then scaled), plus a fraction
# of annotator-disagreement outliers shifted by +-U(_OUT_LO, _OUT_HI) standard deviations.
_NOISE_VAR = 0.08
_NU = 3.0
_P_OUT, _OUT_LO, _OUT_HI = 0.03, 1.0, 2.0
# Per-frame SNR of one latent direction for a very wide feature; d / (d + _D_HALF) of it at dim d.
_SNR = {"text": 5.0, "audio": 2.0, "vision": 12.0}
_D_HALF = 16.0
# Amplitude of the incongruence cue relative to audio's other directions: prosodic irony is salient
# even where the voice says little about sentiment itself.
_GATE_GAIN = 2.5
_MARK = {"text": 3.0, "audio": 1.0, "vision": 1.0}
_LEAK = 0.3
_N_BURSTS = 2
_WIDTH_FRAC = (0.12, 0.30)
_FEAT_MEAN = {"text": 0.0, "audio": 0.5, "vision": 0.2}
_N_MC = 1 << 16
_CHUNK = 128


def _unit(rng: np.random.Generator, k: int) -> np.ndarray:
    v = rng.standard_normal(k)
    return v / np.linalg.norm(v)


def _gate(q: np.ndarray) -> np.ndarray:
    return np.tanh(_GATE_SLOPE * (q + _GATE_SHIFT))


def _h(w: dict, s: np.ndarray, spec: Mapping[str, np.ndarray]) -> np.ndarray:
    q, a = spec["audio"][:, 0], spec["audio"][:, 1]
    return (s @ w["a"] + _gate(q) * (spec["text"] @ w["b"]["text"]) + spec["vision"] @ w["b"]["vision"]
            + a * w["b"]["audio"])


def _draw(rng: np.random.Generator, w: dict, n: int) -> tuple[np.ndarray, dict]:
    s = rng.standard_normal((n, _K_SHARED))
    spec = {"text": rng.standard_normal((n, _K_SPEC["text"])),
            "audio": rng.standard_normal((n, _K_SPEC["audio"])),
            "vision": _RHO_V * s @ w["C_v"].T + np.sqrt(1 - _RHO_V**2) * rng.standard_normal((n, _K_SPEC["vision"]))}
    return s, spec


def world(rng: np.random.Generator, dims: Mapping[str, int], mean_len: Mapping[str, float]) -> dict:
    """Parameters shared by all splits: label weights, projections, markers, label normalisation.

    ``mean_len``: the typical number of valid frames per modality (it sets the frame rate).
    """
    w: dict = {"b": {}, "P": {}, "Q": {}, "R": {}, "mark": {}, "scale": {}, "mu": {}}
    w["a"] = _unit(rng, _K_SHARED) * np.sqrt(_W2_SHARED)
    w["b"]["text"] = _unit(rng, _K_SPEC["text"]) * np.sqrt(_W2_SPEC["text"])
    w["b"]["vision"] = _unit(rng, _K_SPEC["vision"]) * np.sqrt(_W2_SPEC["vision"])
    w["b"]["audio"] = float(np.sqrt(_W2_SPEC["audio"]))
    c = rng.standard_normal((_K_SPEC["vision"], _K_SHARED))
    w["C_v"] = c / np.linalg.norm(c, axis=1, keepdims=True)
    for m in _MODS:
        d = dims[m]
        # Frames per text token: at a higher frame rate each frame carries proportionally less,
        # so that a window of given duration is equally informative in aligned and unaligned files.
        rate = max(mean_len[m], 1.0) / max(mean_len["text"], 1.0)
        c_sig = np.sqrt(_SNR[m] * d / (d + _D_HALF) / rate / d)
        w["P"][m] = rng.standard_normal((d, _K_SHARED)) * c_sig
        w["Q"][m] = rng.standard_normal((d, _K_SPEC[m])) * c_sig
        if m == "audio":
            w["Q"][m][:, 0] *= _GATE_GAIN
        w["R"][m] = rng.standard_normal((d, _K_NUIS)) * c_sig
        w["mark"][m] = _unit(rng, d) * _MARK[m]
        w["scale"][m] = (np.exp(rng.uniform(-0.7, 0.7, d)) if m != "text" else np.full(d, 1.0)).astype(np.float32)
        w["mu"][m] = (rng.standard_normal(d) * _FEAT_MEAN[m]).astype(np.float32)
    # The saturated label has no closed-form moments: estimate them once, from the world's stream,
    # so every split is standardised identically.
    s, spec = _draw(rng, w, _N_MC)
    y = np.tanh(_KAPPA * _h(w, s, spec))
    w["y_mean"], w["y_sd"] = float(y.mean()), float(y.std())
    e_delta2 = (_OUT_HI**3 - _OUT_LO**3) / (3 * (_OUT_HI - _OUT_LO))
    w["y_norm"] = float(np.sqrt(1.0 + _P_OUT * e_delta2))
    a_v = w["a"] + _RHO_V * w["C_v"].T @ w["b"]["vision"]
    w["uni_sd"] = {"text": np.sqrt(_W2_SHARED + _W2_SPEC["text"]),
                   "audio": np.sqrt(_W2_SHARED + _W2_SPEC["audio"]),
                   "vision": np.sqrt(float(a_v @ a_v) + (1 - _RHO_V**2) * _W2_SPEC["vision"])}
    return w


def latents(rng: np.random.Generator, w: dict, n: int):
    """Latents of ``n`` samples: ``(state, y_star, unimodal, y_clean)``.

    ``y_star`` is the noisy standardised label, ``y_clean`` its noise-free part (so ``y_star -
    y_clean`` is the label noise), ``unimodal`` per modality the unit-variance sentiment that an
    annotator of that modality alone would perceive (the text's is literal: no sarcasm flip).
    """
    s, spec = _draw(rng, w, n)
    nu = {m: rng.standard_normal((n, _K_NUIS)) for m in _MODS}
    clean = (np.tanh(_KAPPA * _h(w, s, spec)) - w["y_mean"]) / w["y_sd"]
    eps = np.sqrt(_NOISE_VAR * (_NU - 2) / _NU) * rng.standard_t(_NU, n)
    outlier = rng.random(n) < _P_OUT
    delta = np.where(rng.random(n) < 0.5, -1.0, 1.0) * rng.uniform(_OUT_LO, _OUT_HI, n)
    y_clean = np.sqrt(1 - _NOISE_VAR) * clean / w["y_norm"]
    y_star = y_clean + (eps + outlier * delta) / w["y_norm"]
    shared = s @ w["a"]
    unimodal = {"text": (shared + spec["text"] @ w["b"]["text"]) / w["uni_sd"]["text"],
                "audio": (shared + spec["audio"][:, 1] * w["b"]["audio"]) / w["uni_sd"]["audio"],
                "vision": (shared + spec["vision"] @ w["b"]["vision"]) / w["uni_sd"]["vision"]}
    return {"s": s, "spec": spec, "nu": nu}, y_star, unimodal, y_clean


def _windows(rng: np.random.Generator, lengths: Mapping[str, np.ndarray], aligned: bool) -> dict:
    k = lengths["text"].astype(np.int64)
    inner = k - 2  # the event never covers [CLS] or [SEP]
    n = len(k)
    width = np.clip(np.round(inner * rng.uniform(*_WIDTH_FRAC, n)).astype(np.int64), 2, inner)
    start = 1 + np.floor(rng.random(n) * (inner - width + 1)).astype(np.int64)
    win = {"text": np.stack([start, start + width], 1)}
    for m in ("audio", "vision"):
        if aligned:
            win[m] = win["text"].copy()
            continue
        ln = lengths[m].astype(np.int64)
        a0 = np.minimum(np.floor(start * ln / k).astype(np.int64), ln - 1)
        a1 = np.clip(np.ceil((start + width) * ln / k).astype(np.int64), a0 + 1, ln)
        win[m] = np.stack([a0, a1], 1)
    return win


def _bump(pos: np.ndarray, width: np.ndarray) -> np.ndarray:
    # Smooth onset and offset with mean square 1 over the window (one frame: constant 1).
    inside = (pos >= 0) & (pos < width)
    norm = np.where(width > 1, np.sqrt(2.0), 1.0)
    return np.where(inside, norm * np.sin(np.pi * (pos + 0.5) / np.maximum(width, 1)), 0.0)


def features(rng: np.random.Generator, w: dict, state: dict, lengths: Mapping[str, np.ndarray], *,
             dims: Mapping[str, int], lens: Mapping[str, int], aligned: bool):
    """Frame features ``{modality: (n, L, d) float32}`` and the truth ``{"window": {modality: (n, 2)}}``."""
    s, spec, nu = state["s"], state["spec"], state["nu"]
    n = s.shape[0]
    win = _windows(rng, lengths, aligned)
    feats = {}
    for m in _MODS:
        L, d = lens[m], dims[m]
        w0, w1 = win[m][:, 0], win[m][:, 1]
        width = w1 - w0
        comp = lengths[m] - width
        b0 = rng.integers(0, np.maximum(1, comp - width + 1)[:, None], (n, _N_BURSTS))
        fake_s = rng.standard_normal((n, _N_BURSTS, _K_SHARED))
        fake_z = rng.standard_normal((n, _N_BURSTS, _K_SPEC[m]))
        sig = s @ w["P"][m].T + spec[m] @ w["Q"][m].T                                     # (n, d)
        fake = fake_s @ w["P"][m].T + fake_z @ w["Q"][m].T                                # (n, B, d)
        vec = np.concatenate([sig[:, None], np.broadcast_to(w["mark"][m], (n, 1, d)), fake,
                              (nu[m] @ w["R"][m].T)[:, None]], 1).astype(np.float32)     # (n, 3 + B, d)
        t = np.arange(L)[None, :]
        x = np.empty((n, L, d), dtype=np.float32)
        for c0 in range(0, n, _CHUNK):  # chunks keep float temporaries small
            e = slice(c0, min(n, c0 + _CHUNK))
            wid = width[e, None]
            env = _bump(t - w0[e, None], wid)
            outside = ~((t >= w0[e, None]) & (t < w1[e, None]))
            cpos = np.where(t >= w1[e, None], t - wid, t)   # frame index with the window cut out
            coef = [env + _LEAK * outside, env]
            coef += [outside * _bump(cpos - b0[e, j, None], wid) for j in range(_N_BURSTS)]
            coef.append(np.ones_like(env))
            coef = np.stack(coef, -1).astype(np.float32)                                 # (c, L, 3 + B)
            blk = coef @ vec[e] + rng.standard_normal((e.stop - c0, L, d), dtype=np.float32)
            blk = w["mu"][m] + w["scale"][m] * blk
            blk *= (t < lengths[m][e, None])[..., None]
            x[e] = blk
        feats[m] = x
    return feats, {"window": win}
