"""factor_constraints: the grouped DHF constraints against the Python loop FSRF would otherwise run.

Configuration (documented choice for the spec's "N = 64, d = 128, 15 factor pairs"): three
modalities × (s, p, n) = 9 factors of width d; the 12 FSRF pairs ((s,p), (s,n), (p,n) per modality
and (p_m, p_m') across modalities) plus the 3 cross-modal (s_m, s_m') pairs = 15 orthogonality
terms, and FSRF's 6 decorrelation terms (s_m and p_m): 21 terms in all (``_peers.FSRF_PAIRS``,
``_peers.FSRF_DECOR``). Shapes: the FSRF batch (N = 64, d = 128) and a large one (N = 8192,
d = 256). A "masked" variant uses per-modality availability masks (as FSRFLayer does); the obvious
eager version of it selects rows by boolean indexing.

Rows: eager (the loop), compile (torch.compile of the loop), fsrf-torch, fsrf-triton (CUDA only).
GPU goal (H100): fsrf-triton ≥ 3× eager at the FSRF shape. The NaN/Inf input check (a host sync)
is switched off while timing.
"""

import pytest
import torch

from _peers import DEVICE, FACTOR_CONSTRAINTS_SHAPES, MODALITIES, cases, make_step, peer

OP = "factor_constraints"


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("label,impl,mode", cases(FACTOR_CONSTRAINTS_SHAPES))
def test_factor_constraints(pedantic_run, label, impl, mode, masked):
    if impl == "compile" and masked:
        pytest.skip("boolean row selection makes data-dependent shapes; torch.compile is benchmarked unmasked")
    n, d = FACTOR_CONSTRAINTS_SHAPES[label]
    g = torch.Generator().manual_seed(0)
    factors = [torch.randn(n, d, generator=g).to(DEVICE).requires_grad_(mode != "fwd") for _ in range(3 * MODALITIES)]
    masks = None
    if masked:
        avail = [(torch.rand(n, generator=g) < 0.8).to(DEVICE) for _ in range(MODALITIES)]
        masks = [avail[f // 3] for f in range(3 * MODALITIES)]
    fn = peer(OP, impl)
    if mode == "fwd":
        def call():
            return fn(factors, masks=masks)
    else:
        def call():
            return fn(factors, masks=masks).sum()
    pedantic_run(make_step(call, mode, factors), f"{OP} {label} 15 pairs + 6 decor {'masked ' if masked else ''}{mode}",
                 rounds=20 if DEVICE == "cuda" else (3 if n * d > 1 << 20 else 30),
                 op=OP, shape=f"9x({n}x{d}), 15 pairs + 6 decorrelation", mode=mode, impl=impl, masked=masked)
