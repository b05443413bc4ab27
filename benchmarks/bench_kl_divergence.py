"""Benchmarks of fsrf.ops.kl_divergence (FSRF's symmetric, detached, T = 2 setting).

Rows per (shape, mode): ``eager`` (PyTorch written the obvious way: log_softmax + kl_div),
``compile`` (torch.compile of that), ``fsrf-torch`` (the reference backend) and ``fsrf-triton``
(the fused kernel; CUDA only). All rows of a run use one device: CUDA when present, else CPU.
The NaN/Inf input check (a host sync the peers do not pay) is switched off while timing.
Peers and shapes: ``_peers.py``. Run with ``pytest benchmarks/bench_kl_divergence.py --benchmark-only``.
"""

import pytest
import torch

from _peers import DEVICE, KL_SHAPES, LOSS_IMPLS, MODES, make_step, no_finite_check, peer

OP = "kl_divergence"



@pytest.fixture(autouse=True)
def _no_finite_check():
    with no_finite_check():
        yield

@pytest.mark.parametrize("impl", LOSS_IMPLS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("label", list(KL_SHAPES))
def test_kl_divergence(benchmark, peak_memory, machine, impl, mode, label):
    R, C = KL_SHAPES[label]
    g = torch.Generator().manual_seed(0)
    s = (torch.randn(R, C, generator=g) * 2).to(DEVICE)
    t = (s.cpu() + torch.randn(R, C, generator=g)).to(DEVICE)
    f = peer(OP, impl)
    if mode == "fwd+bwd":
        s.requires_grad_(True)
        t.requires_grad_(True)
    fn = make_step(lambda: f(s, t), mode, (s, t))

    fn()  # warm-up: compilation, autotuning, allocator
    peak = peak_memory(fn, DEVICE)
    benchmark.group = f"{OP} {label} {mode}"
    benchmark.extra_info.update(op=OP, shape=f"{R}x{C}", mode=mode, impl=impl,
                                peak_mib=round(peak, 2), device=machine, dtype="float32",
                                setting="symmetric, detach_target, T=2")
    if DEVICE == "cpu" and R * C >= 2**22:
        benchmark.pedantic(fn, rounds=5, warmup_rounds=0)
    else:
        benchmark(fn)
