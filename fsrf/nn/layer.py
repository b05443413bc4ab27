"""``FSRFLayer``: the drop-in fusion layer (DHF factorization + semantic recovery + DAS hooks).

Sections refer to ``docs/FSRF_METHOD.md``. All attention and every loss go through
:mod:`fsrf.ops`, so the compiled kernels are used wherever they are available.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

import torch
from torch import Tensor, nn

from fsrf import ops
from fsrf.config import FSRFConfig
from fsrf.nn.attention import MaskedCrossModalAttention
from fsrf.nn.pooling import ShrinkagePool, WienerPool, _masked_mean
from fsrf.runtime.checks import check_modality_batch
from fsrf.runtime.distributed import gather_rows, global_batch_active

__all__ = ["FSRFLayer", "FSRFOutput"]


@dataclass
class FSRFOutput:
    """What :meth:`FSRFLayer.forward` returns.

    Attributes:
        fused: (B, d_out) fused representation — what the user's head consumes.
        homogeneous, heterogeneous, noise: {name: (B, d_f)}; for a missing modality the
            homogeneous and heterogeneous entries hold the recovered parts (noise is never
            recovered: it is excluded from fusion). Empty dicts when ``dhf=False``.
        pooled: {name: (B, d)} pooled features z_m (0 where the modality is missing).
        available: (B, M) bool, True where modality m has at least one observed frame;
            columns follow :attr:`FSRFLayer.modalities`.
        losses: {"orth", "dered", "hom", "rec"} (and "loo" with ``recovery_loss="view+loo"``)
            unweighted 0-dim tensors in training, {} in eval.
        aux_loss: weighted sum of ``losses`` (0-dim; exactly 0 in eval).
        shared_mean: (B, d_f) shared code s̄ of the available modalities: their homogeneous codes
            averaged, or weighted with ``shared_pool="gated"`` (0 when none is available).
    """

    fused: Tensor
    homogeneous: dict[str, Tensor]
    heterogeneous: dict[str, Tensor]
    noise: dict[str, Tensor]
    pooled: dict[str, Tensor]
    available: Tensor
    losses: dict[str, Tensor] = field(default_factory=dict)
    aux_loss: Tensor | None = None
    shared_mean: Tensor | None = None


def _mlp(d_in: int, d_hidden: int, d_out: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_hidden, d_out))


class _Projection(nn.Module):
    """u_m = Conv1d_k(x_m) (a Linear when k = 1), §1.1; LayerNorm(Conv1d_k(x_m)) when ``norm`` is
    True (``FSRFConfig.proj_norm``). With ``factorized`` (``conv_mode="factorized"``) the window acts
    on the projected frames instead: u_m = Conv1d_k(mask * Linear(x_m)), its k taps d x d and
    initialised to the identity at the centre, so the layer starts as with k = 1."""

    def __init__(self, d_in: int, d_model: int, kernel: int, norm: bool = False, factorized: bool = False) -> None:
        super().__init__()
        self.kernel = kernel
        self.window = None
        if kernel == 1 or factorized:
            self.proj = nn.Linear(d_in, d_model)
        else:
            self.proj = nn.Conv1d(d_in, d_model, kernel, padding=kernel // 2)
        if kernel > 1 and factorized:
            # 2 d^2 weights beside the centre tap instead of MulT's 2 D d: on a 768-dim text with a
            # few hundred samples the full window's extra weights are most of the layer's
            self.window = nn.Conv1d(d_model, d_model, kernel, padding=kernel // 2, bias=False)
            with torch.no_grad():
                self.window.weight.zero_()
                self.window.weight[:, :, kernel // 2] = torch.eye(d_model)
        self.norm = nn.LayerNorm(d_model) if norm else nn.Identity()

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``x`` (B, T, D); ``mask`` (B, T) bool, True = observed (None: every frame). The frames
        marked missing are zeroed before any window reads them."""
        if self.window is not None:
            # zeroed once, after the projection at width d rather than on the D-wide input: a
            # missing frame then enters the window as 0, as it does the full window
            h = self.proj(x)
            if mask is not None:
                h = h * mask.unsqueeze(-1).to(h.dtype)
            return self.norm(self.window(h.transpose(1, 2)).transpose(1, 2))
        if mask is not None:  # a Conv1d window must not read features marked missing
            x = x * mask.unsqueeze(-1).to(x.dtype)
        if self.kernel == 1:
            return self.norm(self.proj(x))
        return self.norm(self.proj(x.transpose(1, 2)).transpose(1, 2))


