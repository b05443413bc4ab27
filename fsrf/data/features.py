"""Reading feature files to predict on: MMSA-format pickles with any subset of the splits, with or
without labels, where a modality may be absent from the file or from some samples.

What MMSA-FET writes for a user's own videos has the MMSA keys (``text``, ``audio``, ``vision``,
``audio_lengths``, ``vision_lengths``, ``id``) but need not have labels or all three splits; a
single utterance set may come as one split dict at the top level. :func:`read_features` reads
them for a model whose feature dims are known:

* the splits present (``train`` / ``valid`` / ``test``), or the top-level dict as one split
  named ``"all"`` when it holds the modality keys itself;
* a modality whose key is missing is absent for every sample of that split (a zero frame with a
  cleared mask: what the models take for a missing modality);
* a sample whose modality has length 0 or only all-zero frames is missing that modality (text
  tokens are the real ones of ``text_bert``'s attention mask when the file has it, as
  :func:`fsrf.data.load_mmsa` reads them);
* labels (``regression_labels``, ``classification_labels``) are kept when present, else NaN / None;
* a modality whose feature dimension differs from the model's is refused by name.
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Mapping

import numpy as np

from fsrf.data.dataset import MODALITIES, MMSASplit
from fsrf.data.mmsa import (SPLITS, MMSALengthWarning, _array, _class_labels, _err, _labels, _length_messages,
                            _lengths, _nonzero_rows, _to_float32)
from fsrf.data.safe_pickle import safe_load

__all__ = ["read_features"]


def _split_dicts(data: Any, path: str) -> dict[str, dict]:
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict (an MMSA feature file); found {type(data).__name__}")
    present = [s for s in SPLITS if isinstance(data.get(s), dict)]
    if present:
        return {s: data[s] for s in present}
    if any(m in data for m in MODALITIES):
        return {"all": data}
    keys = ", ".join(sorted(map(str, data))) or "none"
    raise ValueError(f"{path}: no split ({', '.join(SPLITS)}) and no modality key ({', '.join(MODALITIES)}) "
                     f"at the top level (keys: {keys})")


def _one_split(raw: dict, split: str, *, path: str, dims: Mapping[str, int]) -> MMSASplit:
    n = None
    for m in MODALITIES:
        if m in raw:
            shape = np.shape(raw[m])
            if shape:
                n = int(shape[0])
                break
    if n is None:
        raise _err(path, split, "text/audio/vision", "none of the modalities is present; nothing to predict on")
    features, masks, lengths = {}, {}, {}
    too_long: dict = {}
    for m in MODALITIES:
        if m not in raw:
            features[m] = np.zeros((n, 1, int(dims[m])), dtype=np.float32)
            masks[m] = np.zeros((n, 1), dtype=bool)
            continue
        x = _array(raw, m, path=path, split=split, ndim=3, expect="(N, L, D)", n=n)
        if x.shape[2] != int(dims[m]):
            raise _err(path, split, m, f"feature dimension {x.shape[2]} does not match the model's {dims[m]} "
                                       f"(shape {x.shape}); predict with a model trained on these features")
        features[m] = _to_float32(x, path=path, split=split, key=m, nonfinite="error",
                                  neg_inf_to_zero=(m == "audio"))
        ln = _lengths(raw, f"{m}_lengths", path=path, split=split, n=n, seq_len=x.shape[1], too_long=too_long)
        nonzero = _nonzero_rows(features[m])
        bert = np.asarray(raw["text_bert"]) if m == "text" and "text_bert" in raw else None
        if bert is not None and bert.ndim == 3 and bert.shape[0] == n and bert.shape[1:] == (3, x.shape[1]):
            # BERT's vectors of [PAD] tokens are not zero: the attention mask says which tokens are real,
            # as fsrf.data.load_mmsa reads it
            masks[m] = (bert[:, 1, :] > 0) & nonzero
        elif ln is not None:
            lengths[m] = ln
            masks[m] = (np.arange(x.shape[1])[None, :] < ln[:, None]) & nonzero.any(axis=1, keepdims=True)
        else:
            masks[m] = nonzero
    labels = (_labels(raw, "regression_labels", path=path, split=split, n=n) if "regression_labels" in raw
              else np.full(n, np.nan, dtype=np.float32))
    ids = raw.get("id")
    ids = [str(v) for v in np.asarray(ids, dtype=object).reshape(-1)] if ids is not None else None
    if ids is not None and len(ids) != n:
        raise _err(path, split, "id", f"expected {n} entries (one per sample); found {len(ids)}")
    if too_long:  # clipped to the padded length, as load_mmsa does, and said the same way
        warn, refuse = _length_messages(path, too_long)
        warnings.warn(MMSALengthWarning(warn, too_long, refuse), stacklevel=3)
    return MMSASplit(split, features, masks, labels, lengths=lengths, ids=ids,
                     class_labels=_class_labels(raw, n))


def read_features(path: str | os.PathLike, dims: Mapping[str, int]) -> dict[str, MMSASplit]:
    """``{split: MMSASplit}`` of a feature file for a model with feature ``dims`` (see the module
    docstring). A split without ``regression_labels`` has NaN ``labels``."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"feature file {path} does not exist")
    missing = [m for m in MODALITIES if m not in dims]
    if missing:
        raise ValueError(f"dims must give the feature dimension of {list(MODALITIES)}; missing {missing}")
    raw = _split_dicts(safe_load(path), path)
    return {s: _one_split(r, s, path=path, dims=dims) for s, r in raw.items()}
