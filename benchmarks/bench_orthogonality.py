"""orthogonality_loss: eager PyTorch (MISA's DiffLoss written the obvious way), torch.compile of it,
and fsrf's backends, at the FSRF shape (N = 64, d = 128) and a large one (N = 8192, d = 256).

Run with ``pytest benchmarks/bench_orthogonality.py --benchmark-only``. ``fsrf-triton`` rows need
a CUDA device (the Triton interpreter on CPU is a correctness tool, not a performance one). The
NaN/Inf input check (a host sync) is switched off while timing. Peers and shapes: ``_peers.py``.
"""

import pytest
import torch

from _peers import DEVICE, ORTHOGONALITY_SHAPES, cases, make_step, peer

OP = "orthogonality_loss"


@pytest.mark.parametrize("label,impl,mode", cases(ORTHOGONALITY_SHAPES))
def test_orthogonality(pedantic_run, label, impl, mode):
    n, d1, d2 = ORTHOGONALITY_SHAPES[label]
    a = torch.randn(n, d1, device=DEVICE, requires_grad=mode != "fwd")
    b = torch.randn(n, d2, device=DEVICE, requires_grad=mode != "fwd")
    fn = peer(OP, impl)
    large = n * max(d1, d2) > 1 << 20
    pedantic_run(make_step(lambda: fn(a, b), mode, (a, b)), f"{OP} {label} {mode}",
                 rounds=20 if DEVICE == "cuda" else (5 if large else 50),
                 op=OP, shape=f"{n}x{d1}/{n}x{d2}", mode=mode, impl=impl)