class _AttentionBlock(nn.Module):
    """A pre-norm transformer block over a partly observed sequence: masked attention of ``x`` over
    ``kv`` (``x`` itself for temporal self-attention, the other modalities for a cross-modal block),
    then a feed-forward network, each added to ``x``. The lineage's encoders (MulT's cross-modal
    transformers, MISA's and DMD's temporal layers) stack such blocks (§1.2, ``encoder_layers``)."""

    def __init__(self, d: int, heads: int, dropout: float, attn_dropout: float, backend: str, *,
                 cross: bool) -> None:
        super().__init__()
        self.norm_q = nn.LayerNorm(d)
        self.norm_kv = nn.LayerNorm(d) if cross else None
        self.attn = MaskedCrossModalAttention(d, heads, dropout=attn_dropout, backend=backend)
        self.norm_ff = nn.LayerNorm(d)
        self.ff = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * d, d))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, kv: Tensor | None, key_mask: Tensor) -> Tensor:
        q = self.norm_q(x)
        kv = q if kv is None else self.norm_kv(kv)
        x = x + self.drop(self.attn(q, kv, kv, key_mask=key_mask))
        return x + self.drop(self.ff(self.norm_ff(x)))


class FSRFLayer(nn.Module):
    """Fusion layer that stays useful when modalities are partly or wholly missing.

    Args:
        modality_dims: ``{name: feature_dim}`` for M >= 2 modalities, any names; the order
            fixes the columns of :attr:`FSRFOutput.available`.
        d_model: model width d (overrides ``config.d_model`` when given).
        num_heads: attention heads (overrides ``config.num_heads`` when given).
        d_out: width of the fused output (overrides ``config.d_out`` when given).
        config: :class:`FSRFConfig` with every other width, weight and switch.

    ``forward(inputs, masks=None)`` takes ``inputs = {name: (B, T_m, D_m)}`` and optional
    ``masks = {name: bool (B, T_m)}`` (True = observed frame). A modality absent from ``inputs``
    is missing for the whole batch; a sample whose mask row is all False is missing that modality.

    A sample with *every* modality missing gets the fusion of the parts recovered from a zero
    homogeneous code: a finite, learned "no information" output that is the same for all such
    samples.
    """

    def __init__(self, modality_dims: Mapping[str, int], d_model: int | None = None, num_heads: int | None = None,
                 d_out: int | None = None, config: FSRFConfig | None = None) -> None:
        super().__init__()
        if not isinstance(modality_dims, Mapping):
            raise TypeError(f"modality_dims must be a mapping {{name: feature_dim}}; got {type(modality_dims).__name__}")
        if len(modality_dims) < 2:
            raise ValueError(f"FSRFLayer needs at least two modalities; got {len(modality_dims)}: {list(modality_dims)}")
        for name, dim in modality_dims.items():
            if not isinstance(name, str) or not name:
                raise TypeError(f"modality names must be non-empty str; got {name!r}")
            if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
                raise ValueError(f"modality_dims[{name!r}] must be a positive int feature dim; got {dim!r}")
        if config is None:
            config = FSRFConfig()
        elif not isinstance(config, FSRFConfig):
            raise TypeError(f"config must be an FSRFConfig; got {type(config).__name__}")
        overrides = {k: v for k, v in (("d_model", d_model), ("num_heads", num_heads), ("d_out", d_out)) if v is not None}
        self.config = config.replace(**overrides) if overrides else config
        cfg = self.config
        self.modalities = tuple(modality_dims)
        self.modality_dims = dict(modality_dims)
        d, df = cfg.d_model, cfg.factor_dim
        M = len(self.modalities)
        # with pool_shrink every encoder reads the shrunk mean already
        self._private_shrink = cfg.dhf and cfg.private_pool != "same" and not cfg.pool_shrink

        factorized = cfg.conv_mode == "factorized"
        self.proj = nn.ModuleDict({m: _Projection(D, d, cfg.kernel_for(m), cfg.proj_norm, factorized=factorized)
                                   for m, D in modality_dims.items()})
        attn_backend = self.op_backend("masked_cross_attention")
        if cfg.encoder_layers == 0:
            self.attn = nn.ModuleDict({m: MaskedCrossModalAttention(d, cfg.num_heads, dropout=cfg.attn_dropout,
                                                                    backend=attn_backend)
                                       for m in self.modalities})
        else:
            def blocks(cross: bool) -> nn.ModuleList:
                return nn.ModuleList(_AttentionBlock(d, cfg.num_heads, cfg.dropout, cfg.attn_dropout, attn_backend,
                                                     cross=cross) for _ in range(cfg.encoder_layers))

            self.temporal = nn.ModuleDict({m: blocks(False) for m in self.modalities})
            self.cross = nn.ModuleDict({m: blocks(True) for m in self.modalities})
        if cfg.pool_norm:
            self.pool_ln = nn.ModuleDict({m: nn.LayerNorm(d) for m in self.modalities})
        if cfg.pool_shrink:
            self.pool_shrink = nn.ModuleDict({m: ShrinkagePool(d, global_batch=cfg.global_batch) for m in self.modalities})
        if cfg.dhf:
            self.enc_hom = _mlp(d, df, df, cfg.dropout)  # one encoder shared by all modalities (§2)
            self.enc_het = nn.ModuleDict({m: _mlp(d, df, df, cfg.dropout) for m in self.modalities})
            self.enc_noise = nn.ModuleDict({m: _mlp(d, df, df, cfg.dropout) for m in self.modalities})
            if self._private_shrink:
                pool = ShrinkagePool if cfg.private_pool == "shrink" else WienerPool
                self.pool_private = nn.ModuleDict({m: pool(d, global_batch=cfg.global_batch) for m in self.modalities})
            self.dec = nn.ModuleDict({m: _mlp(3 * df, d, d, cfg.dropout) for m in self.modalities})
            self.recover_het = nn.ModuleDict({m: _mlp(df, df, df, cfg.dropout) for m in self.modalities})
            if cfg.shared_pool == "gated":
                # zero-initialised: s̄ starts as the plain mean and learns whom to trust
                self.shared_gate = nn.Linear(df, 1)
                nn.init.zeros_(self.shared_gate.weight)
                nn.init.zeros_(self.shared_gate.bias)
                self.shared_prior = nn.Parameter(torch.zeros(M))
        flags = M if cfg.fusion_availability else 0
        if cfg.dhf:
            self.fusion = _mlp((1 + M) * df + flags, cfg.out_dim, cfg.out_dim, cfg.dropout)
        else:
            self.fusion = _mlp(M * d + flags, cfg.out_dim, cfg.out_dim, cfg.dropout)
        self._pairs, self._decor = self._constraint_plan(M)

    def op_backend(self, op: str) -> str:
        """The ``backend=`` this layer passes to ``fsrf.ops.<op>``: ``config.backend`` where the op
        implements it, else ``"auto"`` (so that, like :func:`fsrf.use_backend` but for this layer
        only, ``FSRFConfig(backend="torch")`` puts every op on its reference and
        ``backend="cpp"`` moves attention without breaking the losses)."""
        be = self.config.backend
        return be if be in ops.IMPLEMENTED[op] else "auto"

    # -- the constraint plan of §2: which factor pairs and which factors ---------------------
    @staticmethod
    def _constraint_plan(M: int) -> tuple[list[tuple[int, int]], list[int]]:
        # factors are laid out [s_1, p_1, n_1, s_2, p_2, n_2, ...]
        pairs = []
        for m in range(M):
            s, p, n = 3 * m, 3 * m + 1, 3 * m + 2
            pairs += [(s, p), (s, n), (p, n)]
        for m in range(M):
            for m2 in range(m + 1, M):
                pairs.append((3 * m + 1, 3 * m2 + 1))
        decor = [i for m in range(M) for i in (3 * m, 3 * m + 1)]
        return pairs, decor

    # -- input handling ---------------------------------------------------------------------
    def _check_inputs(self, inputs, masks) -> tuple[int, torch.device]:
        batch, device = check_modality_batch(inputs, masks, dims=self.modality_dims)
        param_dtype = next((p.dtype for p in self.parameters() if p.is_floating_point()), None)
        dtype = next(iter(inputs.values())).dtype
        if param_dtype is not None and dtype != param_dtype:
            try:
                autocast = torch.is_autocast_enabled(device.type)
            except TypeError:  # torch < 2.4 has one switch per device family
                autocast = torch.is_autocast_enabled() if device.type == "cuda" else torch.is_autocast_cpu_enabled()
            # autocast casts float32/16 and bfloat16 operands of each matmul itself, but never float64
            if not autocast:
                raise TypeError(f"inputs have dtype {dtype} but the layer's parameters are {param_dtype}; convert "
                                f"the model with .to({dtype}), the inputs with .to({param_dtype}), or run the "
                                f"forward under torch.autocast")
            if dtype == torch.float64:
                raise TypeError(f"inputs have dtype torch.float64, which torch.autocast does not cast, but the "
                                f"layer's parameters are {param_dtype}; convert the inputs with .to({param_dtype}) "
                                f"or the model with .to(torch.float64)")
        return batch, device

    # -- forward ----------------------------------------------------------------------------
    def forward(self, inputs: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None) -> FSRFOutput:
        """Encode, factorize, recover and fuse; see the class docstring for the arguments.

        Dtypes: every input has one floating dtype (a ``TypeError`` naming both otherwise). Outside
        ``torch.autocast`` it must be the dtype of the layer's parameters — a ``TypeError`` says
        to convert the model (``layer.to(dtype)``) or the inputs, or to use autocast. Under
        autocast, float32, float16 and bfloat16 inputs are accepted and autocast picks the compute
        dtype; float64 inputs are refused there, since autocast does not cast them.
        """
        B, device = self._check_inputs(inputs, masks)
        cfg = self.config
        names = self.modalities

        # §1.1 projection; an absent modality becomes one unobserved zero frame.
        u, k = {}, {}
        for m in names:
            if m in inputs:
                x = inputs[m]
                mk = masks[m] if masks is not None and m in masks else torch.ones(x.shape[:2], dtype=torch.bool, device=device)
                u[m] = self.proj[m](x, mk)
                k[m] = mk
        # the zero frames take the projections' dtype, which autocast may have lowered
        ref_dtype = next(iter(u.values())).dtype
        for m in names:
            if m not in inputs:
                u[m] = torch.zeros(B, 1, cfg.d_model, device=device, dtype=ref_dtype)
                k[m] = torch.zeros(B, 1, dtype=torch.bool, device=device)
        available = torch.stack([k[m].any(dim=1) for m in names], dim=1)  # (B, M)

        # §1.2 temporal self-attention (encoder_layers > 0) and masked cross-modal attention,
        # §1.3 masked mean pooling
        if cfg.encoder_layers > 0:
            for m in names:
                for block in self.temporal[m]:
                    u[m] = block(u[m], None, k[m])
        z, z_private = {}, {}
        for i, m in enumerate(names):
            others = [n for n in names if n != m]
            kv = torch.cat([u[n] for n in others], dim=1)
            kv_mask = torch.cat([k[n] for n in others], dim=1)
            if cfg.encoder_layers > 0:
                c = u[m]
                for block in self.cross[m]:
                    c = block(c, kv, kv_mask)
            else:
                c = u[m] + self.attn[m](u[m], kv, kv, key_mask=kv_mask)
            if cfg.pool_shrink:
                # a mean over few or noisy frames is pulled towards the typical one by its own
                # evidence; a missing modality comes out exactly 0
                z[m] = self.pool_shrink[m](c, k[m])
                continue
            if self._private_shrink:
                # what is particular to one modality is read from a mean whose noise was shrunk by its
                # own evidence; what is shared is read from the normalised z_m as before. One pass
                # over the frames gives both means.
                z_private[m], z[m] = self.pool_private[m](c, k[m], return_mean=True)
            else:
                z[m] = _masked_mean(c, k[m])[0].to(c.dtype)
            if cfg.pool_norm:
                # the mean of few frames is noisier and so larger; normalised, its noise shrinks the
                # signal's share instead of adding to it. A missing modality stays exactly 0.
                z[m] = self.pool_ln[m](z[m]) * available[:, i:i + 1].to(z[m].dtype)

        # the fusion may see which modalities are there (a zero vector and a missing one differ)
        flags = [available.to(ref_dtype)] if cfg.fusion_availability else []
        if not cfg.dhf:
            fused = self.fusion(torch.cat([z[m] for m in names] + [f.to(z[names[0]].dtype) for f in flags], dim=-1))
            zero = fused.new_zeros(())
            return FSRFOutput(fused=fused, homogeneous={}, heterogeneous={}, noise={}, pooled=z,
                              available=available, losses={}, aux_loss=zero, shared_mean=None)

        # §2 factorization
        s = {m: self.enc_hom(z[m]) for m in names}
        zp = z_private or z
        p = {m: self.enc_het[m](zp[m]) for m in names}
        n = {m: self.enc_noise[m](zp[m]) for m in names}

        # §3 recovery: s̄ over available modalities; missing parts substituted
        a = available.to(s[names[0]].dtype)
        s_stack = torch.stack([s[m] for m in names], dim=1)  # (B, M, d_f)
        s_bar = self._shared_mean(s_stack, a)
        s_out, p_out = {}, {}
        for i, m in enumerate(names):
            am = a[:, i:i + 1]
            if cfg.recovery:
                s_out[m] = am * s[m] + (1 - am) * s_bar
                p_out[m] = am * p[m] + (1 - am) * self.recover_het[m](s_bar)
            else:
                s_out[m] = am * s[m]
                p_out[m] = am * p[m]
        fused = self.fusion(torch.cat([s_bar] + [p_out[m] for m in names] + [f.to(s_bar.dtype) for f in flags], dim=-1))

        losses: dict[str, Tensor] = {}
        aux = fused.new_zeros((), dtype=torch.float32)
        if self.training:
            losses = self._dhf_losses(z, s, p, n, available)
            aux = cfg.weighted_aux(losses, zero=aux)
        return FSRFOutput(fused=fused, homogeneous=s_out, heterogeneous=p_out, noise=n, pooled=z,
                          available=available, losses=losses, aux_loss=aux, shared_mean=s_bar)

    # -- §2 constraints ---------------------------------------------------------------------
    def _dhf_losses(self, z, s, p, n, available) -> dict[str, Tensor]:
        cfg = self.config
        names = self.modalities
        factors, fmasks = [], []
        for i, m in enumerate(names):
            for f in (s[m], p[m], n[m]):
                # losses accumulate in fp32 whatever the autocast dtype of the encoders
                factors.append(f.float())
                fmasks.append(available[:, i])
        avail_all = available
        if global_batch_active(cfg.global_batch):
            # batch statistics over every process's rows (the per-sample terms below stay local:
            # DDP's gradient average already makes them global means)
            factors = [gather_rows(f) for f in factors]
            avail_all = gather_rows(available)
            fmasks = [avail_all[:, i] for i in range(len(names)) for _ in range(3)]
        terms = ops.factor_constraints(factors, self._pairs, self._decor, masks=fmasks,
                                       detach_norm=cfg.detach_norm, orth_eps=cfg.orth_eps,
                                       decor_eps=cfg.decor_eps, backend=self.op_backend("factor_constraints"))
        n_pairs = len(self._pairs)
        orth = terms[:n_pairs].sum() if cfg.orth_reduction == "sum" else terms[:n_pairs].mean()
        dered = terms[n_pairs:].sum()

        s_all = [factors[3 * i] for i in range(len(names))]
        hom_pairs = [self._mmd(s_all[i], s_all[j], avail_all[:, i], avail_all[:, j])
                     for i in range(len(names)) for j in range(i + 1, len(names))]
        hom = torch.stack(hom_pairs).sum() if cfg.hom_reduction == "sum" else torch.stack(hom_pairs).mean()

        rec = orth.new_zeros(())
        for i, m in enumerate(names):
            recon = self.dec[m](torch.cat([s[m], p[m], n[m]], dim=-1))
            # a detached target: otherwise the cheapest way to reconstruct z is to shrink z itself
            target = z[m].detach() if cfg.rec_detach_target else z[m]
            err = (recon.float() - target.float()).pow(2).mean(dim=-1)
            w = available[:, i].float()
            rec = rec + (err * w).sum() / w.sum().clamp_min(1.0)
        out = {"orth": orth, "dered": dered, "hom": hom, "rec": rec}
        if cfg.recovery and cfg.recovery_loss == "view+loo":
            out["loo"] = self._loo_recovery(s, p, available)
        return out

    def _shared_mean(self, S: Tensor, a: Tensor, score: Tensor | None = None) -> Tensor:
        """s̄: the homogeneous codes ``S`` (B, M, d_f) of the modalities where ``a`` (B, M) is 1,
        averaged (``shared_pool="mean"``) or weighted by a softmax over them of a learned score
        (``"gated"``; ``score``, from :meth:`_gate_score`, is computed when not given); 0 for a
        row with none."""
        acc = torch.promote_types(S.dtype, torch.float32)  # sums in fp32 at least, under autocast too
        if self.config.shared_pool == "mean":
            a = a.to(acc)
            return ((S.to(acc) * a.unsqueeze(-1)).sum(dim=1) / a.sum(dim=1, keepdim=True).clamp_min(1.0)).to(S.dtype)
        score = (self._gate_score(S) if score is None else score).to(acc)
        on = a > 0
        # as the attention reference masks keys: a row with none keeps every entry (finite
        # weights) and is zeroed afterwards, so it gets 0 and a zero gradient, never NaN
        has = on.any(dim=1, keepdim=True)
        w = torch.softmax(score.masked_fill(~(on | ~has), float("-inf")), dim=1) * has
        return (S.to(acc) * w.unsqueeze(-1)).sum(dim=1).to(S.dtype)

    def _gate_score(self, S: Tensor) -> Tensor:
        """The gate's score of each homogeneous code, (B, M)."""
        return self.shared_gate(S).squeeze(-1) + self.shared_prior

    def _loo_recovery(self, s, p, available) -> Tensor:
        """Leave-one-out recovery: each available ``p_m`` (detached) predicted by ``G_m`` from the
        shared code ``s̄`` of the other available modalities (pooled as in the forward), so ``G_m``
        learns every pattern the batch holds, not only the ones the second view happens to draw."""
        names = self.modalities
        a = available.float()
        S = torch.stack([s[m] for m in names], dim=1)  # (B, M, d_f)
        # a code's score does not depend on which others are left out: scored once for all M
        score = self._gate_score(S) if self.config.shared_pool == "gated" else None
        count = a.sum(dim=1)
        loss = a.new_zeros(())
        for i, m in enumerate(names):
            others = count - a[:, i]
            w = a[:, i] * (others > 0).float()
            rest = a.clone()
            rest[:, i] = 0.0
            s_rest = self._shared_mean(S, rest, score)
            err = (self.recover_het[m](s_rest.to(s[m].dtype)).float() - p[m].detach().float()).pow(2).mean(dim=-1)
            loss = loss + (err * w).sum() / w.sum().clamp_min(1.0)
        return loss

    def _mmd(self, x: Tensor, y: Tensor, mx: Tensor | None = None, my: Tensor | None = None) -> Tensor:
        """MMD² of the config's kernel between x and y (their rows where ``mx`` / ``my`` are True:
        0 when either side has < 2), divided by the number of bandwidths with ``mmd_normalize``."""
        cfg = self.config
        # the op's row masks select the rows (pooled bandwidth included) without indexing: no
        # data-dependent shape, no host sync, one graph under torch.compile
        d = ops.mmd(x.float(), y.float(), x_mask=mx, y_mask=my, num_kernels=cfg.mmd_num_kernels,
                    kernel_mul=cfg.mmd_kernel_mul, unbiased=cfg.mmd_unbiased, backend=self.op_backend("mmd"))
        return d / cfg.mmd_num_kernels if cfg.mmd_normalize else d

    # -- §4 DAS between two views -----------------------------------------------------------
    def distill(self, out_a: FSRFOutput, out_b: FSRFOutput) -> dict[str, Tensor]:
        """Distribution-aligned self-distillation losses between two views of one batch (§4).

        ``out_a`` is the richer view (the batch as given), ``out_b`` the further-corrupted one.
        Returns unweighted 0-dim tensors ``{"kl", "dist", "recov"}``.
        """
        for name, o in (("out_a", out_a), ("out_b", out_b)):
            if not isinstance(o, FSRFOutput):
                raise TypeError(f"{name} must be an FSRFOutput from this layer; got {type(o).__name__}")
        if out_a.fused.shape != out_b.fused.shape:
            raise ValueError(f"out_a and out_b must come from two views of one batch; fused shapes "
                             f"{tuple(out_a.fused.shape)} vs {tuple(out_b.fused.shape)}")
        cfg = self.config
        fa, fb = out_a.fused.float(), out_b.fused.float()
        if global_batch_active(cfg.global_batch):
            fa, fb = gather_rows(fa), gather_rows(fb)  # KL batch mean and MMD over every process's rows
        T = cfg.kl_temperature
        kl_be = self.op_backend("kl_divergence")
        if cfg.kl_stop_grad == "both":
            kl = ops.kl_divergence(fb, fa, temperature=T, symmetric=True, detach_target=True, backend=kl_be)
        elif cfg.kl_stop_grad == "none":
            kl = ops.kl_divergence(fb, fa, temperature=T, symmetric=True, detach_target=False, backend=kl_be)
        else:  # "richer": view A only teaches
            kl = ops.kl_divergence(fb, fa.detach(), temperature=T, symmetric=True, detach_target=False,
                                   backend=kl_be)
        dist = self._mmd(fa, fb) if fa.shape[0] >= 2 else fa.new_zeros(())
        recov = fa.new_zeros(())
        if cfg.dhf and cfg.recovery:
            lost = out_a.available & ~out_b.available  # present in A, missing in B
            for i, m in enumerate(self.modalities):
                w = lost[:, i].float()
                denom = w.sum().clamp_min(1.0)
                e_p = (out_b.heterogeneous[m].float() - out_a.heterogeneous[m].detach().float()).pow(2).mean(-1)
                e_s = (out_b.homogeneous[m].float() - out_a.homogeneous[m].detach().float()).pow(2).mean(-1)
                recov = recov + ((e_p + e_s) * w).sum() / denom
        return {"kl": kl, "dist": dist, "recov": recov}

    def extra_repr(self) -> str:
        c = self.config
        return (f"modalities={dict(self.modality_dims)}, d_model={c.d_model}, heads={c.num_heads}, "
                f"d_factor={c.factor_dim}, d_out={c.out_dim}, dhf={c.dhf}, recovery={c.recovery}")
