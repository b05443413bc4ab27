"""Missing-data protocols: frame dropping, whole-modality removal, training samplers.

Two levels:

**Dataset level (numpy)** — functions take ``features = {modality: array}`` and
``masks = {modality: (N, L) bool}`` (True = valid and observed, as in
:class:`fsrf.data.MMSASplit`) and return *new* arrays ``(features, masks)``; inputs are never
modified.

* :func:`drop_frames` — intra-modal: every observed frame/token dropped independently with rate
  ``r`` (scalar, per modality, or per sample).
* :func:`remove_modalities` — inter-modal: keep only the modalities of an availability pattern,
  one of :data:`PATTERNS` (``"l"``, ``"a"``, ``"v"``, ``"la"``, ``"lv"``, ``"av"``) or the complete
  ``"lav"``; ``l`` = text, ``a`` = audio, ``v`` = vision.
* :func:`lnln_drop` / :class:`LNLNSampler` — the LNLN training sampler: per sample and modality
  ``r ~ U(0, 1)``, half of the samples complete, redrawn every epoch.
* :func:`tfr_drop` — the MMSA / TFR-Net fixed-rate mode, bit-compatible with their
  ``generate_m`` (``np.random.seed(s)``; ``mask = (uniform > r) * input_mask``; same for every
  split).
* :func:`corrupt_split` — an evaluation copy of an :class:`~fsrf.data.MMSASplit` at rate ``r`` and
  pattern ``p``.

What a dropped element becomes:

* audio/vision frames and precomputed text features: zero vectors; the mask bit is cleared.
* BERT ids (``text_bert``, ``(N, 3, L)`` int arrays): the id becomes ``[UNK]`` (100); ``[CLS]`` (position
  0) and ``[SEP]`` (last valid position) are kept; the attention-mask and segment rows are
  unchanged (MMSA/TFR-Net/LNLN convention). The returned mask marks the replaced tokens False.
  For precomputed features there are no special tokens to protect: every token vector is a
  contextual BERT output of the *whole* sentence, so keeping ``[CLS]`` would leak it; all tokens are
  dropped alike. (Corrupting precomputed features is thus a weaker perturbation than corrupting
  ids and re-encoding — use ``text="bert_ids"`` with a local BERT for strict comparability.)

Randomness: every modality draws from its own generator,
``np.random.default_rng([seed, crc32(modality name), stream, epoch])``, so adding a modality or
changing another modality's rate does not change a modality's mask. Evaluation masks default to
:data:`DEFAULT_EVAL_SEED` = 1111 (LNLN's convention) and are independent of the model seed, so
every model is tested on the same corrupted data.

**Tensor level (torch)** — :func:`corrupt` builds the second, further-corrupted view that FSRF's
DAS module trains on (``docs/FSRF_METHOD.md`` §4): drops extra frames and, with probability
``inter_prob``, one or more whole modalities per sample; differentiable w.r.t. the inputs.
"""

from __future__ import annotations

import numbers
import zlib
from typing import Any, Mapping

import numpy as np
import torch

from fsrf.runtime.checks import check_generator, check_modality_batch

__all__ = ["MODALITY_LETTERS", "PATTERNS", "ALL_PATTERNS", "COMPLETE", "UNK_ID", "CLS_ID", "SEP_ID",
           "DEFAULT_EVAL_SEED", "pattern_modalities", "drop_frames", "remove_modalities", "lnln_rates",
           "lnln_drop", "LNLNSampler", "tfr_drop", "corrupt_split", "corrupt"]

#: Pattern letters -> modality names.
MODALITY_LETTERS = {"l": "text", "a": "audio", "v": "vision"}
#: The six incomplete availability patterns of three modalities, in the order papers report them.
PATTERNS = ("l", "a", "v", "la", "lv", "av")
#: The complete pattern.
COMPLETE = "lav"
#: Incomplete patterns followed by the complete one.
ALL_PATTERNS = PATTERNS + (COMPLETE,)
#: Special token ids shared by bert-base-uncased and bert-base-chinese.
PAD_ID, UNK_ID, CLS_ID, SEP_ID = 0, 100, 101, 102
#: Seed of evaluation masks (independent of the model seed).
DEFAULT_EVAL_SEED = 1111

