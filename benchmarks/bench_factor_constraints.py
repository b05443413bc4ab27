"""factor_constraints: the grouped DHF constraints against the Python loop FSRF would otherwise run.

Configuration (documented choice for the spec's "N = 64, d = 128, 15 factor pairs"): three
modalities × (s, p, n) = 9 factors of width d; the 12 FSRF pairs ((s,p), (s,n), (p,n) per modality
and (p_m, p_m') across modalities) plus the 3 cross-modal (s_m, s_m') pairs = 15 orthogonality
terms, and FSRF's 6 decorrelation terms (s_m and p_m): 21 terms in all. Shapes: the FSRF batch
(N = 64, d = 128) and a large one (N = 8192, d = 256). A "masked" variant uses per-modality
availability masks (as FSRFLayer does); the obvious eager version of it selects rows by boolean
indexing.

Rows: eager (the loop), compile (torch.compile of the loop), fsrf-torch, fsrf-triton (CUDA only).
GPU goal (H100): fsrf-triton ≥ 3× eager at the FSRF shape. The NaN/Inf input check (a host sync)
is switched off while timing.
"""

import pytest
import torch

import fsrf

DEV = "cuda" if torch.cuda.is_available() else "cpu"
SHAPES = {"fsrf 9x(64x128)": (64, 128), "large 9x(8192x256)": (8192, 256)}
IMPLS = ["eager", "compile", "fsrf-torch", "fsrf-triton"]
M = 3
PAIRS = ([(3 * m + a, 3 * m + b) for m in range(M) for a, b in ((0, 1), (0, 2), (1, 2))]
         + [(3 * m + 1, 3 * k + 1) for m in range(M) for k in range(m + 1, M)]
         + [(3 * m, 3 * k) for m in range(M) for k in range(m + 1, M)])
DECOR = [3 * m + a for m in range(M) for a in (0, 1)]
assert len(PAIRS) == 15 and len(DECOR) == 6


def orth_eager(a, b, eps=1e-6):
    a = a - a.mean(dim=0, keepdim=True)
    b = b - b.mean(dim=0, keepdim=True)
    a = a / (a.norm(dim=1, keepdim=True).detach() + eps)
    b = b / (b.norm(dim=1, keepdim=True).detach() + eps)
    return (a.T @ b).pow(2).mean()


def decor_eager(z, eps=1e-5):
    n, d = z.shape
    zs = (z - z.mean(dim=0)) / torch.sqrt(z.var(dim=0, unbiased=False) + eps)
    c = zs.T @ zs / n
    off = c - torch.diag(torch.diagonal(c))
    return off.pow(2).sum() / (d * (d - 1))


def loop_eager(factors):
    """What a model would write: one small loss per term, stacked."""
    return torch.stack([orth_eager(factors[i], factors[j]) for i, j in PAIRS]
                       + [decor_eager(factors[i]) for i in DECOR])


def loop_eager_masked(factors, masks):
    out = []
    for i, j in PAIRS:
        rows = masks[i] & masks[j]
        out.append(orth_eager(factors[i][rows], factors[j][rows]))
    for i in DECOR:
        out.append(decor_eager(factors[i][masks[i]]))
    return torch.stack(out)


_compiled = torch.compile(loop_eager)


def _impl(name, masked):
    if name == "eager":
        return loop_eager_masked if masked else (lambda fs, ms: loop_eager(fs))
    if name == "compile":
        if masked:
            pytest.skip("boolean row selection makes data-dependent shapes; torch.compile is benchmarked unmasked")
        return lambda fs, ms: _compiled(fs)
    if name == "fsrf-triton" and DEV != "cuda":
        pytest.skip("fsrf-triton needs a CUDA device (none here; the CPU interpreter is not a benchmark)")
    backend = name.split("-")[1]
    return lambda fs, ms: fsrf.ops.factor_constraints(fs, PAIRS, DECOR, masks=ms, backend=backend)


def _sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("mode", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("label", list(SHAPES))
def test_factor_constraints(benchmark, peak_memory, machine, label, impl, mode, masked):
    n, d = SHAPES[label]
    fn = _impl(impl, masked)
    fsrf.set_check_finite(False)
    try:
        g = torch.Generator().manual_seed(0)
        factors = [torch.randn(n, d, generator=g).to(DEV).requires_grad_(mode != "fwd") for _ in range(3 * M)]
        masks = None
        if masked:
            avail = [(torch.rand(n, generator=g) < 0.8).to(DEV) for _ in range(M)]
            masks = [avail[f // 3] for f in range(3 * M)]

        def run():
            if mode == "fwd":
                with torch.no_grad():
                    out = fn(factors, masks)
            else:
                out = torch.autograd.grad(fn(factors, masks).sum(), factors)
            _sync()
            return out

        run()
        mib = peak_memory(run, DEV)
        rounds = 20 if DEV == "cuda" else (3 if n * d > 1 << 20 else 30)
        benchmark.group = f"factor_constraints {label} 15 pairs + 6 decor {'masked ' if masked else ''}{mode}"
        benchmark.extra_info.update(op="factor_constraints", shape=f"9x({n}x{d}), 15 pairs + 6 decorrelation",
                                    mode=mode, impl=impl, masked=masked, peak_mib=round(mib, 3), device=DEV,
                                    machine=machine, dtype="float32")
        benchmark.pedantic(run, rounds=rounds, warmup_rounds=1)
    finally:
        fsrf.set_check_finite(True)
