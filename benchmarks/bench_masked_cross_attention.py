"""Benchmarks of fsrf.ops.masked_cross_attention against the eager reference and SDPA.

Shapes: "msa" — a multimodal-sentiment batch (B=32, H=8, Tq=Tk=50, Dh=32); "long" — long
sequences (B=4, H=8, Tq=Tk=1024, Dh=64). Masks: "padded" — each sample observes a random prefix
of 50-100 % of its keys and one sample misses the key modality entirely (the FSRF setting);
"none" — every key observed. SDPA gets the same mask as a boolean ``attn_mask``.

The public op's NaN/Inf input check (a host sync per input, see ``fsrf.set_check_finite``) is
switched off here so that the rows compare the attention computations; SDPA has no such check.
Peers and shapes: ``_peers.py``.

Run: ``pytest benchmarks/bench_masked_cross_attention.py --benchmark-only``.
"""

import pytest
import torch

from _peers import (ATTENTION_IMPLS, ATTENTION_MEMORY_SHAPES, ATTENTION_SHAPES, MODES, make_step, no_finite_check,
                    peer, unavailable)

ROUNDS = {"msa": 30, "long": 3}
OP = "masked_cross_attention"


@pytest.fixture(autouse=True)
def _no_finite_check():
    with no_finite_check():
        yield


def make_inputs(shape, mask_kind, seed=0):
    """CPU inputs (q, k, v requiring grad), the key mask (None for "none") and an upstream gradient."""
    B, H, Tq, Tk, Dh = shape
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(B, H, T, Dh, generator=gen).requires_grad_() for T in (Tq, Tk, Tk))
    grad = torch.randn(B, H, Tq, Dh, generator=gen)
    if mask_kind == "none":
        mask = None
    else:
        lengths = torch.randint(Tk // 2, Tk + 1, (B,), generator=gen)
        if B > 1:
            lengths[1] = 0  # a sample whose key modality is missing
        mask = torch.arange(Tk)[None, :] < lengths[:, None]
    return q, k, v, mask, grad


def make_run(impl, mode, shape, mask_kind):
    """The timed call of ``impl`` in ``mode`` on fresh inputs of ``shape``."""
    q, k, v, mask, grad = make_inputs(shape, mask_kind)
    fn = peer(OP, impl)
    return make_step(lambda: fn(q, k, v, mask), mode, (q, k, v), grad, device="cpu")


def _peak_mib(peak_memory, fn):
    return round(peak_memory(fn, "cpu"), 2)


@pytest.mark.parametrize("mask_kind", ["padded", "none"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("label", list(ATTENTION_SHAPES))
@pytest.mark.parametrize("impl", ATTENTION_IMPLS)
def test_masked_cross_attention(benchmark, peak_memory, machine, impl, label, mode, mask_kind):
    shape = ATTENTION_SHAPES[label]
    run = make_run(impl, mode, shape, mask_kind)
    benchmark.group = f"{OP} {label} {mask_kind}-mask {mode}"
    benchmark.extra_info.update(op=OP, shape=f"B,H,Tq,Tk,Dh={shape}", mode=mode, impl=impl, mask=mask_kind,
                                dtype="float32", machine=machine, threads=torch.get_num_threads(),
                                check_finite=False)
    benchmark.pedantic(run, rounds=ROUNDS[label], warmup_rounds=1, iterations=1)
    benchmark.extra_info["peak_mib"] = _peak_mib(peak_memory, run)


@pytest.mark.parametrize("T", list(ATTENTION_MEMORY_SHAPES))
def test_masked_cross_attention_memory_scaling(benchmark, peak_memory, machine, T):
    """Peak memory of the cpp forward+backward with Tq = Tk = T: linear in T (the eager
    reference's T x T matrices are quadratic). The assertion compares against the smallest T."""
    if reason := unavailable("fsrf-cpp", "cpu"):
        pytest.skip(reason)
    shape = ATTENTION_MEMORY_SHAPES[T]
    run = make_run("fsrf-cpp", "fwd+bwd", shape, "padded")
    benchmark.group = f"{OP} memory-scaling fwd+bwd"
    benchmark.extra_info.update(op=OP, shape=f"B,H,Tq,Tk,Dh={shape}", mode="fwd+bwd", impl="fsrf-cpp",
                                mask="padded", dtype="float32", machine=machine)
    benchmark.pedantic(run, rounds=2, warmup_rounds=1, iterations=1)
    peak = _peak_mib(peak_memory, run)
    benchmark.extra_info["peak_mib"] = peak
    T0, shape0 = next(iter(ATTENTION_MEMORY_SHAPES.items()))
    base = _peak_mib(peak_memory, make_run("fsrf-cpp", "fwd+bwd", shape0, "padded"))
    # Linear growth gives T/T0 (x4 at 4096 against 1024), quadratic (T/T0)^2 (x16); allow 1.5x slack.
    assert peak <= 1.5 * (T / T0) * max(base, 1.0), (T, peak, base)
