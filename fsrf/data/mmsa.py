"""Reading MMSA feature pickles (``aligned_50.pkl``, ``unaligned_50.pkl``, ``unaligned_39.pkl``).

The format (thuiar/MMSA, written by MMSA-FET) is a dict ``{"train", "valid", "test"}`` (plus
an optional ``"config"``), each split a dict of arrays:

========================  ====================  ==============================================
key                       shape                 use here
========================  ====================  ==============================================
``text``                  (N, L_t, 768)         precomputed BERT features (``text="features"``)
``text_bert``             (N, 3, L_t)           BERT ids / attention mask / segment ids
``audio``                 (N, L_a, d_a)         ``-inf`` (COVAREP) set to 0, as every MMSA loader
``vision``                (N, L_v, d_v)
``audio_lengths``,        (N,)                  unaligned files only; clipped to the padded length
``vision_lengths``                              (with one :class:`MMSALengthWarning` giving the
                                                counts; ``strict=True`` refuses such files)
``regression_labels``     (N,)                  the label
``regression_labels_T``,  (N,)                  SIMS unimodal labels (when present)
``_A``, ``_V``
``classification_labels`` (N,)                  class indices for a classifier, when integer-valued
                                                and non-negative (else left out)
``id``, ``raw_text``      (N,)                  kept as lists of str when present
========================  ====================  ==============================================

Every other key is ignored. Dimensions and lengths are taken from the arrays, never from a
config. Features and labels are cast to float32 (MMSA-FET writes float64).

**Empty splits** load (as splits of 0 samples with the file's dims and lengths), so that a file
can be described, or evaluated on the splits it has; :func:`describe` reports them as
"0 samples". Training refuses them where it needs them: :func:`fsrf.training.trainer` names the file
and the split when the train split has fewer than two samples per process, or the split the
model is selected on is empty.

**Valid-frame masks** (True = real frame, False = padding):

* text: the ``text_bert`` attention mask (row 1) when the file has ``text_bert``; otherwise the
  token rows that are not all zero;
* audio/vision in unaligned files: ``arange(L) < length``;
* audio/vision in aligned files (no lengths stored): the frames that are not all zero. Aligned
  MMSA files zero-pad the word-aligned frames after the utterance, so this recovers the padding;
  an observed frame that happens to be exactly zero in every feature is treated as padding, which
  is harmless (it carries no information either way). MMSA itself uses the text mask's sum as the
  aligned length; that counts the BERT ``[CLS]``/``[SEP]`` and word pieces, which do not line up
  with the word-aligned frames, so it is not used here.

Files are unpickled with :func:`fsrf.data.safe_pickle.safe_load`, which refuses anything that
is not plain data. When the file name is one of the published MMSA files its SHA-256 is checked
against the table in MMSA's README and a :class:`MMSAChecksumWarning` is issued on mismatch (a
warning, not an error: MMSA-FET users regenerate files legitimately).
"""

from __future__ import annotations

import hashlib
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, TextIO

import numpy as np

from fsrf.data.dataset import MODALITIES, MMSASplit
from fsrf.data.safe_pickle import safe_load

__all__ = ["KNOWN_SHA256", "MMSAChecksumWarning", "MMSALengthWarning", "MMSADataset", "load_mmsa", "load_dataset",
           "describe", "sha256_file", "SPLITS", "TEXT_SOURCES"]

SPLITS = ("train", "valid", "test")
TEXT_SOURCES = ("features", "bert_ids", "auto")

#: Published SHA-256 of the MMSA feature files (thuiar/MMSA README), keyed by relative path.
KNOWN_SHA256: dict[str, str] = {
    "MOSI/Processed/unaligned_50.pkl": "78e0f8b5ef8ff71558e7307848fc1fa929ecb078203f565ab22b9daab2e02524",
    "MOSI/Processed/aligned_50.pkl": "d3994fd25681f9c7ad6e9c6596a6fe9b4beb85ff7d478ba978b124139002e5f9",
    "MOSEI/Processed/unaligned_50.pkl": "ad8b23d50557045e7d47959ce6c5b955d8d983f2979c7d9b7b9226f6dd6fec1f",
    "MOSEI/Processed/aligned_50.pkl": "45eccfb748a87c80ecab9bfac29582e7b1466bf6605ff29d3b338a75120bf791",
    "SIMS/Processed/unaligned_39.pkl": "c9e20c13ec0454d98bb9c1e520e490c75146bfa2dfeeea78d84de047dbdd442f",
}