_STREAM_EVAL, _STREAM_LNLN_RATE, _STREAM_LNLN_MASK = 0, 1, 2


# ------------------------------------------------------------------------------------ helpers
def pattern_modalities(pattern: str) -> tuple[str, ...]:
    """Modality names available under ``pattern`` (letters in any order, e.g. ``"lv"`` or ``"vl"``)."""
    if not isinstance(pattern, str) or not pattern:
        raise ValueError(f"pattern must be a non-empty string of the letters l (text), a (audio), v (vision), "
                         f"one of {ALL_PATTERNS}; got {pattern!r}")
    letters = pattern.lower()
    if any(c not in MODALITY_LETTERS for c in letters) or len(set(letters)) != len(letters):
        raise ValueError(f"pattern must be one of {ALL_PATTERNS} (l = text, a = audio, v = vision, each at most "
                         f"once); got {pattern!r}")
    return tuple(MODALITY_LETTERS[c] for c in "lav" if c in letters)


def _mod_id(name: str) -> int:
    return zlib.crc32(name.encode("utf-8"))


def _rng(seed: int, name: str, stream: int, epoch: int = 0) -> np.random.Generator:
    return np.random.default_rng([int(seed), _mod_id(name), stream, int(epoch)])


def _check_seed(seed: Any, name: str = "seed") -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"{name} must be a non-negative int; got {seed!r}")
    return int(seed)


def _check_rate_scalar(r: Any, name: str) -> float:
    if isinstance(r, bool) or not isinstance(r, numbers.Real):
        raise ValueError(f"{name} must be a number in [0, 1]; got {r!r}")
    r = float(r)
    if not 0.0 <= r <= 1.0:  # also rejects NaN
        raise ValueError(f"{name} must be in [0, 1]; got {r}")
    return r


def _rate_for(rate: Any, name: str, n: int) -> np.ndarray:
    """Per-sample rates (n,) for modality ``name`` from a scalar, per-sample array or dict of either."""
    if isinstance(rate, Mapping):
        if name not in rate:
            raise ValueError(f"rate has no entry for modality {name!r} (keys: {sorted(rate)})")
        rate, label = rate[name], f"rate[{name!r}]"
    else:
        label = "rate"
    if isinstance(rate, (np.ndarray, list, tuple)):
        r = np.asarray(rate, dtype=np.float64)
        if r.shape != (n,):
            raise ValueError(f"{label} must be a number or an array of shape ({n},) (one rate per sample); got "
                             f"shape {r.shape}")
        if not np.all((r >= 0) & (r <= 1)):
            raise ValueError(f"{label} must lie in [0, 1]; got values in [{np.nanmin(r)}, {np.nanmax(r)}]")
        return r
    return np.full(n, _check_rate_scalar(rate, label))


def _is_ids(x: np.ndarray) -> bool:
    return x.ndim == 3 and x.shape[1] == 3 and np.issubdtype(x.dtype, np.integer)


def _check_arrays(features: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]) -> None:
    if not isinstance(features, Mapping) or not features:
        raise ValueError("features must be a non-empty dict {modality: array}")
    if not isinstance(masks, Mapping) or set(masks) != set(features):
        got = sorted(masks) if isinstance(masks, Mapping) else type(masks).__name__
        raise ValueError(f"masks must be a dict with the same modalities as features ({sorted(features)}); got {got}")
    n = None
    for m, x in features.items():
        x = np.asarray(x)
        k = np.asarray(masks[m])
        if x.ndim != 3:
            raise ValueError(f"features[{m!r}] must be 3-D ((N, L, D) features or (N, 3, L) BERT ids); got {x.shape}")
        seq = x.shape[2] if _is_ids(x) else x.shape[1]
        if k.dtype != np.bool_ or k.shape != (x.shape[0], seq):
            raise ValueError(f"masks[{m!r}] must be a bool array of shape {(x.shape[0], seq)}; got {k.dtype} {k.shape}")
        if n is None:
            n = x.shape[0]
        elif x.shape[0] != n:
            raise ValueError(f"all modalities must have the same number of samples; features[{m!r}] has "
                             f"{x.shape[0]}, expected {n}")


