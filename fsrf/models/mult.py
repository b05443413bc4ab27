"""``MulT``: a cross-modal transformer in the style of MulT (Tsai et al., ACL 2019).

Each target modality is reinforced by every other modality through a stack of cross-modal
attention blocks (queries from the target, keys and values from the source: pre-LayerNorm,
residual, position-wise feed-forward); the reinforced streams of one target are concatenated,
projected and passed through one self-attention block; each target is pooled over its observed
steps and the pooled vectors, with availability flags, feed a one-hidden-layer head.

Written here from the paper's description. Differences from the published model, made for
missing modalities: masked keys are skipped (:class:`fsrf.nn.MaskedCrossModalAttention`; a query
whose source is entirely missing gets a zero attention output), and each target is pooled by a
masked mean instead of taking its last time step, which may be padding or dropped.
"""

from __future__ import annotations

import math
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fsrf.models._inputs import gather, masked_mean
from fsrf.models.pretrained import PretrainedMixin
from fsrf.nn.attention import MaskedCrossModalAttention

__all__ = ["MulT"]


def _sinusoid(T: int, d: int, device, dtype) -> Tensor:
    pos = torch.arange(T, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, d, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe = torch.zeros(T, d, device=device)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return pe.to(dtype)


class _Block(nn.Module):
    """Pre-norm attention block: ``x + attn(LN(x), LN(src)) `` then ``x + FFN(LN(x))``."""

    def __init__(self, d: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.ln_q, self.ln_kv, self.ln_ff = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = MaskedCrossModalAttention(d, heads)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, src: Tensor, src_mask: Tensor) -> Tensor:
        kv = self.ln_kv(src)
        x = x + self.drop(self.attn(self.ln_q(x), kv, kv, key_mask=src_mask))
        return x + self.drop(self.ff(self.ln_ff(x)))


class MulT(PretrainedMixin, nn.Module):
    """Cross-modal transformer baseline.

    Args:
        modality_dims: ``{name: feature_dim}`` (M >= 2).
        d_model: width of every stream (divisible by ``num_heads``).
        num_heads: attention heads.
        layers: cross-modal blocks per (target, source) pair.
        dropout: dropout in the blocks and the head.
        conv_kernel: temporal kernel of the input projections (odd; 1 = per-step linear).

    ``forward(inputs, masks)`` returns predictions (B,); ``training_loss`` is the L1 loss.
    """

    def __init__(self, modality_dims: Mapping[str, int], d_model: int = 32, num_heads: int = 4, layers: int = 2,
                 dropout: float = 0.1, conv_kernel: int = 1) -> None:
        super().__init__()
        if not isinstance(modality_dims, Mapping) or len(modality_dims) < 2:
            raise ValueError(f"MulT needs at least two modalities; got {modality_dims!r}")
        for name, v in (("d_model", d_model), ("num_heads", num_heads), ("layers", layers)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int; got {v!r}")
        if d_model % num_heads or d_model % 2:
            raise ValueError(f"d_model ({d_model}) must be even and divisible by num_heads ({num_heads})")
        if isinstance(conv_kernel, bool) or not isinstance(conv_kernel, int) or conv_kernel < 1 or conv_kernel % 2 == 0:
            raise ValueError(f"conv_kernel must be an odd positive int; got {conv_kernel!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout <= 1.0:
            raise ValueError(f"dropout must be a number in [0, 1]; got {dropout!r}")
        self.modality_dims = {str(m): int(d) for m, d in modality_dims.items()}
        self.modalities = tuple(self.modality_dims)
        self.d_model = d_model
        self.conv_kernel = conv_kernel
        M = len(self.modalities)
        self.proj = nn.ModuleDict({m: nn.Conv1d(D, d_model, conv_kernel, padding=conv_kernel // 2, bias=False)
                                   for m, D in self.modality_dims.items()})
        self.cross = nn.ModuleDict({
            f"{t}<{s}": nn.ModuleList([_Block(d_model, num_heads, dropout) for _ in range(layers)])
            for t in self.modalities for s in self.modalities if s != t})
        self.merge = nn.ModuleDict({t: nn.Linear((M - 1) * d_model, d_model) for t in self.modalities})
        self.self_attn = nn.ModuleDict({t: _Block(d_model, num_heads, dropout) for t in self.modalities})
        self.ln_out = nn.LayerNorm(d_model)
        self.head = nn.Sequential(nn.Linear(M * d_model + M, d_model), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(d_model, 1))

    def _streams(self, xs, ks, B: int, ref: Tensor) -> dict[str, Tensor]:
        out = {}
        for m in self.modalities:
            x = xs[m]
            if x is None:  # one unobserved zero step stands in for an absent modality
                out[m] = ref.new_zeros(B, 1, self.d_model)
                continue
            x = x * ks[m].unsqueeze(-1).to(x.dtype)  # a conv window must not read dropped steps
            h = self.proj[m](x.transpose(1, 2)).transpose(1, 2) * math.sqrt(self.d_model)
            out[m] = h + _sinusoid(h.shape[1], self.d_model, h.device, h.dtype)
        return out

    def forward(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> Tensor:
        """Predicted sentiment intensity, shape (B,)."""
        B, xs, ks = gather(self.modality_dims, inputs, masks)
        ref = next(x for x in xs.values() if x is not None)
        h = self._streams(xs, ks, B, ref)
        pooled, avail = [], []
        for t in self.modalities:
            reinforced = []
            for s in self.modalities:
                if s == t:
                    continue
                x = h[t]
                for block in self.cross[f"{t}<{s}"]:
                    x = block(x, h[s], ks[s])
                reinforced.append(x)
            x = self.merge[t](torch.cat(reinforced, dim=-1))
            x = self.self_attn[t](x, x, ks[t])
            a = ks[t].any(dim=1, keepdim=True).to(x.dtype)
            pooled.append(self.ln_out(masked_mean(x, ks[t])) * a)
            avail.append(a)
        return self.head(torch.cat(pooled + avail, dim=-1)).squeeze(-1)

    def training_loss(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None, labels: Tensor,
                      generator: torch.Generator | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """L1 loss on the batch (MulT's published objective for regression)."""
        loss = F.l1_loss(self(inputs, masks).float(), labels.float())
        return loss, {"task_a": loss.detach(), "total": loss.detach()}
