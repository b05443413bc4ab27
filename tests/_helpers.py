"""Scaffolding shared by the test files: device marks, a gradient helper, float64 formulas of the
ops and the offline sm_90 compile check of the Triton kernels.

Test files import it as ``_helpers``: tests/ is not a package, and pytest's default import mode
puts this folder on sys.path before it imports them (and conftest.py).

The float64 formulas are written here from the ops' definitions and never call fsrf: a test that
compared fsrf with fsrf.reference would pass whenever both carry the same mistake.
"""

import os
import subprocess
import sys
import textwrap
from contextlib import contextmanager

import pytest
import torch

from fsrf.runtime import extension as _extension

# --------------------------------------------------------------------------------------------
# marks
# --------------------------------------------------------------------------------------------

HAS_CUDA = torch.cuda.is_available()
HAS_CPP = _extension.has_cpp()

# Both marks, so that `pytest -m gpu` selects a test that a CPU run skips. A list, to serve as
# (or within) a module's ``pytestmark`` and as ``pytest.param(..., marks=CUDA_MARKS)``.
CUDA_MARKS = [pytest.mark.gpu, pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device; none is present")]

requires_cpp = pytest.mark.skipif(not HAS_CPP, reason=f"fsrf._C not loaded: {_extension.extension_error()}")


def requires_cuda(test):
    """Decorator form of CUDA_MARKS: marks ``test`` ``gpu`` and skips it without a CUDA device."""
    for mark in CUDA_MARKS:
        test = mark(test)
    return test


@contextmanager
def single_thread():
    """One intra-op thread while inside: with two on a busy 2-core machine, each parallel region
    of an op on small tensors can wait a scheduler slice for a descheduled thread (seen: 0.5 s
    against 60 s)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


# --------------------------------------------------------------------------------------------
# gradients
# --------------------------------------------------------------------------------------------

def value_and_grads(fn, *inputs, upstream=1.7, allow_unused=False):
    """(value, *gradients) of ``fn`` at fresh leaf copies of ``inputs``.

    The upstream gradient is not 1, so that a backward that ignores it fails. With
    ``allow_unused`` an input the value does not depend on gets a zero gradient instead of an error.
    """
    leaves = [x.detach().clone().requires_grad_(True) for x in inputs]
    value = fn(*leaves)
    grads = torch.autograd.grad(value * upstream, leaves, allow_unused=allow_unused)
    return (value.detach(), *(torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)))


# --------------------------------------------------------------------------------------------
# float64 formulas (from the definitions; independent of fsrf)
# --------------------------------------------------------------------------------------------

def orth64(a, b, detach_norm=True, eps=1e-6):
    """mean((ÂᵀB̂)²): columns centred over the batch, rows divided by (L2 norm + eps); with
    ``detach_norm`` the norms are constants for the gradient (MISA's DiffLoss)."""
    a, b = a.double(), b.double()
    ca, cb = a - a.mean(0), b - b.mean(0)
    na, nb = ca.pow(2).sum(1, keepdim=True).sqrt(), cb.pow(2).sum(1, keepdim=True).sqrt()
    if detach_norm:
        na, nb = na.detach(), nb.detach()
    m = (ca / (na + eps)).T @ (cb / (nb + eps))
    return m.pow(2).mean()


def decor64(z, eps=1e-5):
    """Σ_{i≠j} C_ij² / (d(d−1)), C = ZsᵀZs / N, Zs standardised with the biased variance;
    0 for a single column (there is no off-diagonal entry)."""
    z = z.double()
    n, d = z.shape
    if d < 2:
        return z.sum() * 0.0
    zc = z - z.mean(0)
    zs = zc / (zc.pow(2).mean(0) + eps).sqrt()
    c = zs.T @ zs / n
    off = ~torch.eye(d, dtype=torch.bool, device=z.device)
    return c[off].pow(2).sum() / (d * (d - 1))


def terms64(factors, pairs, decorrelate, masks=None, detach_norm=True):
    """factor_constraints term by term: orth64 of each pair on the rows both factors observe, then
    decor64 of each listed factor on its observed rows; a term over fewer than two rows is 0.
    A mask of None (or ``masks`` None) observes every row."""
    n = factors[0].shape[0]
    full = torch.ones(n, dtype=torch.bool, device=factors[0].device)
    masks = [full if m is None else m for m in (masks or [None] * len(factors))]
    out = []
    for i, j in pairs:
        rows = masks[i] & masks[j]
        out.append(orth64(factors[i][rows], factors[j][rows], detach_norm) if rows.sum() >= 2
                   else factors[i].double().sum() * 0.0)
    for i in decorrelate:
        rows = masks[i]
        out.append(decor64(factors[i][rows]) if rows.sum() >= 2 else factors[i].double().sum() * 0.0)
    return torch.stack(out)


def kl64(s, t, temperature=1.0, symmetric=False, detach_target=True):
    """T² · mean over rows of Σ_c p_t (log p_t − log p_s), p = softmax(logits / T) over the last
    dim, plus the reverse direction if ``symmetric``; with ``detach_target`` each direction's
    target is a constant. Softmax and log written out (no log_softmax, no kl_div)."""
    s, t = s.double(), t.double()
    C = s.shape[-1]
    s, t = s.reshape(-1, C), t.reshape(-1, C)

    def logp(z):
        z = z / temperature
        z = z - z.max(dim=1, keepdim=True).values
        return z - torch.log(torch.exp(z).sum(dim=1, keepdim=True))

    ls, lt = logp(s), logp(t)
    tgt = lt.detach() if detach_target else lt
    loss = (torch.exp(tgt) * (tgt - ls)).sum(1).mean()
    if symmetric:
        tgt = ls.detach() if detach_target else ls
        loss = loss + (torch.exp(tgt) * (tgt - lt)).sum(1).mean()
    return loss * temperature * temperature


def mmd64_terms(x, y, num_kernels=5, kernel_mul=2.0, bandwidths=None, unbiased=False):
    """(E k(x, x'), E k(y, y'), E k(x, y)) of the multi-bandwidth Gaussian kernel, from full
    kernel matrices; the x-x and y-y means skip i = j when ``unbiased``. Without ``bandwidths``
    they are σ² · kernel_mul^(k − num_kernels // 2), σ² the mean squared distance over the pooled
    pairs i ≠ j (a constant for the gradient)."""
    x, y = x.double(), y.double()
    u = torch.cat([x, y])
    n = u.shape[0]
    # differences, not the |u|² + |v|² − 2u·v expansion (it cancels for data far from the origin);
    # cdist rather than an (n, n, d) tensor of differences, which large GPU cases cannot hold
    D = torch.cdist(u, u, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
    if bandwidths is None:
        # clamped: all points equal give σ² = 0, and D / 0 = NaN on the diagonal
        sigma2 = (D.sum() / (n * n - n)).detach().clamp_min(1e-30)
        hs = [sigma2 * kernel_mul ** (k - num_kernels // 2) for k in range(num_kernels)]
    else:
        hs = [float(b) for b in bandwidths]
    K = sum(torch.exp(-D / h) for h in hs)
    N, M = x.shape[0], y.shape[0]
    Kxx, Kyy, Kxy = K[:N, :N], K[N:, N:], K[:N, N:]
    if unbiased:
        return ((Kxx.sum() - Kxx.diagonal().sum()) / (N * (N - 1)),
                (Kyy.sum() - Kyy.diagonal().sum()) / (M * (M - 1)), Kxy.mean())
    return Kxx.mean(), Kyy.mean(), Kxy.mean()


def mmd64(x, y, num_kernels=5, kernel_mul=2.0, bandwidths=None, unbiased=False):
    """MMD² = E k(x, x') + E k(y, y') − 2 E k(x, y) (see mmd64_terms)."""
    exx, eyy, exy = mmd64_terms(x, y, num_kernels, kernel_mul, bandwidths, unbiased)
    return exx + eyy - 2 * exy


def attention64_with_lse(q, k, v, mask, scale=None):
    """(out, lse) of masked attention in float64, sample by sample over the gathered observed keys:
    a plain softmax, with no -inf masking and no online softmax to share a mistake with.

    ``mask`` (B, Tk) marks observed keys (None: all). A sample with no observed key gets output 0
    (so zero gradients) and lse = +inf, the FlashAttention convention.
    """
    q, k, v = q.double(), k.double(), v.double()
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    outs, lses = [], []
    for b in range(q.shape[0]):
        idx = torch.arange(k.shape[2], device=k.device) if mask is None else mask[b].nonzero().flatten()
        if idx.numel() == 0:
            outs.append(q[b] * 0.0)
            lses.append(torch.full(q.shape[1:3], float("inf"), dtype=torch.float64, device=q.device))
            continue
        s = q[b] @ k[b][:, idx].transpose(-1, -2) * scale
        outs.append(torch.softmax(s, dim=-1) @ v[b][:, idx])
        lses.append(torch.logsumexp(s, dim=-1))
    return torch.stack(outs), torch.stack(lses)


def attention64(q, k, v, mask, scale=None):
    """The output of attention64_with_lse."""
    return attention64_with_lse(q, k, v, mask, scale)[0]


# --------------------------------------------------------------------------------------------
# offline sm_90 compile check of Triton kernels
# --------------------------------------------------------------------------------------------

# Put before each file's script, so that a file lists only its kernels, signatures and checks.
_SM90_PRELUDE = textwrap.dedent("""
    import triton, triton.language as tl
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    def compile_sm90(kernel, signature, constexprs, **options):
        return triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                              target=GPUTarget("cuda", 90, 32), options=options)
""")

# with a GPU the GPU tests compile and run the real kernels, which checks more
without_cuda = pytest.mark.skipif(HAS_CUDA, reason="the GPU tests run the real kernels")


def compile_for_sm90(script, timeout=300):
    """Run ``script``, which compiles kernels with ``compile_sm90(kernel, signature, constexprs,
    **options)``, in a fresh interpreter, and fail if any kernel does not compile.

    The interpreter that runs the kernels on CPU accepts code the GPU compiler rejects. The script
    runs in a subprocess because TRITON_INTERPRET, set for this process, must be off, and with FP
    fusion on, as on a GPU run.
    """
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_DEFAULT_FP_FUSION"] = "1"
    code = _SM90_PRELUDE + textwrap.dedent(script) + '\nprint("compiled ok")\n'
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)
    if out.returncode != 0 and "ptxas" in out.stderr and "not found" in out.stderr.lower():
        pytest.skip("triton's bundled ptxas is missing: cannot compile offline")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "compiled ok" in out.stdout


# -- tiny MMSA files for the training tests ----------------------------------------------------------
TINY_DIMS = {"text": 16, "audio": 6, "vision": 5}
TINY_LENS = {"text": 6, "audio": 6, "vision": 6}


def write_tiny_mmsa(path, *, n=(40, 16, 16), seed=3, dims=None, lens=None):
    """A MOSEI-layout synthetic file small enough to train on in seconds; returns ``path``."""
    from fsrf.data import make_synthetic

    make_synthetic("mosei", path, n_train=n[0], n_valid=n[1], n_test=n[2], seed=seed, dims=dims or TINY_DIMS,
                   seq_lens=lens or TINY_LENS)
    return path


# --------------------------------------------------------------------------------------------
# configs as version 1 wrote them
# --------------------------------------------------------------------------------------------

def version_1_dict(config) -> dict:
    """``config`` as ``FSRFConfig.to_dict`` wrote it before config versions (version 1): flat, no
    ``config_version``, the three pooling switches instead of ``pooling``, and an empty ``extra``."""
    d = {k: v for k, v in config.to_dict().items() if k not in ("config_version", "pooling")}
    d.update(pool_norm=config.pool_norm, pool_shrink=config.pool_shrink, private_pool=config.private_pool, extra={})
    return d