def _special_positions(ids: np.ndarray) -> np.ndarray:
    """(N, L) bool: [CLS] at 0 and [SEP] at the last attended position (the MMSA/TFR rule)."""
    attn = ids[:, 1, :] > 0
    n_valid = attn.sum(axis=1)
    sp = np.zeros(attn.shape, dtype=bool)
    has = n_valid > 0
    sp[has, 0] = True
    sp[np.nonzero(has)[0], n_valid[has] - 1] = True
    return sp


def _apply(x: np.ndarray, mask: np.ndarray, keep: np.ndarray, *, keep_special: bool) -> tuple[np.ndarray, np.ndarray]:
    """New (x, mask) with frames where ``keep`` is False dropped (mask bits cleared)."""
    if _is_ids(x):
        special = _special_positions(x) if keep_special else np.zeros(mask.shape, dtype=bool)
        new_mask = mask & (keep | special)
        attn = x[:, 1, :] > 0
        to_unk = attn & ~new_mask & ~special
        out = x.copy()
        out[:, 0, :] = np.where(to_unk, np.asarray(UNK_ID, dtype=x.dtype), x[:, 0, :])
        return out, new_mask
    new_mask = mask & keep
    out = np.where(new_mask[..., None], x, np.zeros((), dtype=x.dtype))
    return out, new_mask


# ------------------------------------------------------------------------------ dataset level
def _kept(k: np.ndarray, rate: Any, m: str, seed: int, epoch: int = 0) -> np.ndarray:
    """The frames of modality ``m`` that survive the drop at ``rate``: ``u >= r`` with ``u`` from the
    evaluation stream of ``(seed, m, epoch)`` (the draw every evaluation condition shares)."""
    r = _rate_for(rate, m, k.shape[0])
    return _rng(seed, m, _STREAM_EVAL, epoch).random(k.shape) >= r[:, None]


def _pattern_keep(pattern: str, features: Mapping[str, Any]) -> str:
    """The modalities ``pattern`` keeps, each of which ``features`` must hold."""
    keep_mods = pattern_modalities(pattern)
    for m in keep_mods:
        if m not in features:
            raise ValueError(f"pattern {pattern!r} needs modality {m!r}, which is not in features ({sorted(features)})")
    return keep_mods


def drop_frames(features: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], rate: Any, *,
                seed: int = DEFAULT_EVAL_SEED, keep_special: bool = True, epoch: int = 0,
                ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Intra-modal missingness: drop each observed frame/token independently with probability ``rate``.

    Args:
        features, masks: ``{modality: array}`` (see module doc); not modified.
        rate: a number in [0, 1], a per-sample array ``(N,)``, or a dict ``{modality: number or
            (N,) array}`` (modalities absent from the dict raise).
        seed: evaluation-mask seed (default 1111), independent of any model seed.
        keep_special: for BERT ids, never replace ``[CLS]``/``[SEP]`` (default, as MMSA/LNLN).
        epoch: extra stream index so a sampler can redraw per epoch with the same seed.

    Returns:
        ``(features, masks)``: new arrays; dropped feature frames are zero, dropped ids are 100.
        A frame is kept iff ``u >= r`` with ``u ~ U[0, 1)``, so r = 0 keeps all and r = 1 drops all.
    """
    _check_arrays(features, masks)
    seed = _check_seed(seed)
    out_f, out_m = {}, {}
    for m, x in features.items():
        x = np.asarray(x)
        k = np.asarray(masks[m])
        out_f[m], out_m[m] = _apply(x, k, _kept(k, rate, m, seed, epoch), keep_special=keep_special)
    return out_f, out_m


def remove_modalities(features: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], pattern: str,
                      ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Inter-modal missingness: keep only the modalities of ``pattern``; the others become fully missing
    (mask all False, features zero, BERT ids ``[CLS] [UNK] ... [SEP]``)."""
    _check_arrays(features, masks)
    keep_mods = _pattern_keep(pattern, features)
    out_f, out_m = {}, {}
    for m, x in features.items():
        x = np.asarray(x)
        k = np.asarray(masks[m])
        if m in keep_mods:
            out_f[m], out_m[m] = x.copy(), k.copy()
        else:
            f, _ = _apply(x, k, np.zeros(k.shape, dtype=bool), keep_special=True)
            out_f[m], out_m[m] = f, np.zeros(k.shape, dtype=bool)
    return out_f, out_m


