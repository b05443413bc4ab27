"""Multi-head cross-modal attention over a partially observed key modality."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fsrf.ops.masked_cross_attention import masked_cross_attention
from fsrf.reference.masked_cross_attention import masked_cross_attention_probs
from fsrf.runtime.checks import check_bool_mask, check_tensor

__all__ = ["MaskedCrossModalAttention"]


class MaskedCrossModalAttention(nn.Module):
    """Batch-first multi-head attention of one modality (queries) over another (keys/values)
    whose tokens may be missing, built on :func:`fsrf.ops.masked_cross_attention`.

    It computes what ``torch.nn.MultiheadAttention(embed_dim, num_heads, dropout, bias, kdim=kdim,
    vdim=vdim, batch_first=True)`` computes with ``key_padding_mask = ~key_mask``, except that a
    query whose keys are *all* missing (a whole modality absent for that sample) gets a zero
    attention output — so the module returns ``out_proj.bias`` for it — and zero gradients,
    never NaN. :meth:`from_multihead_attention` copies the weights of an existing
    ``nn.MultiheadAttention``.

    Dropout: ``nn.MultiheadAttention`` drops attention *weights*, which the fused kernel never
    materialises. So that ``dropout`` means the same here, a module in training mode with
    ``dropout > 0`` computes attention with the PyTorch reference path (explicit weights,
    dropout on them, memory quadratic in the sequence lengths); in eval mode, or with
    ``dropout == 0``, it uses the fused kernel of the selected backend.

    Args:
        embed_dim: model width ``E`` (query and output features); divisible by ``num_heads``.
        num_heads: number of heads.
        kdim, vdim: features of ``key`` / ``value`` (default ``embed_dim``).
        bias: add biases to the input and output projections.
        dropout: probability of dropping an attention weight in training (see above).
        backend: backend for the fused op (``"auto"``, ``"cpp"``, ``"cuda"``, ``"torch"``).
    """

    def __init__(self, embed_dim: int, num_heads: int, kdim: int | None = None, vdim: int | None = None,
                 bias: bool = True, dropout: float = 0.0, *, backend: str = "auto"):
        super().__init__()
        for name, val in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if isinstance(val, bool) or not isinstance(val, int):
                raise TypeError(f"{name} must be an int; got {type(val).__name__}")
            if val <= 0:
                raise ValueError(f"{name} must be positive; got {val}")
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim must be divisible by num_heads; got embed_dim={embed_dim}, "
                             f"num_heads={num_heads}")
        kdim = embed_dim if kdim is None else kdim
        vdim = embed_dim if vdim is None else vdim
        for name, val in (("kdim", kdim), ("vdim", vdim)):
            if isinstance(val, bool) or not isinstance(val, int):
                raise TypeError(f"{name} must be an int or None; got {type(val).__name__}")
            if val <= 0:
                raise ValueError(f"{name} must be positive; got {val}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)):
            raise TypeError(f"dropout must be a float; got {type(dropout).__name__}")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be in [0, 1]; got {dropout}")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim = kdim
        self.vdim = vdim
        self.dropout = float(dropout)
        self.backend = backend
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.k_proj = nn.Linear(kdim, embed_dim, bias=bias)
        self.v_proj = nn.Linear(vdim, embed_dim, bias=bias)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialise like ``nn.MultiheadAttention``: Xavier-uniform input projections (over the
        stacked ``3E x E`` matrix when ``kdim == vdim == E``), zero biases."""
        if self.kdim == self.embed_dim and self.vdim == self.embed_dim:
            w = torch.empty(3 * self.embed_dim, self.embed_dim)
            nn.init.xavier_uniform_(w)
            with torch.no_grad():
                for i, lin in enumerate((self.q_proj, self.k_proj, self.v_proj)):
                    lin.weight.copy_(w[i * self.embed_dim:(i + 1) * self.embed_dim])
        else:
            for lin in (self.q_proj, self.k_proj, self.v_proj):
                nn.init.xavier_uniform_(lin.weight)
        # out_proj keeps nn.Linear's default weight init, as in nn.MultiheadAttention.
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            if lin.bias is not None:
                nn.init.zeros_(lin.bias)

    @classmethod
    def from_multihead_attention(cls, mha: nn.MultiheadAttention, *, backend: str = "auto"
                                 ) -> "MaskedCrossModalAttention":
        """A module holding a copy of ``mha``'s weights, dropout and shapes.

        The result is batch-first whatever ``mha.batch_first`` is. ``add_bias_kv`` and
        ``add_zero_attn`` have no counterpart here and raise ``ValueError``.
        """
        if not isinstance(mha, nn.MultiheadAttention):
            raise TypeError(f"mha must be a torch.nn.MultiheadAttention; got {type(mha).__name__}")
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("mha uses add_bias_kv or add_zero_attn, which MaskedCrossModalAttention does not support")
        bias = mha.in_proj_bias is not None
        mod = cls(mha.embed_dim, mha.num_heads, kdim=mha.kdim, vdim=mha.vdim, bias=bias, dropout=mha.dropout,
                  backend=backend)
        E = mha.embed_dim
        with torch.no_grad():
            if mha._qkv_same_embed_dim:
                ws = mha.in_proj_weight.split(E)
            else:
                ws = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
            for i, (lin, w) in enumerate(zip((mod.q_proj, mod.k_proj, mod.v_proj), ws)):
                lin.weight.copy_(w)
                if bias:
                    lin.bias.copy_(mha.in_proj_bias[i * E:(i + 1) * E])
            mod.out_proj.weight.copy_(mha.out_proj.weight)
            if bias:
                mod.out_proj.bias.copy_(mha.out_proj.bias)
        return mod.to(device=mha.out_proj.weight.device, dtype=mha.out_proj.weight.dtype)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend ``query`` (B, Tq, E) over ``key`` (B, Tk, kdim) / ``value`` (B, Tk, vdim).

        ``key_mask``: optional bool (B, Tk), True where the key token is observed.
        Returns (B, Tq, E).
        """
        check_tensor(query, "query", ndim=3)
        check_tensor(key, "key", ndim=3)
        check_tensor(value, "value", ndim=3)
        B, Tq, E = query.shape
        if E != self.embed_dim:
            raise ValueError(f"query must be (B, Tq, embed_dim={self.embed_dim}); got {tuple(query.shape)}")
        if key.shape[0] != B or key.shape[2] != self.kdim:
            raise ValueError(f"key must be (B={B}, Tk, kdim={self.kdim}); got {tuple(key.shape)}")
        Tk = key.shape[1]
        if tuple(value.shape) != (B, Tk, self.vdim):
            raise ValueError(f"value must be (B, Tk, vdim) = ({B}, {Tk}, {self.vdim}); got {tuple(value.shape)}")
        for name, t in (("key", key), ("value", value)):
            if t.device != query.device:
                raise ValueError(f"{name} is on {t.device} but query is on {query.device}; move them to one device")
            if t.dtype != query.dtype:
                raise TypeError(f"{name} has dtype {t.dtype} but query has dtype {query.dtype}; cast them to one dtype")
        if key_mask is not None:
            check_bool_mask(key_mask, "key_mask", (B, Tk), query.device)

        H, Dh = self.num_heads, self.head_dim
        # (B, T, E) -> (B, H, T, Dh) views; the op accepts these strides as they are.
        q = self.q_proj(query).view(B, Tq, H, Dh).transpose(1, 2)
        k = self.k_proj(key).view(B, Tk, H, Dh).transpose(1, 2)
        v = self.v_proj(value).view(B, Tk, H, Dh).transpose(1, 2)
        if self.training and self.dropout > 0.0:
            if Tk == 0:
                raise ValueError(f"key must have at least one token (Tk >= 1); got shape {tuple(key.shape)}")
            p, keep = masked_cross_attention_probs(q, k, key_mask, Dh ** -0.5)
            p = F.dropout(p, self.dropout, training=True)
            out = torch.matmul(p, v.to(p.dtype))
            if keep is not None:
                out = out * keep
            out = out.to(q.dtype)
        else:
            out = masked_cross_attention(q, k, v, key_mask, backend=self.backend)
        return self.out_proj(out.transpose(1, 2).reshape(B, Tq, E))

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, kdim={self.kdim}, vdim={self.vdim}, "
                f"bias={self.q_proj.bias is not None}, dropout={self.dropout}, backend={self.backend!r}")