# Feature dims of the published files -> dataset, used to guess the dataset kind.
_DIMS_TO_KIND = {(5, 20): "mosi", (74, 35): "mosei", (33, 709): "sims"}
_SYNTHETIC_TAG = "fsrf.data.make_synthetic"
_CHUNK = 512  # samples per chunk when scanning big arrays (bounds temporary memory)
_sha_cache: dict[tuple[str, int, int], str] = {}


class MMSAChecksumWarning(UserWarning):
    """A file named like a published MMSA file does not have its published SHA-256."""


class MMSALengthWarning(UserWarning):
    """Stored audio/vision lengths exceed the padded length of their arrays (they were clipped).

    ``counts`` maps ``(split, key)`` to ``(number of samples, largest length, padded length)``;
    ``refusal`` is the message :func:`load_mmsa` raises with ``strict=True``.
    """

    def __init__(self, message: str, counts: dict | None = None, refusal: str | None = None) -> None:
        super().__init__(message)
        self.counts = dict(counts or {})
        self.refusal = refusal or message


# ---------------------------------------------------------------------------------- checksums
def sha256_file(path: str | os.PathLike, *, progress: bool | None = None) -> str:
    """SHA-256 hex digest of a file, read in 8 MiB chunks.

    ``progress``: show a tqdm bar (None = only for files over 64 MiB and on a terminal).
    Results are cached per (path, size, mtime) for the life of the process.
    """
    path = os.fspath(path)
    st = os.stat(path)
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key in _sha_cache:
        return _sha_cache[key]
    from tqdm.auto import tqdm

    disable = (st.st_size <= 64 * 2**20) if progress is None else not progress
    h = hashlib.sha256()
    with open(path, "rb") as fh, tqdm(total=st.st_size, unit="B", unit_scale=True, unit_divisor=1024,
                                      desc=f"sha256 {os.path.basename(path)}", disable=disable or None,
                                      leave=False) as bar:
        # tqdm's disable=None hides the bar when stderr is not a terminal.
        while True:
            block = fh.read(8 * 2**20)
            if not block:
                break
            h.update(block)
            bar.update(len(block))
    digest = h.hexdigest()
    _sha_cache[key] = digest
    return digest


def _check_sha256(path: str) -> tuple[str | None, str]:
    """(digest, status); status is ``"match:<known path>"``, ``"mismatch"`` or ``"unknown-name"``."""
    base = os.path.basename(path)
    candidates = {k: v for k, v in KNOWN_SHA256.items() if k.rsplit("/", 1)[1] == base}
    if not candidates:
        return None, "unknown-name"
    digest = sha256_file(path)
    for k, v in candidates.items():
        if v == digest:
            return digest, f"match:{k}"
    names = ", ".join(sorted(candidates))
    warnings.warn(MMSAChecksumWarning(
        f"{path}: SHA-256 {digest} matches none of the published MMSA files named {base} ({names}); "
        f"it may be a custom MMSA-FET file, another version or a corrupted download. Loading it anyway "
        f"(pass check_sha256=False to skip this check)."), stacklevel=3)
    return digest, "mismatch"