def lnln_rates(n: int, rng: np.random.Generator, *, complete_fraction: float = 0.5) -> np.ndarray:
    """LNLN training rates: ``r_i ~ U(0, 1)``, then ``int(n * complete_fraction)`` random samples set to 0."""
    cf = _check_rate_scalar(complete_fraction, "complete_fraction")
    r = rng.random(n)
    k = int(n * cf)
    if k:
        r[rng.choice(n, size=k, replace=False)] = 0.0
    return r


def lnln_drop(features: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], *, seed: int, epoch: int = 0,
              complete_fraction: float = 0.5, keep_special: bool = True,
              ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """One epoch of the LNLN training sampler.

    Per modality independently: per-sample rates from :func:`lnln_rates`, then frames dropped as
    in :func:`drop_frames`. Both the rates and the uniform draws depend on ``(seed, modality,
    epoch)``, so every epoch sees new corruption while the run stays reproducible. (LNLN itself
    re-seeds the uniform draws identically every epoch and only redraws the rates, from one
    shared generator; this is the independent-generator variant the reference recommends.)

    Returns ``(features, masks, rates)`` with ``rates = {modality: (N,)}``.
    """
    _check_arrays(features, masks)
    seed = _check_seed(seed)
    epoch = _check_seed(epoch, "epoch")
    rates = {m: lnln_rates(np.asarray(x).shape[0], _rng(seed, m, _STREAM_LNLN_RATE, epoch),
                           complete_fraction=complete_fraction) for m, x in features.items()}
    out_f, out_m = {}, {}
    for m, x in features.items():
        x = np.asarray(x)
        k = np.asarray(masks[m])
        u = _rng(seed, m, _STREAM_LNLN_MASK, epoch).random(k.shape)
        out_f[m], out_m[m] = _apply(x, k, u >= rates[m][:, None], keep_special=keep_special)
    return out_f, out_m, rates


class LNLNSampler:
    """LNLN training sampler over an :class:`~fsrf.data.MMSASplit`: ``sampler.epoch(e)`` is a new
    split with that epoch's corruption (see :func:`lnln_drop`); ``sampler.rates`` holds the last
    epoch's per-sample rates."""

    def __init__(self, split, *, seed: int, complete_fraction: float = 0.5, keep_special: bool = True):
        self.split = split
        self.seed = _check_seed(seed)
        self.complete_fraction = _check_rate_scalar(complete_fraction, "complete_fraction")
        self.keep_special = keep_special
        self.rates: dict[str, np.ndarray] | None = None

    def epoch(self, epoch: int):
        """The split corrupted for ``epoch`` (0, 1, ...): the batches of :func:`lnln_drop`'s arrays.

        Float features are not copied: the view has the epoch's masks and zeroes the dropped frames
        batch by batch (:meth:`fsrf.data.MMSASplit.with_masks`), so an epoch of a CMU-MOSEI-sized
        split costs its masks, not a second copy of its 6 GB of features. BERT ids, which become
        ``[UNK]`` rather than zero, are replaced in a copy as before.
        """
        seed, epoch = self.seed, _check_seed(epoch, "epoch")
        feats, masks = self.split.features, self.split.masks
        _check_arrays(feats, masks)
        self.rates = {m: lnln_rates(np.asarray(x).shape[0], _rng(seed, m, _STREAM_LNLN_RATE, epoch),
                                    complete_fraction=self.complete_fraction) for m, x in feats.items()}
        new_masks, ids = {}, {}
        for m, x in feats.items():
            k = np.asarray(masks[m])
            keep = _rng(seed, m, _STREAM_LNLN_MASK, epoch).random(k.shape) >= self.rates[m][:, None]
            if _is_ids(np.asarray(x)):
                ids[m], new_masks[m] = _apply(np.asarray(x), k, keep, keep_special=self.keep_special)
            else:
                new_masks[m] = k & keep
        view = self.split.with_masks(new_masks)
        return view.with_arrays(features=ids) if ids else view


