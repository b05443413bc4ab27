"""The peers and shapes of fsrf's benchmarks, defined once for ``bench_*.py`` and ``gpu_report.py``.

A *peer* is what an fsrf op is measured against: its formula written plainly in eager PyTorch
(``eager``), ``torch.compile`` of that formula (``compile``) and, for attention,
``scaled_dot_product_attention`` with a boolean mask (``sdpa``). fsrf's own rows are the public op
pinned to one backend (``fsrf-<backend>``). :func:`peer` turns these names into callables.

Shape sets: the ``*_SHAPES`` dicts are the pytest-benchmark shapes, keyed by the label that names
the benchmark group (BENCHMARKS.md quotes the groups, so labels and shapes stay as they are);
:data:`REPORT_SHAPES` are the shapes of ``gpu_report.py`` per device.

:func:`make_step` is the call a benchmark times (one forward, or forward and backward), and
:func:`unavailable` says why an implementation cannot be benchmarked here.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F

import fsrf
from fsrf.runtime import extension as _extension
from fsrf.runtime.backend import check_finite_enabled

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
MODES = ("fwd", "fwd+bwd")
#: The implementations of the losses' benchmarks, in the order of their rows.
LOSS_IMPLS = ("eager", "compile", "fsrf-torch", "fsrf-triton")
#: Those of the attention benchmark; its eager formula is timed by ``gpu_report.py`` only.
ATTENTION_IMPLS = ("fsrf-cpp", "fsrf-torch", "sdpa")

# ============================================================================================
# Shape sets
# ============================================================================================

#: (B, H, Tq, Tk, Dh): a multimodal-sentiment batch and long sequences.
ATTENTION_SHAPES = {"msa": (32, 8, 50, 50, 32), "long": (4, 8, 1024, 1024, 64)}
#: The attention memory-scaling benchmark's shapes by Tq = Tk; the first is its baseline.
ATTENTION_MEMORY_SHAPES = {T: (1, 8, T, T, 64) for T in (1024, 2048, 4096)}
#: (rows, classes).
KL_SHAPES = {"fsrf 64x128": (64, 128), "large 4096x4096": (4096, 4096)}
#: (N, M, d): samples of x, samples of y, features.
MMD_SHAPES = {"fsrf 64x64x128": (64, 64, 128), "large 8192x8192x256": (8192, 8192, 256)}
#: The (N, M, d) of the spec's memory bound (forward + backward under 512 MiB).
MMD_MEMORY_BOUND_SHAPE = (20000, 20000, 64)
#: (N, d_a, d_b).
ORTHOGONALITY_SHAPES = {"fsrf 64x128/64x128": (64, 128, 128), "large 8192x256/8192x256": (8192, 256, 256)}
#: (N, d).
DECORRELATION_SHAPES = {"fsrf 64x128": (64, 128), "large 8192x256": (8192, 256)}
#: (N, d) of each of the 9 factors.
FACTOR_CONSTRAINTS_SHAPES = {"fsrf 9x(64x128)": (64, 128), "large 9x(8192x256)": (8192, 256)}

# The spec's "N = 64, d = 128, 15 factor pairs" as FSRF lays it out: three modalities × (s, p, n)
# = 9 factors; (s,p), (s,n), (p,n) per modality, (p_m, p_m') and (s_m, s_m') across modalities =
# 15 orthogonality terms, and decorrelation of every s_m and p_m = 6 terms.
MODALITIES = 3
FSRF_PAIRS = ([(3 * m + a, 3 * m + b) for m in range(MODALITIES) for a, b in ((0, 1), (0, 2), (1, 2))]
              + [(3 * m + 1, 3 * k + 1) for m in range(MODALITIES) for k in range(m + 1, MODALITIES)]
              + [(3 * m, 3 * k) for m in range(MODALITIES) for k in range(m + 1, MODALITIES)])
FSRF_DECOR = [3 * m + a for m in range(MODALITIES) for a in (0, 1)]
assert len(FSRF_PAIRS) == 15 and len(FSRF_DECOR) == 6
# gpu_report.py's grouping: the same 15 + 6 terms of equal cost, over 6 factors (all pairs).
REPORT_FACTORS = 6
REPORT_PAIRS = [(i, j) for i in range(REPORT_FACTORS) for j in range(i + 1, REPORT_FACTORS)]
REPORT_DECOR = list(range(REPORT_FACTORS))

#: gpu_report.py's shapes: ``cuda`` the measured sizes, ``cpu`` tiny ones for its smoke run of the
#: benchmark code. Layouts as in the pytest sets above; the model step is (B, T).
REPORT_SHAPES = {
    "masked_cross_attention": {"cuda": tuple(ATTENTION_SHAPES.values()),
                               "cpu": ((4, 2, 10, 10, 8), (2, 2, 70, 70, 16))},
    "kl_divergence": {"cuda": (KL_SHAPES["large 4096x4096"],), "cpu": ((64, 100),)},
    "mmd": {"cuda": (MMD_SHAPES["large 8192x8192x256"],), "cpu": ((300, 300, 16),)},
    "orthogonality_loss": {"cuda": (ORTHOGONALITY_SHAPES["fsrf 64x128/64x128"], (65536, 128, 128)),
                           "cpu": ((16, 8, 8), (64, 16, 16))},
    "decorrelation_loss": {"cuda": (DECORRELATION_SHAPES["fsrf 64x128"], (65536, 256)),
                           "cpu": ((16, 8), (64, 16))},
    "factor_constraints": {"cuda": (FACTOR_CONSTRAINTS_SHAPES["fsrf 9x(64x128)"], (4096, 256)),
                           "cpu": ((16, 8), (32, 16))},
    "fsrf_model_step": {"cuda": ((64, 50),), "cpu": ((4, 6),)},
}
#: Feature widths of the model-step benchmark (CMU-MOSEI's text, audio and vision features).
MOSEI_DIMS = {"text": 768, "audio": 74, "vision": 35}
#: The whole training step (bench_train_step.py): label -> (B, {modality: T}). MOSEI's aligned
#: features have 50 steps each; the unaligned ones 50 text tokens, 500 audio and 500 video frames.
TRAIN_STEP_SHAPES = {
    "MOSEI aligned B=64 T=50": (64, {"text": 50, "audio": 50, "vision": 50}),
    "MOSEI unaligned B=64 T=50/500/500": (64, {"text": 50, "audio": 500, "vision": 500}),
}
#: d of the training-step benchmark (FSRFConfig's default).
TRAIN_STEP_D_MODEL = 128
#: Its implementations, in the order of the table's rows; the last runs on CUDA only.
TRAIN_STEP_IMPLS = ("eager torch", "eager auto", "compile(auto)", "compile(auto, fullgraph)",
                    "compile(auto, fullgraph, reduce-overhead)")

# ============================================================================================
# FSRF's settings of the ops (the eager formulas default to them too)
# ============================================================================================

KL_TEMPERATURE = 2.0
MMD_KERNELS, MMD_KERNEL_MUL = 5, 2.0
#: The keyword arguments :func:`fsrf_peer` passes to fsrf's op unless told otherwise.
SETTINGS = {
    "kl_divergence": {"temperature": KL_TEMPERATURE, "symmetric": True, "detach_target": True},
    "mmd": {"num_kernels": MMD_KERNELS, "kernel_mul": MMD_KERNEL_MUL},
    "factor_constraints": {"pairs": FSRF_PAIRS, "decorrelate": FSRF_DECOR},
}

# ============================================================================================
# Eager formulas (what a model would write without fsrf)
# ============================================================================================


def attention_eager(q, k, v, mask, scale=None):
    """Scores, -inf at unobserved keys, softmax, times v; a sample without keys gets zeros (fsrf's
    convention, where a plain softmax would give NaN)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    has = mask.any(-1)
    s = s.masked_fill(~(mask | ~has[:, None])[:, None, None, :], float("-inf"))
    return torch.matmul(torch.softmax(s, -1), v) * has[:, None, None, None].to(q.dtype)


