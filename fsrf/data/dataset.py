"""One split of an MMSA dataset as numpy arrays, usable as a ``torch.utils.data.Dataset``.

The model consumes batches of the form::

    {"inputs": {"text": (B, T_t, D_t), "audio": (B, T_a, D_a), "vision": (B, T_v, D_v)},  # float32
     "masks":  {"text": (B, T_t) bool, ...},   # True = valid (not padding) and observed
     "labels": (B,) float32, "index": (B,) int64,
     "unimodal_labels": {"T": (B,), "A": (B,), "V": (B,)},    # SIMS only
     "class_labels": (B,) int64}                              # when the file has class labels

Either through a ``DataLoader`` with :func:`collate_mmsa`, or directly with
:meth:`MMSASplit.batch` (no per-item overhead). With ``text_source == "bert_ids"`` the text
input is the MMSA ``text_bert`` array, ``(B, 3, T_t)`` int64 (ids, attention mask, segment ids),
meant for :class:`fsrf.data.bert.BertTextEncoder`.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

__all__ = ["MODALITIES", "MMSASplit", "collate_mmsa"]

#: Modality names in MMSA order; the model's ``inputs``/``masks`` dicts use these keys.
MODALITIES = ("text", "audio", "vision")


class MMSASplit(torch.utils.data.Dataset):
    """One split (``train``/``valid``/``test``) held as numpy arrays.

    Attributes:
        name: split name.
        features: ``{modality: array}``; audio/vision ``(N, L, D)`` float32; text ``(N, L, D)``
            float32 features, or ``(N, 3, L)`` int64 BERT ids when ``text_source == "bert_ids"``.
        masks: ``{modality: (N, L) bool}``, True = valid frame (see :func:`fsrf.data.load_mmsa`
            for how it is derived) and, after :mod:`fsrf.missing`, observed.
        labels: ``(N,)`` float32 regression labels (``regression_labels``).
        unimodal_labels: ``{"T"|"A"|"V": (N,) float32}`` (SIMS only; empty otherwise).
        class_labels: ``(N,)`` int64 class indices (``classification_labels``) when the file has
            them, else None: what a classifier (``FSRFObjective(task="classification")``) trains on.
        class_names: the names of the classes, in index order, when the file says them, else None.
        lengths: ``{modality: (N,) int64}`` true lengths from the file (``audio``/``vision`` in
            unaligned files; ``text`` from the BERT attention mask when present).
        text_bert: ``(N, 3, L)`` int64 BERT ids when the file has them (kept in both text modes,
            it is small), else None.
        ids, raw_text: per-sample strings when the file has them, else None.
        text_source: ``"features"`` or ``"bert_ids"``.
    """

    def __init__(self, name: str, features: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray],
                 labels: np.ndarray, *, unimodal_labels: Mapping[str, np.ndarray] | None = None,
                 lengths: Mapping[str, np.ndarray] | None = None, text_bert: np.ndarray | None = None,
                 ids: Sequence[str] | None = None, raw_text: Sequence[str] | None = None,
                 text_source: str = "features", class_labels: np.ndarray | None = None,
                 class_names: Sequence[str] | None = None, zero_unobserved: bool = False):
        self.name = name
        self._features = dict(features)
        self.masks = dict(masks)
        self.labels = np.asarray(labels, dtype=np.float32).reshape(-1)
        self.unimodal_labels = {k: np.asarray(v, dtype=np.float32).reshape(-1)
                                for k, v in (unimodal_labels or {}).items()}
        self.lengths = dict(lengths or {})
        self.text_bert = text_bert
        self.ids = ids
        self.raw_text = raw_text
        self.text_source = text_source
        self.class_labels = None if class_labels is None else np.asarray(class_labels, dtype=np.int64).reshape(-1)
        self.class_names = None if class_names is None else tuple(str(c) for c in class_names)
        # frames whose mask bit is clear are zeroed when a batch is built, not in the arrays: a
        # corrupted view of a large split then costs its masks only (see with_masks)
        self.zero_unobserved = bool(zero_unobserved)
        n = len(self.labels)
        if self.class_labels is not None and len(self.class_labels) != n:
            raise ValueError(f"split '{name}': expected {n} class labels (one per sample); got "
                             f"{len(self.class_labels)}")
        if set(self._features) != set(self.masks):
            raise ValueError(f"split '{name}': features have modalities {sorted(self._features)} but masks "
                             f"have {sorted(self.masks)}")
        for m, x in self._features.items():
            mk = self.masks[m]
            if x.shape[0] != n or mk.shape[0] != n:
                raise ValueError(f"split '{name}', modality '{m}': expected {n} samples (the number of labels); "
                                 f"got features {x.shape} and mask {mk.shape}")
            if mk.dtype != np.bool_ or mk.ndim != 2:
                raise ValueError(f"split '{name}', modality '{m}': mask must be a 2-D bool array; got "
                                 f"{mk.dtype} {mk.shape}")
            seq = x.shape[2] if (m == "text" and text_source == "bert_ids") else x.shape[1]
            if mk.shape[1] != seq:
                raise ValueError(f"split '{name}', modality '{m}': mask length {mk.shape[1]} does not match "
                                 f"the sequence length {seq} of features {x.shape}")

    # ------------------------------------------------------------------ basic protocol
    def __len__(self) -> int:
        return len(self.labels)

    @property
    def modalities(self) -> tuple[str, ...]:
        """Modality names present, in MMSA order."""
        return tuple(m for m in MODALITIES if m in self._features) + tuple(
            m for m in self._features if m not in MODALITIES)

    def __getitem__(self, index: int) -> dict[str, Any]:
        """One sample: ``{"text", "audio", "vision": tensors, "masks": {...}, "label": float,
        "index": int}`` (plus ``"unimodal_labels"`` for SIMS)."""
        i = int(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {index} is out of range for split '{self.name}' with {len(self)} samples")
        i %= len(self)
        item: dict[str, Any] = {m: torch.from_numpy(self._rows(m, i)) for m in self.modalities}
        item["masks"] = {m: torch.from_numpy(self.masks[m][i]) for m in self.modalities}
        item["label"] = float(self.labels[i])
        item["index"] = i
        if self.class_labels is not None:
            item["class_label"] = int(self.class_labels[i])
        if self.unimodal_labels:
            item["unimodal_labels"] = {k: float(v[i]) for k, v in self.unimodal_labels.items()}
        return item

    def batch(self, indices: Iterable[int] | np.ndarray | torch.Tensor) -> dict[str, Any]:
        """A collated batch for ``indices`` built directly from the arrays (same layout as
        :func:`collate_mmsa`)."""
        if isinstance(indices, torch.Tensor):
            idx = indices.detach().cpu().numpy()
        elif isinstance(indices, np.ndarray):
            idx = indices
        else:
            idx = np.asarray(list(indices))
        idx = idx.astype(np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"indices must lie in [0, {len(self)}) for split '{self.name}'; got "
                             f"[{idx.min()}, {idx.max()}]")
        out: dict[str, Any] = {
            "inputs": {m: torch.from_numpy(np.ascontiguousarray(self._rows(m, idx))) for m in self.modalities},
            "masks": {m: torch.from_numpy(np.ascontiguousarray(self.masks[m][idx])) for m in self.modalities},
            "labels": torch.from_numpy(self.labels[idx].copy()),
            "index": torch.from_numpy(idx.copy()),
        }
        if self.unimodal_labels:
            out["unimodal_labels"] = {k: torch.from_numpy(v[idx].copy()) for k, v in self.unimodal_labels.items()}
        if self.class_labels is not None:
            out["class_labels"] = torch.from_numpy(self.class_labels[idx].copy())
        return out

    @property
    def features(self) -> Mapping[str, np.ndarray]:
        """``{modality: array}``; in a view made by :meth:`with_masks`, each array is built on access
        with the frames of cleared mask bits zeroed (a copy: :meth:`batch` reads only its rows)."""
        if not self.zero_unobserved:
            return self._features
        return _ZeroedFeatures(self._features, self.masks)

    def _rows(self, m: str, idx) -> np.ndarray:
        x = self._features[m][idx]
        if not self.zero_unobserved or not np.issubdtype(x.dtype, np.floating):
            return x
        return np.where(self.masks[m][idx][..., None], x, np.zeros((), dtype=x.dtype))

    def with_masks(self, masks: Mapping[str, np.ndarray], name: str | None = None) -> "MMSASplit":
        """A view with new masks over the same feature arrays, whose batches hold zeros where a
        mask bit is clear: what :meth:`with_arrays` gives for float features zeroed at the cleared
        bits, without a copy of the features (integer BERT ids are passed through unchanged)."""
        k = dict(self.masks)
        k.update(masks)
        return MMSASplit(name or self.name, self._features, k, self.labels, unimodal_labels=self.unimodal_labels,
                         lengths=self.lengths, text_bert=self.text_bert, ids=self.ids, raw_text=self.raw_text,
                         text_source=self.text_source, class_labels=self.class_labels,
                         class_names=self.class_names, zero_unobserved=True)

    def with_arrays(self, features: Mapping[str, np.ndarray] | None = None,
                    masks: Mapping[str, np.ndarray] | None = None,
                    name: str | None = None) -> "MMSASplit":
        """A new split sharing everything except the given (e.g. corrupted) features/masks.

        Modalities not in ``features``/``masks`` keep the current arrays.
        """
        f = dict(self._features)
        f.update(features or {})
        k = dict(self.masks)
        k.update(masks or {})
        tb = self.text_bert
        if self.text_source == "bert_ids" and features and "text" in features:
            tb = f["text"]
        return MMSASplit(name or self.name, f, k, self.labels, unimodal_labels=self.unimodal_labels,
                         lengths=self.lengths, text_bert=tb, ids=self.ids, raw_text=self.raw_text,
                         text_source=self.text_source, class_labels=self.class_labels,
                         class_names=self.class_names, zero_unobserved=self.zero_unobserved)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{m}={tuple(self._features[m].shape)}" for m in self.modalities)
        return f"MMSASplit({self.name!r}, n={len(self)}, {shapes}, text_source={self.text_source!r})"


class _ZeroedFeatures(Mapping):
    """The features of a :meth:`MMSASplit.with_masks` view, each zeroed where its mask is clear."""

    def __init__(self, features: Mapping[str, np.ndarray], masks: Mapping[str, np.ndarray]) -> None:
        self._f, self._k = features, masks

    def __getitem__(self, m: str) -> np.ndarray:
        x = self._f[m]
        if not np.issubdtype(x.dtype, np.floating):
            return x
        return np.where(self._k[m][..., None], x, np.zeros((), dtype=x.dtype))

    def __iter__(self):
        return iter(self._f)

    def __len__(self) -> int:
        return len(self._f)


def collate_mmsa(batch: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Collate :meth:`MMSASplit.__getitem__` items into ``{"inputs", "masks", "labels", "index"}``
    (plus ``"unimodal_labels"`` and ``"class_labels"`` when the items carry them); use as a ``DataLoader``'s
    ``collate_fn``."""
    if len(batch) == 0:
        raise ValueError("collate_mmsa got an empty batch")
    mods = list(batch[0]["masks"].keys())
    out: dict[str, Any] = {
        "inputs": {m: torch.stack([b[m] for b in batch]) for m in mods},
        "masks": {m: torch.stack([b["masks"][m] for b in batch]) for m in mods},
        "labels": torch.tensor([b["label"] for b in batch], dtype=torch.float32),
        "index": torch.tensor([b["index"] for b in batch], dtype=torch.int64),
    }
    if "unimodal_labels" in batch[0]:
        keys = batch[0]["unimodal_labels"].keys()
        out["unimodal_labels"] = {k: torch.tensor([b["unimodal_labels"][k] for b in batch], dtype=torch.float32)
                                  for k in keys}
    if "class_label" in batch[0]:
        out["class_labels"] = torch.tensor([b["class_label"] for b in batch], dtype=torch.int64)
    return out