def tfr_drop(features: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray], rate: Any, *,
             seeds: int | Mapping[str, int] = DEFAULT_EVAL_SEED,
             ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """MMSA / TFR-Net ``generate_m``, bit-compatible.

    Per modality: ``np.random.seed(s); keep = (np.random.uniform(size=mask.shape) > r) * input_mask``
    (drawn from ``np.random.RandomState(s)``, which gives the same numbers without touching
    numpy's global state). ``input_mask`` is ``masks[m]`` (for BERT ids: the attention mask).
    For ids, ``[CLS]`` and ``[SEP]`` are forced kept and dropped ids become 100. Apply it with the
    same seeds to train, valid and test, as TFR-Net does. MMSA's default seeds are 1111 for all
    modalities; TFR-Net's are (111, 1111, 11111) for (text, audio, vision) — pass them as a dict.
    Note that with one seed for all, modalities of equal shape get identical masks (as in MMSA).

    ``rate``: a number or ``{modality: number}`` in [0, 1].
    """
    _check_arrays(features, masks)
    out_f, out_m = {}, {}
    for m, x in features.items():
        x = np.asarray(x)
        k = np.asarray(masks[m])
        s = seeds[m] if isinstance(seeds, Mapping) else seeds
        s = _check_seed(s, f"seeds[{m!r}]" if isinstance(seeds, Mapping) else "seeds")
        r = _check_rate_scalar(rate[m] if isinstance(rate, Mapping) else rate,
                               f"rate[{m!r}]" if isinstance(rate, Mapping) else "rate")
        keep = np.random.RandomState(s).uniform(size=k.shape) > r
        out_f[m], out_m[m] = _apply(x, k, keep, keep_special=True)
    return out_f, out_m


def corrupt_split(split, *, rate: Any = 0.0, pattern: str = COMPLETE, seed: int = DEFAULT_EVAL_SEED,
                  mode: str = "independent"):
    """Evaluation copy of an :class:`~fsrf.data.MMSASplit`: frames dropped at ``rate``, then only the
    modalities of ``pattern`` kept.

    ``mode``: ``"independent"`` (default; :func:`drop_frames` with per-modality generators) or
    ``"tfr"`` (:func:`tfr_drop`, MMSA/TFR-Net bit-compatible, ``seed`` used for every modality).
    With float features and ``"independent"`` the result is a view (:meth:`fsrf.data.MMSASplit.with_masks`)
    whose batches are those of the corrupted arrays, without copying them.
    """
    if mode not in ("independent", "tfr"):
        raise ValueError(f"mode must be 'independent' or 'tfr'; got {mode!r}")
    keep_mods = pattern_modalities(pattern)
    suffix = f"@r={rate}" if not isinstance(rate, Mapping) else "@r=custom"
    if mode == "independent" and not any(_is_ids(np.asarray(x)) for x in split.features.values()):
        # float features only: a view with the new masks that zeroes the dropped frames batch by
        # batch, the same batches as the arrays below without a copy of the split per condition
        _check_arrays(split.features, split.masks)
        _pattern_keep(pattern, split.features)
        seed = _check_seed(seed)
        masks = {}
        for m in split.features:
            k = np.asarray(split.masks[m])
            masks[m] = k & _kept(k, rate, m, seed) if m in keep_mods else np.zeros(k.shape, dtype=bool)
        return split.with_masks(masks, name=f"{split.name}{suffix},{pattern}")
    if mode == "tfr":
        f, k = tfr_drop(split.features, split.masks, rate, seeds=seed)
    else:
        f, k = drop_frames(split.features, split.masks, rate, seed=seed)
    if set(pattern.lower()) != set(COMPLETE):
        f, k = remove_modalities(f, k, pattern)
    return split.with_arrays(features=f, masks=k, name=f"{split.name}{suffix},{pattern}")


