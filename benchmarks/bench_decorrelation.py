"""decorrelation_loss: eager PyTorch (Barlow-Twins off-diagonal penalty written the obvious way),
torch.compile of it, and fsrf's backends, at the FSRF shape (N = 64, d = 128) and a large one
(N = 8192, d = 256).

Run with ``pytest benchmarks/bench_decorrelation.py --benchmark-only``. ``fsrf-triton`` rows need a
CUDA device. The NaN/Inf input check (a host sync) is switched off while timing. Peers and shapes:
``_peers.py``.
"""

import pytest
import torch

from _peers import DECORRELATION_SHAPES, DEVICE, cases, make_step, peer

OP = "decorrelation_loss"


@pytest.mark.parametrize("label,impl,mode", cases(DECORRELATION_SHAPES))
def test_decorrelation(pedantic_run, label, impl, mode):
    n, d = DECORRELATION_SHAPES[label]
    z = torch.randn(n, d, device=DEVICE, requires_grad=mode != "fwd")
    fn = peer(OP, impl)
    pedantic_run(make_step(lambda: fn(z), mode, (z,)), f"{OP} {label} {mode}",
                 rounds=20 if DEVICE == "cuda" else (5 if n * d > 1 << 20 else 50),
                 op=OP, shape=f"{n}x{d}", mode=mode, impl=impl)