def attention_sdpa(q, k, v, mask=None, scale=None):
    """``scaled_dot_product_attention`` with the key mask as a boolean ``attn_mask``."""
    attn_mask = None if mask is None else mask[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scale)


def kl_eager(s, t, temperature=KL_TEMPERATURE, symmetric=True):
    """log_softmax of both at ``temperature``, kl_div against the detached other side (both
    directions when ``symmetric``), times T²."""
    ls = F.log_softmax(s / temperature, dim=-1)
    lt = F.log_softmax(t / temperature, dim=-1)
    loss = F.kl_div(ls, lt.detach(), reduction="batchmean", log_target=True)
    if symmetric:
        loss = loss + F.kl_div(lt, ls.detach(), reduction="batchmean", log_target=True)
    return loss * (temperature * temperature)


def _gaussian_mmd(l2, n_x):
    # Biased MMD² from the squared distances of the pooled sample: σ² is their mean off the
    # diagonal, spread over MMD_KERNELS bandwidths around it.
    n = l2.shape[0]
    bw = l2.detach().sum() / (n * n - n)
    bw = bw / (MMD_KERNEL_MUL ** (MMD_KERNELS // 2))
    kern = sum(torch.exp(-l2 / (bw * MMD_KERNEL_MUL ** i)) for i in range(MMD_KERNELS))
    return kern[:n_x, :n_x].mean() + kern[n_x:, n_x:].mean() - 2 * kern[:n_x, n_x:].mean()


def mmd_eager(x, y):
    """DAN style: ``torch.cdist`` of the pooled sample squared, full kernel matrices."""
    total = torch.cat([x, y])
    return _gaussian_mmd(torch.cdist(total, total) ** 2, x.shape[0])


def mmd_eager_gram(x, y):
    """As :func:`mmd_eager` with the squared distances from the Gram matrix (no square root):
    the cheaper dense form, the one ``gpu_report.py`` times."""
    u = torch.cat([x, y])
    sq = (u * u).sum(1)
    return _gaussian_mmd((sq[:, None] + sq[None, :] - 2 * u @ u.T).clamp_min(0), x.shape[0])


def orth_eager(a, b, eps=1e-6):
    """MISA's DiffLoss: centre columns, divide rows by (detached norm + eps), mean of squared AᵀB."""
    a = a - a.mean(dim=0, keepdim=True)
    b = b - b.mean(dim=0, keepdim=True)
    a = a / (a.norm(dim=1, keepdim=True).detach() + eps)
    b = b / (b.norm(dim=1, keepdim=True).detach() + eps)
    return (a.T @ b).pow(2).mean()


def decor_eager(z, eps=1e-5):
    """Barlow-Twins off-diagonal penalty: standardise columns (biased variance), C = ZsᵀZs/N, mean
    of the squared off-diagonal."""
    n, d = z.shape
    zs = (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + eps)
    c = zs.T @ zs / n
    off = c - torch.diag(torch.diagonal(c))
    return off.pow(2).sum() / (d * (d - 1))


def constraints_eager(pairs, decorrelate):
    """The Python loop fsrf's grouped constraints replace: ``f(factors, masks=None)`` stacks one
    :func:`orth_eager` per pair and one :func:`decor_eager` per decorrelated factor. With masks
    (one boolean row mask per factor) each term selects its rows by boolean indexing."""
    def loop(factors, masks=None):
        if masks is None:
            return torch.stack([orth_eager(factors[i], factors[j]) for i, j in pairs]
                               + [decor_eager(factors[i]) for i in decorrelate])
        out = []
        for i, j in pairs:
            rows = masks[i] & masks[j]
            out.append(orth_eager(factors[i][rows], factors[j][rows]))
        for i in decorrelate:
            out.append(decor_eager(factors[i][masks[i]]))
        return torch.stack(out)
    return loop


#: The eager peer of each op in the pytest benchmarks.
EAGER = {
    "masked_cross_attention": attention_eager,
    "kl_divergence": kl_eager,
    "mmd": mmd_eager,
    "orthogonality_loss": orth_eager,
    "decorrelation_loss": decor_eager,
    "factor_constraints": constraints_eager(FSRF_PAIRS, FSRF_DECOR),
}

# ============================================================================================
# Resolving implementation names
# ============================================================================================


@functools.cache
def compiled(fn):
    """``torch.compile(fn)``, made once per function so that every benchmark of it shares the
    compiled code (the warm-up call of each benchmark pays for its shape's compilation)."""
    return torch.compile(fn)


def fsrf_peer(op, backend, **setting):
    """``fsrf.ops.<op>`` pinned to ``backend``, with the op's :data:`SETTINGS` updated by ``setting``."""
    return functools.partial(getattr(fsrf.ops, op), backend=backend, **{**SETTINGS.get(op, {}), **setting})


def peer(op, impl):
    """The callable benchmarked as ``impl`` (eager, compile, sdpa or fsrf-<backend>) of ``op``."""
    if impl == "eager":
        return EAGER[op]
    if impl == "compile":
        return compiled(EAGER[op])
    if impl == "sdpa":
        return attention_sdpa
    return fsrf_peer(op, impl.split("-", 1)[1])


def cases(shapes, impls=LOSS_IMPLS):
    """(label, impl, mode) for every label of ``shapes``, implementation and mode, in the order
    (and with the ids) of the three stacked ``parametrize`` marks they replace."""
    return [(label, impl, mode) for label in shapes for impl in impls for mode in MODES]


def unavailable(impl, device=DEVICE):
    """Why ``impl`` cannot be benchmarked on ``device`` (a skip reason), or None."""
    if impl == "fsrf-triton" and device != "cuda":
        return "fsrf-triton is benchmarked on CUDA only (the CPU interpreter is a correctness tool; its timings mean nothing)"
    if impl == "fsrf-cpp" and not _extension.has_cpp():
        return f"fsrf._C not loaded: {_extension.extension_error()}"
    return None


# ============================================================================================
# The timed call
# ============================================================================================


def synchronize(device=DEVICE):
    """Waits for the device's queued work (a no-op on CPU), so that a timing covers it."""
    if device == "cuda":
        torch.cuda.synchronize()


def make_step(call, mode, wrt=(), grad_output=None, device=DEVICE):
    """The function a benchmark times: ``call()`` under ``no_grad`` (mode ``fwd``), or ``call()``
    and the gradients of its output w.r.t. ``wrt`` (``fwd+bwd``); either waits for the device and
    returns what it computed."""
    if mode == "fwd":
        def step():
            with torch.no_grad():
                out = call()
            synchronize(device)
            return out
    else:
        def step():
            out = torch.autograd.grad(call(), wrt, grad_output)
            synchronize(device)
            return out
    return step


@contextlib.contextmanager
def no_finite_check():
    """fsrf's NaN/Inf input check switched off: it is a host sync per input, which the peers do not
    pay and a tuned training loop switches off too."""
    prev = check_finite_enabled()
    fsrf.set_check_finite(False)
    try:
        yield
    finally:
        fsrf.set_check_finite(prev)