# ------------------------------------------------------------------------------- tensor level
def corrupt(inputs: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor | None] | None = None, *,
            rate: float | Mapping[str, float] | None = None, inter_prob: float = 0.3,
            generator: torch.Generator | None = None) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Further corrupt a batch (DAS's second view): extra frames dropped, whole modalities removed.

    Args:
        inputs: ``{modality: (B, T_m, D_m)}`` floating tensors on one device.
        masks: ``{modality: (B, T_m) bool}`` (True = observed; a ``None`` value or ``masks=None``
            means all observed).
        rate: frame-drop rate: None (default) draws a rate ``~ U(0, 1)`` per sample and modality;
            a number in [0, 1] or ``{modality: number}`` fixes it. A frame is kept iff ``u >= r``.
        inter_prob: per-sample probability of also removing whole modalities: ``k`` uniform in
            ``{1, ..., M-1}`` (one or two of three), chosen at random — never all of them in this
            step (a sample that was already incomplete may still end up with none).
        generator: a ``torch.Generator`` for reproducible draws. On the inputs' device (draws
            stay there), or on the CPU (draws are made on the CPU and copied over, which on a GPU
            waits for the device). None = torch's default generator of the inputs' device, the
            only choice inside ``torch.compile`` (a generator object cannot enter a compiled
            graph); ``torch.manual_seed`` then makes the view reproducible.

    Returns:
        ``(inputs_b, masks_b)``: new tensors; dropped frames are zero (``torch.where``, so the
        gradient w.r.t. ``inputs`` is the new mask) and their mask bits are cleared. Draws are made
        in the order of ``inputs``' keys.

    No host synchronisation with ``generator=None`` or a generator on the inputs' device; works
    under ``torch.compile`` with ``generator=None`` (validation is shape/dtype only).
    """
    # shapes, dtypes and devices only: no host sync, and nothing data-dependent under compile
    B, dev = check_modality_batch(inputs, masks, masks_complete=True, finite=False, allow_empty=True)
    names = list(inputs)
    M = len(names)
    ip = _check_rate_scalar(inter_prob, "inter_prob")
    if rate is None:
        fixed = None
    elif isinstance(rate, Mapping):
        missing = [m for m in names if m not in rate]
        if missing:
            raise ValueError(f"rate has no entry for modalities {missing}")
        fixed = [_check_rate_scalar(rate[m], f"rate[{m!r}]") for m in names]
    else:
        fixed = [_check_rate_scalar(rate, "rate")] * M
    gdev = check_generator(generator, dev)

    # no generator argument at all when there is none: the generator overloads of rand/randint
    # take no symbolic sizes, which torch.compile uses once batch shapes vary
    gen = {} if generator is None else {"generator": generator}

    def rand(*shape):
        u = torch.rand(*shape, device=gdev, **gen)
        return u if gdev == dev else u.to(dev)

    if fixed is None:
        r = rand(B, M)
    else:
        # fills, not torch.tensor(fixed, device=dev): no host-to-device copy
        r = torch.stack([torch.full((B,), v, dtype=torch.float32, device=dev) for v in fixed], dim=1)
    if M > 1 and ip > 0:
        hit = rand(B) < ip
        k = torch.randint(1, M, (B,), device=gdev, **gen)                         # how many to remove
        k = k if gdev == dev else k.to(dev)
        order = rand(B, M).argsort(dim=1).argsort(dim=1)                          # random rank per modality
        removed = hit[:, None] & (order < k[:, None])
    else:
        removed = torch.zeros(B, M, dtype=torch.bool, device=dev)
    out_x, out_k = {}, {}
    for j, m in enumerate(names):
        x = inputs[m]
        base = masks[m] if masks is not None and masks[m] is not None else None
        keep = (rand(B, x.shape[1]) >= r[:, j:j + 1]) & ~removed[:, j:j + 1]
        new_k = keep if base is None else base & keep
        out_x[m] = torch.where(new_k.unsqueeze(-1), x, torch.zeros((), dtype=x.dtype, device=dev))
        out_k[m] = new_k
    return out_x, out_k