# ---------------------------------------------------------------------------------- dataset
@dataclass
class MMSADataset:
    """A loaded MMSA feature file.

    Attributes:
        path: the file.
        splits: ``{"train"|"valid"|"test": MMSASplit}``.
        dims: feature dimension per modality (for ``text_source="bert_ids"`` the text dim is the
            BERT hidden size 768, the size the encoder produces, as in MMSA).
        seq_lens: padded sequence length per modality (from the train split).
        aligned: True when no split stores audio/vision lengths (``aligned_50.pkl``).
        dataset_kind: ``"mosi"``, ``"mosei"``, ``"sims"`` or None — a guess from SIMS unimodal
            labels, the feature dims of the published files, the synthetic generator's tag, or the
            path; pass the dataset explicitly to the metrics when it matters.
        text_source: ``"features"`` or ``"bert_ids"``.
        sha256: the file's digest when it was checked, else None.
        sha256_status: ``"match:<published path>"``, ``"mismatch"``, ``"unknown-name"`` (not one
            of the published file names; not hashed) or ``"not-checked"``.
        synthetic: the generator's settings for files written by :func:`make_synthetic`, else None.
    """

    path: str
    splits: dict[str, MMSASplit]
    dims: dict[str, int]
    seq_lens: dict[str, int]
    aligned: bool
    dataset_kind: str | None
    text_source: str
    sha256: str | None = None
    sha256_status: str = "not-checked"
    synthetic: dict | None = field(default=None)

    def split(self, name: str) -> MMSASplit:
        """The split ``name`` (``"train"``, ``"valid"`` or ``"test"``)."""
        if name not in self.splits:
            raise ValueError(f"split must be one of {sorted(self.splits)}; got {name!r}")
        return self.splits[name]

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modality names in MMSA order."""
        return tuple(self.dims)

    def __repr__(self) -> str:
        sizes = ", ".join(f"{k}={len(v)}" for k, v in self.splits.items())
        return (f"MMSADataset({os.path.basename(self.path)!r}, kind={self.dataset_kind}, aligned={self.aligned}, "
                f"{sizes}, dims={self.dims}, seq_lens={self.seq_lens})")


# ---------------------------------------------------------------------------------- reading
def _err(path: str, split: str, key: str, msg: str) -> ValueError:
    return ValueError(f"{path}: split '{split}', key '{key}': {msg}")


def _array(raw: dict, key: str, *, path: str, split: str, ndim: int, expect: str,
           n: int | None = None) -> np.ndarray:
    if key not in raw:
        present = ", ".join(sorted(map(str, raw)))
        raise _err(path, split, key, f"missing (expected an array of shape {expect}; keys present: {present})")
    x = raw[key]
    try:
        x = np.asarray(x)
    except Exception as exc:  # ragged lists etc.
        raise _err(path, split, key, f"could not be read as an array of shape {expect}: {exc}") from exc
    if x.dtype == object or not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise _err(path, split, key, f"expected a numeric array of shape {expect}; found dtype {x.dtype}, "
                                     f"shape {x.shape}")
    if x.ndim != ndim or (n is not None and x.shape[0] != n):
        raise _err(path, split, key, f"expected shape {expect}" + (f" with N={n}" if n is not None else "")
                   + f"; found {x.shape}")
    return x


def _labels(raw: dict, key: str, *, path: str, split: str, n: int | None) -> np.ndarray:
    ndim = np.ndim(raw[key]) if key in raw else 1
    y = _array(raw, key, path=path, split=split, ndim=2 if ndim == 2 else 1, expect="(N,)", n=n)
    if y.ndim == 2:
        if y.shape[1] != 1:
            raise _err(path, split, key, f"expected shape (N,) or (N, 1); found {y.shape}")
        y = y[:, 0]
    y = y.astype(np.float32)
    bad = ~np.isfinite(y)
    if bad.any():
        raise _err(path, split, key, f"{int(bad.sum())} non-finite label(s) (first at index {int(np.argmax(bad))})")
    return y


def _class_labels(raw: dict, n: int) -> np.ndarray | None:
    """``classification_labels`` as (N,) int64 class indices, or None when absent or unusable.

    MMSA deprecated the key (its 3 classes are read from the regression label), so a damaged one
    must not stop a regression user from loading the file: it is left out here, and a classifier
    trained on the file is refused for lacking class labels.
    """
    if "classification_labels" not in raw:
        return None
    try:
        c = np.asarray(raw["classification_labels"])
    except (TypeError, ValueError):
        return None
    if c.dtype == object or not np.issubdtype(c.dtype, np.number) or c.size != n:
        return None
    c = c.reshape(-1).astype(np.float64)
    if not np.all(np.isfinite(c)) or np.any(c != np.round(c)) or (c.size and c.min() < 0):
        return None
    return c.astype(np.int64)


def _to_float32(x: np.ndarray, *, path: str, split: str, key: str, nonfinite: str, neg_inf_to_zero: bool) -> np.ndarray:
    # The unpickled arrays are private to the loader, so a writable float32 array is edited in
    # place (no second copy of a multi-GB array); others are converted. Scanning goes in chunks so
    # the temporaries stay small.
    out = x.astype(np.float32, copy=False)
    if not out.flags.writeable:  # e.g. protocol-5 arrays backed by bytes
        out = out.copy()
    n_bad = 0
    first = None
    for s in range(0, out.shape[0], _CHUNK):
        blk = out[s:s + _CHUNK]
        if neg_inf_to_zero:
            blk[blk == -np.inf] = 0.0
        bad = ~np.isfinite(blk)
        if bad.any():
            if first is None:
                first = s + int(np.argwhere(bad)[0][0])
            n_bad += int(bad.sum())
            if nonfinite == "zero":
                blk[bad] = 0.0
    if n_bad and nonfinite == "error":
        raise _err(path, split, key, f"{n_bad} non-finite value(s) (NaN/Inf; first in sample {first}); pass "
                                     f"nonfinite='zero' to replace them with 0")
    return out


def _nonzero_rows(x: np.ndarray) -> np.ndarray:
    mask = np.empty(x.shape[:2], dtype=bool)
    for s in range(0, x.shape[0], _CHUNK):
        mask[s:s + _CHUNK] = np.any(x[s:s + _CHUNK] != 0, axis=-1)
    return mask


def _lengths(raw: dict, key: str, *, path: str, split: str, n: int, seq_len: int,
             too_long: dict) -> np.ndarray | None:
    if key not in raw:
        return None
    ln = _array(raw, key, path=path, split=split, ndim=1, expect="(N,)", n=n)
    lf = ln.astype(np.float64)
    if not np.all(np.isfinite(lf)) or np.any(lf != np.round(lf)) or np.any(lf < 0):
        raise _err(path, split, key, "lengths must be non-negative integers")
    li = lf.astype(np.int64)
    over = li > seq_len
    if over.any():
        too_long[(split, key)] = (int(over.sum()), int(li.max()), int(seq_len))
    # MMSA-FET clips stored lengths to the padded length; older files may not have, so clip here.
    return np.minimum(li, seq_len)


def _length_messages(path: str, too_long: dict) -> tuple[str, str]:
    total = sum(c for c, _, _ in too_long.values())
    where = "; ".join(f"split '{s}', key '{k}': {c} (largest {mx} > padded length {T})"
                      for (s, k), (c, mx, T) in too_long.items())
    warn = (f"{path}: {total} stored length(s) exceed the padded length of their arrays and were clipped "
            f"to it ({where}); the file may be broken (pass strict=True, or --strict, to refuse it)")
    refuse = (f"{path}: {total} stored length(s) exceed the padded length of their arrays ({where}); "
              f"refused because strict=True (--strict): without it they are clipped to the padded length")
    return warn, refuse


def _strings(raw: dict, key: str, n: int, *, path: str, split: str) -> list[str] | None:
    if key not in raw:
        return None
    vals = [str(v) for v in np.asarray(raw[key], dtype=object).reshape(-1).tolist()]
    if len(vals) != n:
        raise _err(path, split, key, f"expected {n} entries (one per sample); found {len(vals)}")
    return vals


def _read_split(raw: Any, split: str, *, path: str, text: str, nonfinite: str, too_long: dict,
                class_names: Any = None) -> MMSASplit:
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: split '{split}' must be a dict of arrays; found {type(raw).__name__}")
    y = _labels(raw, "regression_labels", path=path, split=split, n=None)
    n = len(y)

    text_bert = None
    if "text_bert" in raw:
        tb = _array(raw, "text_bert", path=path, split=split, ndim=3, expect="(N, 3, L)", n=n)
        if tb.shape[1] != 3:
            hint = (" (this looks like precomputed BERT features, which belong under the key 'text')"
                    if tb.shape[2] in (768, 1024) else "")
            raise _err(path, split, "text_bert", f"expected shape (N, 3, L) (ids, attention mask, segment ids); "
                                                 f"found {tb.shape}{hint}")
        tbf = tb.astype(np.float64)
        if not np.all(np.isfinite(tbf)) or np.any(tbf != np.round(tbf)):
            raise _err(path, split, "text_bert", "token ids / masks must be integers")
        text_bert = tbf.astype(np.int64)

    if text == "bert_ids":
        if text_bert is None:
            raise _err(path, split, "text_bert", "missing, but text='bert_ids' was requested (use "
                                                 "text='features' for the precomputed 'text' features)")
        text_x = text_bert
    else:
        tx = _array(raw, "text", path=path, split=split, ndim=3, expect="(N, L, D)", n=n)
        if text_bert is not None and tx.shape[1] != text_bert.shape[2]:
            raise _err(path, split, "text", f"has {tx.shape[1]} tokens per sample but 'text_bert' has "
                                            f"{text_bert.shape[2]} (shapes {tx.shape} vs {text_bert.shape})")
        text_x = _to_float32(tx, path=path, split=split, key="text", nonfinite=nonfinite, neg_inf_to_zero=False)

    audio = _to_float32(_array(raw, "audio", path=path, split=split, ndim=3, expect="(N, L, D)", n=n),
                        path=path, split=split, key="audio", nonfinite=nonfinite, neg_inf_to_zero=True)
    vision = _to_float32(_array(raw, "vision", path=path, split=split, ndim=3, expect="(N, L, D)", n=n),
                         path=path, split=split, key="vision", nonfinite=nonfinite, neg_inf_to_zero=False)

    lengths: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    if text_bert is not None:
        masks["text"] = text_bert[:, 1, :] > 0
    else:
        masks["text"] = _nonzero_rows(text_x)
    lengths["text"] = masks["text"].sum(axis=1).astype(np.int64)
    for m, x in (("audio", audio), ("vision", vision)):
        ln = _lengths(raw, f"{m}_lengths", path=path, split=split, n=n, seq_len=x.shape[1], too_long=too_long)
        if ln is not None:
            lengths[m] = ln
            masks[m] = np.arange(x.shape[1])[None, :] < ln[:, None]
        else:
            masks[m] = _nonzero_rows(x)

    uni = {}
    for k in ("T", "A", "V"):
        key = f"regression_labels_{k}"
        if key in raw:
            uni[k] = _labels(raw, key, path=path, split=split, n=n)
    return MMSASplit(split, {"text": text_x, "audio": audio, "vision": vision}, masks, y,
                     unimodal_labels=uni, lengths=lengths, text_bert=text_bert,
                     ids=_strings(raw, "id", n, path=path, split=split),
                     raw_text=_strings(raw, "raw_text", n, path=path, split=split),
                     text_source="bert_ids" if text == "bert_ids" else "features",
                     class_labels=_class_labels(raw, n), class_names=class_names)


def _guess_kind(splits: dict[str, MMSASplit], dims: dict[str, int], path: str, synthetic: dict | None) -> str | None:
    if synthetic and synthetic.get("preset") in ("mosi", "mosei", "sims"):
        return synthetic["preset"]
    if any(s.unimodal_labels for s in splits.values()):
        return "sims"
    kind = _DIMS_TO_KIND.get((dims["audio"], dims["vision"]))
    if kind:
        return kind
    low = path.lower().replace("\\", "/")
    for k in ("sims", "mosei", "mosi"):
        if k in low:
            return k
    return None


def load_mmsa(path: str | os.PathLike, *, text: str = "features", check_sha256: bool = True,
              nonfinite: str = "error", strict: bool = False) -> MMSADataset:
    """Load an MMSA feature pickle into an :class:`MMSADataset`.

    Args:
        path: ``aligned_50.pkl`` / ``unaligned_50.pkl`` / ``unaligned_39.pkl`` or any file with that
            schema (MMSA-FET output, :func:`make_synthetic` output).
        text: ``"features"`` (default) — the precomputed BERT features under ``text``, ``(N, L, 768)``;
            ``"bert_ids"`` — the ``text_bert`` ids ``(N, 3, L)``, to be encoded by
            :class:`fsrf.data.bert.BertTextEncoder` with a local BERT; ``"auto"`` — features when the
            file has them, else ids.
        check_sha256: hash the file and warn (:class:`MMSAChecksumWarning`) when its name is one of
            the published MMSA files but its digest is not the published one. Hashing a multi-GB
            file takes a while (a tqdm bar is shown on a terminal); pass False to skip.
        nonfinite: what to do with NaN/Inf left after audio's ``-inf`` has been set to 0:
            ``"error"`` (default, names the split and key) or ``"zero"``.
        strict: refuse a file whose stored ``audio_lengths``/``vision_lengths`` exceed the padded
            length of their arrays (a ``ValueError`` with the counts per split and key). By
            default such lengths are clipped, with one :class:`MMSALengthWarning` per load that
            gives the same counts.

    Raises:
        FileNotFoundError: no such file.
        fsrf.data.UnsafePickleError: the pickle references code (nothing is executed).
        ValueError: the content does not follow the schema; the message names the file, split,
            key and the expected vs. found shape.

    Splits with 0 samples are accepted (see the module docstring).
    """
    if text not in TEXT_SOURCES:
        raise ValueError(f"text must be one of {TEXT_SOURCES}; got {text!r}")
    if nonfinite not in ("error", "zero"):
        raise ValueError(f"nonfinite must be 'error' or 'zero'; got {nonfinite!r}")
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool; got {type(strict).__name__}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"MMSA feature file not found: {path}")
    digest, status = (None, "not-checked")
    if check_sha256 and os.path.isfile(path):
        digest, status = _check_sha256(path)
    data = safe_load(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict with keys 'train', 'valid', 'test'; found {type(data).__name__}")
    missing = [s for s in SPLITS if s not in data]
    if missing:
        present = ", ".join(sorted(map(str, data)))
        raise ValueError(f"{path}: missing split(s) {missing}; an MMSA file has 'train', 'valid' and 'test' "
                         f"(keys present: {present})")
    if text == "auto":
        text = "features" if all(isinstance(data[s], dict) and "text" in data[s] for s in SPLITS) else "bert_ids"
    synthetic = None
    cfg = data.get("config")
    if isinstance(cfg, dict) and cfg.get("generator") == _SYNTHETIC_TAG:
        synthetic = dict(cfg)

    splits = {}
    too_long: dict[tuple[str, str], tuple[int, int, int]] = {}
    for s in SPLITS:
        names = synthetic.get("class_names") if synthetic else None
        splits[s] = _read_split(data[s], s, path=path, text=text, nonfinite=nonfinite, too_long=too_long,
                                class_names=names if isinstance(names, (list, tuple)) else None)
        data[s] = None  # release the raw (often float64) arrays before reading the next split
    del data
    if too_long:
        warn, refuse = _length_messages(path, too_long)
        if strict:
            raise ValueError(refuse)
        warnings.warn(MMSALengthWarning(warn, too_long, refuse), stacklevel=2)

    def dim_of(sp: MMSASplit, m: str) -> int:
        if m == "text" and text == "bert_ids":
            return 768
        return int(sp.features[m].shape[2])

    def len_of(sp: MMSASplit, m: str) -> int:
        return int(sp.masks[m].shape[1])

    dims = {m: dim_of(splits["train"], m) for m in MODALITIES}
    for s in SPLITS[1:]:
        for m in MODALITIES:
            d = dim_of(splits[s], m)
            if d != dims[m]:
                key = "text" if m == "text" else m
                raise _err(path, s, key, f"feature dimension {d} differs from the train split's {dims[m]} "
                                         f"(shape {splits[s].features[m].shape})")
    seq_lens = {m: len_of(splits["train"], m) for m in MODALITIES}
    aligned = not any("audio" in sp.lengths or "vision" in sp.lengths for sp in splits.values())
    kind = _guess_kind(splits, dims, path, synthetic)
    return MMSADataset(path=path, splits=splits, dims=dims, seq_lens=seq_lens, aligned=aligned,
                       dataset_kind=kind, text_source=text, sha256=digest, sha256_status=status,
                       synthetic=synthetic)


# ---------------------------------------------------------------------------------- describe
def load_dataset(path: str | os.PathLike, dataset: str | None = None, **kwargs) -> tuple[MMSADataset, str]:
    """:func:`load_mmsa` plus the dataset kind (``mosi``/``mosei``/``sims``) that picks the metrics.

    ``dataset`` wins when given; otherwise the kind guessed from the file is used, and a file
    whose kind cannot be told is a ``ValueError`` asking for it.
    """
    data = load_mmsa(path, **kwargs)
    kind = dataset or data.dataset_kind
    if kind is None:
        raise ValueError(f"cannot tell which dataset {path} is; pass --dataset mosi|mosei|sims")
    return data, kind


def _stats(a: np.ndarray) -> dict[str, float] | None:
    # an empty split has no statistics: None (JSON null), never NaN
    if a.size == 0:
        return None
    return {"min": float(a.min()), "mean": float(a.mean()), "max": float(a.max())}


def describe(path: str | os.PathLike, *, check_sha256: bool = True, file: TextIO | None = None,
             quiet: bool = False, strict: bool = False) -> dict[str, Any]:
    """Print a summary of an MMSA feature file and return it as a dict.

    Reports the dataset guess, aligned/unaligned, SHA-256 status, per-modality feature dims and
    padded lengths, and per split: size, valid-frame lengths (min/mean/max) per modality, label
    range and mean, and which unimodal labels exist. Text is read as features when present, else
    as BERT ids. A split with 0 samples is printed as "0 samples (empty)", and its ``label`` and
    ``frames`` entries are None. ``quiet=True`` only returns the dict; ``strict`` is passed to
    :func:`load_mmsa`.
    """
    ds = load_mmsa(path, text="auto", check_sha256=check_sha256, strict=strict)
    info: dict[str, Any] = {
        "path": ds.path,
        "dataset_kind": ds.dataset_kind,
        "aligned": ds.aligned,
        "text_source": ds.text_source,
        "sha256": ds.sha256,
        "sha256_status": ds.sha256_status,
        "synthetic": ds.synthetic,
        "dims": dict(ds.dims),
        "seq_lens": dict(ds.seq_lens),
        "splits": {},
    }
    for name, sp in ds.splits.items():
        lens = {m: _stats(sp.masks[m].sum(axis=1)) for m in sp.modalities} if len(sp) else None
        info["splits"][name] = {
            "n": len(sp),
            "label": _stats(sp.labels),
            "frames": lens,
            "unimodal_labels": list(sp.unimodal_labels),
        }
    if not quiet:
        out = file if file is not None else sys.stdout
        print(_format(info), file=out)
    return info


def _format(info: dict[str, Any]) -> str:
    lines = [f"MMSA feature file: {info['path']}"]
    kind = info["dataset_kind"] or "unknown"
    syn = info["synthetic"]
    if syn:
        kind += f" (synthetic, preset {syn.get('preset')}, seed {syn.get('seed')})"
    lines.append(f"  dataset (guess): {kind}; {'aligned' if info['aligned'] else 'unaligned'}; "
                 f"text read as {info['text_source']}")
    st = info["sha256_status"]
    if st.startswith("match:"):
        lines.append(f"  sha256: matches the published {st[6:]}")
    elif st == "mismatch":
        lines.append(f"  sha256: {info['sha256']} (does NOT match the published file of this name)")
    elif st == "unknown-name":
        lines.append("  sha256: not checked (not a published MMSA file name)")
    else:
        lines.append("  sha256: not checked")
    lines.append("  modality  dim  padded length")
    for m, d in info["dims"].items():
        lines.append(f"  {m:<8}{d:>5}  {info['seq_lens'][m]:>13}")
    for name, s in info["splits"].items():
        if not s["n"]:
            lines.append(f"  {name}: 0 samples (empty)")
            continue
        lab = s["label"]
        lines.append(f"  {name}: {s['n']} samples; label range [{lab['min']:.3f}, {lab['max']:.3f}], "
                     f"mean {lab['mean']:.3f}" + (f"; unimodal labels {','.join(s['unimodal_labels'])}"
                                                  if s["unimodal_labels"] else ""))
        fr = ", ".join(f"{m} {v['min']:.0f}/{v['mean']:.1f}/{v['max']:.0f}" for m, v in s["frames"].items())
        lines.append(f"    valid frames min/mean/max: {fr}")
    return "\n".join(lines)
