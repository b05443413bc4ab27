"""Encoding MMSA ``text_bert`` ids with a BERT model the user already has on disk.

Nothing here downloads weights: :class:`BertTextEncoder` loads from a local folder only
(``local_files_only=True``), and ``transformers`` is imported only when an encoder is built, so
the rest of fsrf works without it. The default text input of fsrf is the precomputed ``text``
features stored in the MMSA files, which need no BERT at all.
"""

from __future__ import annotations

import os

import numpy as np
import torch

__all__ = ["BertTextEncoder"]


def _import_transformers():
    try:
        import transformers  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "BertTextEncoder needs the optional package 'transformers' (pip install transformers); it is "
            "not installed. Without it, use the precomputed BERT features of the MMSA file "
            "(fsrf.data.load_mmsa(path, text='features'), the default).") from exc
    return transformers


class BertTextEncoder(torch.nn.Module):
    """Map MMSA ``text_bert`` arrays ``(B, 3, L)`` to BERT features ``(B, L, H)`` and a token mask.

    Rows of ``text_bert``: 0 = input ids, 1 = attention mask, 2 = segment (token type) ids, stored
    as numbers (cast back to integers here, as MMSA's wrapper does).

    Args:
        model_path: a local folder with a BERT checkpoint in Hugging Face format (e.g. a saved
            ``bert-base-uncased`` for MOSI/MOSEI or ``bert-base-chinese`` for SIMS).
        finetune: train BERT's weights with the model (default False: run it under ``no_grad``
            in eval mode).
    """

    def __init__(self, model_path: str | os.PathLike, *, finetune: bool = False):
        super().__init__()
        path = os.fspath(model_path)
        if not os.path.isdir(path):
            raise FileNotFoundError(f"BERT model folder not found: {path} (BertTextEncoder loads a local "
                                    f"checkpoint only; nothing is downloaded)")
        transformers = _import_transformers()
        self.model = transformers.AutoModel.from_pretrained(path, local_files_only=True)
        self.finetune = bool(finetune)
        if not self.finetune:
            self.model.eval()
            for p in self.model.parameters():
                p.requires_grad_(False)

    @property
    def hidden_size(self) -> int:
        """Width of the produced features (768 for BERT-base)."""
        return int(self.model.config.hidden_size)

    def forward(self, text_bert: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(features (B, L, H) float, mask (B, L) bool)``; mask = attention mask > 0."""
        if not isinstance(text_bert, torch.Tensor):
            raise TypeError(f"text_bert must be a torch.Tensor; got {type(text_bert).__name__}")
        if text_bert.dim() != 3 or text_bert.shape[1] != 3:
            raise ValueError(f"text_bert must have shape (B, 3, L) (ids, attention mask, segment ids); got "
                             f"{tuple(text_bert.shape)} — precomputed (B, L, 768) features need no encoder")
        ids = text_bert[:, 0, :].long()
        attn = text_bert[:, 1, :].long()
        seg = text_bert[:, 2, :].long()
        if self.finetune:
            out = self.model(input_ids=ids, attention_mask=attn, token_type_ids=seg)[0]
        else:
            with torch.no_grad():
                out = self.model(input_ids=ids, attention_mask=attn, token_type_ids=seg)[0]
        return out, attn > 0

    @torch.no_grad()
    def encode_array(self, text_bert: np.ndarray, *, batch_size: int = 64,
                     device: str | torch.device = "cpu") -> np.ndarray:
        """Precompute float32 features ``(N, L, H)`` for a whole ``text_bert`` array (padding rows zero)."""
        arr = np.asarray(text_bert)
        if arr.ndim != 3 or arr.shape[1] != 3:
            raise ValueError(f"text_bert must have shape (N, 3, L); got {arr.shape}")
        self.to(device)
        chunks = []
        for s in range(0, arr.shape[0], batch_size):
            x = torch.as_tensor(arr[s:s + batch_size].astype(np.int64), device=device)
            f, m = self.forward(x)
            chunks.append((f * m[..., None]).float().cpu().numpy())
        return np.concatenate(chunks, axis=0) if chunks else np.zeros((0, arr.shape[2], self.hidden_size), np.float32)
