"""MMSA data: safe loading of MMSA feature pickles, torch datasets, synthetic files.

* :func:`load_mmsa` — read ``aligned_50.pkl`` / ``unaligned_50.pkl`` / ``unaligned_39.pkl`` (or any
  file with that schema) into an :class:`MMSADataset`; ``dataset.split("train")`` is an
  :class:`MMSASplit`, a ``torch.utils.data.Dataset`` to use with :func:`collate_mmsa` (or its
  :meth:`MMSASplit.batch`), giving ``{"inputs": {modality: (B, T, D)}, "masks": {modality:
  (B, T) bool}, "labels": (B,), "index": (B,)}``.
* :func:`load_dataset` — :func:`load_mmsa` plus the dataset kind that picks the metrics.
* :func:`describe` — print (and return) splits, sizes, dims, lengths, label ranges.
* :func:`make_synthetic` — write a synthetic file with the MMSA schema (presets mosi/mosei/sims),
  from one of the generators in :data:`SYNTHETIC_GENERATORS` (``"factor"``, ``"events"``).
* :func:`cached_synthetic`, :func:`cache_dir` — synthetic files written once into a cache folder.
* :class:`fsrf.data.bert.BertTextEncoder` — encode ``text_bert`` ids with a local BERT
  (optional ``transformers``; never downloads).
* :func:`safe_load`, :class:`UnsafePickleError` — the restricted unpickler used for all of this.
"""

from fsrf.data.cache import cache_dir, cached_synthetic
from fsrf.data.dataset import MODALITIES, MMSASplit, collate_mmsa
from fsrf.data.mmsa import (KNOWN_SHA256, SPLITS, MMSAChecksumWarning, MMSADataset, MMSALengthWarning, describe,
                            load_dataset, load_mmsa, sha256_file)
from fsrf.data.safe_pickle import UnsafePickleError, safe_load
from fsrf.data.synthetic import PRESETS, SYNTHETIC_GENERATORS, make_synthetic

__all__ = ["load_mmsa", "load_dataset", "MMSADataset", "MMSASplit", "collate_mmsa", "describe", "make_synthetic",
           "PRESETS", "SYNTHETIC_GENERATORS", "MODALITIES", "SPLITS", "KNOWN_SHA256", "MMSAChecksumWarning",
           "MMSALengthWarning", "sha256_file", "safe_load", "UnsafePickleError", "BertTextEncoder", "cache_dir",
           "cached_synthetic"]


def __getattr__(name):
    # Imported lazily: the module is cheap, but keeping it out of `import fsrf.data` makes clear
    # that nothing BERT-related (transformers) is touched unless asked for.
    if name == "BertTextEncoder":
        from fsrf.data.bert import BertTextEncoder

        return BertTextEncoder
    raise AttributeError(f"module 'fsrf.data' has no attribute {name!r}")
