"""Tests of the CUDA kernels of masked cross-attention (csrc/masked_cross_attention_*cuda*).

Two halves, both against the float64 formula of _helpers.py (independent of fsrf.reference):

* CPU, always run where a C++20 compiler is available: the device code of
  ``csrc/masked_cross_attention_cuda.cuh`` (CUDA-core kernels) and
  ``csrc/masked_cross_attention_wmma_cuda.cuh`` (tensor-core kernels) runs under the host
  emulation of the CUDA execution model in ``tests/cpp/cuda_emu`` (each CUDA thread a user-level
  context; barriers, warp shuffles, atomics and WMMA fragments emulated; divergent or deadlocking
  barriers and misaligned WMMA tiles fail; threads run in ascending, descending or random order
  between barriers and shared memory starts as NaN, so a missing barrier or a read of an
  unwritten slot shows up). This is the CI check of the kernels' logic: indexing, masking,
  online softmax, tile skipping, the backward's recomputation and atomics, every tile size.
  What it cannot check: real WMMA fragment semantics and hardware timing.
* GPU, marked ``gpu`` and skipped without a CUDA device: the compiled extension through
  ``torch.ops.fsrf`` and ``fsrf.ops`` (values, gradients, low-precision tolerance rule, fully
  masked samples, NaN isolation, opcheck, torch.compile, CUDA graphs, determinism, routing).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import numpy as np
import pytest
import torch

import fsrf
from fsrf.runtime import backend as fsrf_backend, extension as _extension

from _helpers import CUDA_MARKS, attention64_with_lse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


# --------------------------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------------------------

def ref_plain(q, k, v, mask, scale):
    """Masked attention in the inputs' own dtype, batched with -inf scores for missing keys: the
    "plain PyTorch" of the tolerance rule, whose own rounding error bounds the kernels'."""
    s = torch.matmul(q, k.transpose(-1, -2)) * scale
    B, Tk = q.shape[0], k.shape[2]
    m = torch.ones(B, Tk, dtype=torch.bool, device=q.device) if mask is None else mask
    has = m.any(-1)
    s = s.masked_fill(~(m | ~has[:, None])[:, None, None, :], float("-inf"))
    return torch.matmul(torch.softmax(s, -1), v) * has[:, None, None, None].to(q.dtype)


def ref_with_grads(q, k, v, mask, scale, dout, fn=attention64_with_lse):
    """(out, lse or None, dq, dk, dv) of ``fn`` for upstream gradient ``dout``; keys and values
    that no sample observes get zero gradients."""
    dt = torch.float64 if fn is attention64_with_lse else q.dtype
    qq, kk, vv = (x.detach().to(dt).requires_grad_() for x in (q, k, v))
    res = fn(qq, kk, vv, mask, scale)
    out, lse = res if isinstance(res, tuple) else (res, None)
    g = torch.autograd.grad(out, (qq, kk, vv), dout.to(dt), allow_unused=True)
    g = [torch.zeros_like(x) if r is None else r for x, r in zip((qq, kk, vv), g)]
    return (out.detach(), None if lse is None else lse.detach(), *g)


def make_inputs(B, H, Tq, Tk, Dh, dtype, mask_mode, device="cpu", seed=0):
    g = torch.Generator(device="cpu").manual_seed(seed)
    q, k, v, dout = (torch.randn(B, H, T, Dh, generator=g) for T in (Tq, Tk, Tk, Tq))
    mask = None
    if mask_mode == "random":
        mask = torch.rand(B, Tk, generator=g) < 0.6
        mask[0] = False                       # a sample with every key missing
        if B > 2:
            mask[2, : Tk // 2 + 1] = False    # a leading run of missing keys (skipped tiles)
        if B > 3:
            mask[3] = True
    elif mask_mode == "none_observed":
        mask = torch.zeros(B, Tk, dtype=torch.bool)
    to = dict(device=device)
    return (q.to(dtype=dtype, **to), k.to(dtype=dtype, **to), v.to(dtype=dtype, **to),
            None if mask is None else mask.to(**to), dout.to(dtype=dtype, **to))


def max_err(a, b):
    """max |a - b| over elements where b is finite; inf if finiteness differs, nan if a has NaN."""
    a = a.double()
    if torch.isnan(a).any():
        return float("nan")
    fin = torch.isfinite(b)
    if not torch.equal(torch.isfinite(a), fin):
        return float("inf")
    return (a - b)[fin].abs().max().item() if fin.any() else 0.0


def assert_close_rel(name, a, b, rtol, atol):
    e = max_err(a, b)
    bound = rtol * b[torch.isfinite(b)].abs().max().item() + atol if torch.isfinite(b).any() else atol
    assert e <= bound, f"{name}: max error {e:.3e} > {bound:.3e}"


def assert_exactly_zero_for_empty_samples(mask, out, lse, dq, dk, dv):
    if mask is None:
        return
    empty = ~mask.any(-1)
    if not empty.any():
        return
    assert torch.all(out[empty] == 0)
    assert torch.all(lse[empty] == float("inf"))
    for g in (dq, dk, dv):
        assert torch.all(g[empty] == 0)


# --------------------------------------------------------------------------------------------
# CPU: the kernels under the host emulation of CUDA
# --------------------------------------------------------------------------------------------

EMU_SRC = os.path.join(HERE, "cpp", "cuda_emu", "mca_emu.cpp")
CXX = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
H100_SMEM = 232448   # opt-in shared memory per block on sm_90 (227 KB)
SMALL_SMEM = 101376  # sm_86/sm_89 (99 KB): forces 32x32 tiles where 64x64 ones do not fit
DTYPE_CODE = {torch.float32: "f32", torch.float64: "f64", torch.float16: "f16", torch.bfloat16: "bf16"}


@pytest.fixture(scope="session")
def emu_exe(tmp_path_factory):
    if CXX is None:
        pytest.skip("no C++ compiler (g++/c++) to build the CUDA host emulation")
    from torch.utils.cpp_extension import include_paths

    exe = str(tmp_path_factory.mktemp("cuda_emu") / "mca_emu")
    cmd = [CXX, "-std=c++20", "-O1", "-w", *[f"-I{p}" for p in include_paths()],
           f"-I{os.path.join(ROOT, 'csrc')}", EMU_SRC, "-o", exe]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, "building the emulation failed:\n" + r.stderr[-4000:]
    return exe


def _raw(t):
    t = t.contiguous().cpu()
    if t.dtype in (torch.float16, torch.bfloat16):
        return t.view(torch.int16).numpy().tobytes()
    return t.numpy().tobytes()


def _unraw(path, dtype, shape):
    if dtype in (torch.float16, torch.bfloat16):
        return torch.from_numpy(np.fromfile(path, dtype=np.int16)).view(dtype).reshape(shape)
    npdt = {torch.float32: np.float32, torch.float64: np.float64}[dtype]
    return torch.from_numpy(np.fromfile(path, dtype=npdt)).reshape(shape)


def run_emu(exe, q, k, v, mask, dout, scale, smem=H100_SMEM, order=0, seed=0, kernel="simt"):
    """Forward + backward of the CUDA kernels under emulation: (out, lse, dq, dk, dv, log).

    ``kernel``: "simt" (CUDA-core kernels) or "wmma" (tensor-core kernels, float16/bfloat16).
    """
    B, H, Tq, Dh = q.shape
    Tk = k.shape[2]
    with tempfile.TemporaryDirectory() as d:
        for name, t in (("q", q), ("k", k), ("v", v), ("dout", dout)):
            with open(os.path.join(d, f"{name}.bin"), "wb") as fh:
                fh.write(_raw(t))
        if mask is not None:
            with open(os.path.join(d, "mask.bin"), "wb") as fh:
                fh.write(mask.cpu().numpy().astype(np.uint8).tobytes())
        with open(os.path.join(d, "meta.txt"), "w") as fh:
            fh.write(f"{B} {H} {Tq} {Tk} {Dh} {DTYPE_CODE[q.dtype]} {scale!r} {int(mask is not None)} "
                     f"{smem} {order} {seed} {kernel}\n")
        r = subprocess.run([exe, d], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, f"emulated kernels failed: {r.stdout[-2000:]}\n{r.stderr[-2000:]}"
        out = _unraw(os.path.join(d, "out.bin"), q.dtype, q.shape)
        lse = torch.from_numpy(np.fromfile(os.path.join(d, "lse.bin"), dtype=np.float32)).reshape(B, H, Tq)
        dq = _unraw(os.path.join(d, "dq.bin"), q.dtype, q.shape)
        dk = _unraw(os.path.join(d, "dk.bin"), q.dtype, k.shape)
        dv = _unraw(os.path.join(d, "dv.bin"), q.dtype, k.shape)
    return out, lse, dq, dk, dv, r.stdout


EMU_CASES = [
    # (B, H, Tq, Tk, Dh), dtype, mask, smem limit, thread order
    ((2, 2, 50, 50, 32), torch.float32, "random", H100_SMEM, 0),     # MSA-like, one tile each way
    ((4, 2, 70, 130, 33), torch.float32, "random", H100_SMEM, 1),    # odd Dh, 3 key tiles, skips
    ((4, 2, 70, 130, 33), torch.float32, "random", H100_SMEM, 2),
    ((3, 1, 129, 65, 64), torch.float32, "random", SMALL_SMEM, 2),   # backward on 32x32 tiles
    ((2, 1, 40, 200, 128), torch.float32, "random", H100_SMEM, 1),   # Dh 128, 256-thread forward
    ((2, 1, 40, 200, 100), torch.float32, "random", SMALL_SMEM, 2),  # Dh 128 on 32x32 tiles
    ((2, 2, 33, 1, 16), torch.float32, None, H100_SMEM, 2),          # Tk = 1, no mask
    ((1, 3, 1, 70, 8), torch.float32, None, H100_SMEM, 1),           # Tq = 1
    ((3, 2, 65, 97, 50), torch.float64, "random", H100_SMEM, 2),
]


@pytest.mark.parametrize("shape,dtype,mask_mode,smem,order", EMU_CASES)
def test_emulated_kernels_match_float64(emu_exe, shape, dtype, mask_mode, smem, order):
    q, k, v, mask, dout = make_inputs(*shape, dtype, mask_mode, seed=order + shape[2])
    scale = shape[-1] ** -0.5
    out, lse, dq, dk, dv, _ = run_emu(emu_exe, q, k, v, mask, dout, scale, smem=smem, order=order)
    r_out, r_lse, r_dq, r_dk, r_dv = ref_with_grads(q, k, v, mask, scale, dout)
    # float32 math: ~1e-6 relative. float64 inputs run in float64, but the saved lse is float32
    # (the op contract), so the backward's probabilities carry ~6e-8 relative error.
    tol = 2e-5 if dtype == torch.float32 else 1e-6
    assert_close_rel("out", out, r_out, 1e-12 if dtype == torch.float64 else tol, 1e-6 * (dtype != torch.float64))
    assert_close_rel("lse", lse, r_lse, 1e-6, 1e-6)
    # Absolute floor `tol`: with Tk = 1 the exact dq, dk are 0 and the kernel's are rounding
    # residues of dS = P * (dP - rowsum(dO * O)), about eps * |dO| * |v|.
    for name, a, b in (("dq", dq, r_dq), ("dk", dk, r_dk), ("dv", dv, r_dv)):
        assert_close_rel(name, a, b, tol, tol)
    assert_exactly_zero_for_empty_samples(mask, out, lse, dq, dk, dv)


LOW_CASES = [
    # kernel, (B, H, Tq, Tk, Dh), dtype, thread order
    ("simt", (3, 2, 65, 97, 72), torch.float16, 2),
    ("simt", (3, 2, 65, 97, 72), torch.bfloat16, 1),
    ("wmma", (2, 2, 50, 50, 32), torch.float16, 0),     # MSA-like, 16-byte loads
    ("wmma", (3, 2, 70, 130, 64), torch.bfloat16, 1),   # 3 key tiles, a skipped one
    ("wmma", (4, 2, 70, 130, 33), torch.bfloat16, 2),   # odd Dh: element loads, padding
    ("wmma", (2, 1, 40, 150, 128), torch.float16, 2),   # widest head, K/V fragments not cached
    ("wmma", (2, 2, 129, 70, 20), torch.float16, 1),    # 3 query tiles, Dh 20 padded to 32
]


@pytest.mark.parametrize("kernel,shape,dtype,order", LOW_CASES)
def test_emulated_low_precision_flash_rule(emu_exe, kernel, shape, dtype, order):
    q, k, v, mask, dout = make_inputs(*shape, dtype, "random", seed=3 + order)
    scale = shape[-1] ** -0.5
    out, lse, dq, dk, dv, log = run_emu(emu_exe, q, k, v, mask, dout, scale, order=order, kernel=kernel)
    assert f"kernel={kernel}" in log
    ref = ref_with_grads(q, k, v, mask, scale, dout)
    plain = ref_with_grads(q, k, v, mask, scale, dout, fn=ref_plain)
    floor = 1e-3 if dtype == torch.bfloat16 else 1e-4
    assert out.dtype == dtype
    assert max_err(out, ref[0]) <= 2 * max_err(plain[0], ref[0]) + floor
    for name, a, r, p in zip(("dq", "dk", "dv"), (dq, dk, dv), ref[2:], plain[2:]):
        assert max_err(a, r) <= 3 * max_err(p, r) + floor, f"{name}: {max_err(a, r)} vs plain {max_err(p, r)}"
    assert_exactly_zero_for_empty_samples(mask, out, lse, dq, dk, dv)


def test_emulated_all_samples_fully_masked(emu_exe):
    q, k, v, mask, dout = make_inputs(2, 2, 20, 70, 24, torch.float32, "none_observed")
    out, lse, dq, dk, dv, _ = run_emu(emu_exe, q, k, v, mask, dout, 0.3, order=1)
    assert torch.all(out == 0) and torch.all(lse == float("inf"))
    for g in (dq, dk, dv):
        assert torch.all(g == 0)


def test_emulated_nan_under_masked_keys_does_not_leak(emu_exe):
    q, k, v, mask, dout = make_inputs(3, 2, 30, 90, 32, torch.float32, "random", seed=5)
    k_nan, v_nan = k.clone(), v.clone()
    hidden = ~mask[:, None, :, None].expand_as(k)
    k_nan[hidden] = float("nan")
    v_nan[hidden] = float("nan")
    out, lse, dq, dk, dv, _ = run_emu(emu_exe, q, k_nan, v_nan, mask, dout, 0.25, order=2)
    # Reference on the clean inputs: masked keys must not matter at all.
    r_out, r_lse, r_dq, r_dk, r_dv = ref_with_grads(q, k, v, mask, 0.25, dout)
    for name, a, b in (("out", out, r_out), ("dq", dq, r_dq), ("dk", dk, r_dk), ("dv", dv, r_dv)):
        assert not torch.isnan(a).any(), name
        assert_close_rel(name, a, b, 2e-5, 1e-6)
    assert torch.all(dk[hidden] == 0) and torch.all(dv[hidden] == 0)


def test_emulated_tensor_core_kernels_isolate_masked_keys(emu_exe):
    # NaN stored under masked keys, one sample with no key, one with a masked leading tile.
    q, k, v, mask, dout = make_inputs(4, 2, 40, 140, 32, torch.bfloat16, "random", seed=9)
    hidden = ~mask[:, None, :, None].expand_as(k)
    kn, vn = k.masked_fill(hidden, float("nan")), v.masked_fill(hidden, float("nan"))
    out, lse, dq, dk, dv, log = run_emu(emu_exe, q, kn, vn, mask, dout, 0.2, order=2, kernel="wmma")
    assert "kernel=wmma" in log
    ref = ref_with_grads(q, k, v, mask, 0.2, dout)
    plain = ref_with_grads(q, k, v, mask, 0.2, dout, fn=ref_plain)
    for name, a, r, p in zip(("out", "dq", "dk", "dv"), (out, dq, dk, dv), (ref[0],) + ref[2:],
                             (plain[0],) + plain[2:]):
        assert not torch.isnan(a).any(), name
        assert max_err(a, r) <= 3 * max_err(p, r) + 1e-3, name
    assert torch.all(dk[hidden] == 0) and torch.all(dv[hidden] == 0)
    assert_exactly_zero_for_empty_samples(mask, out, lse, dq, dk, dv)
    none = torch.zeros_like(mask)
    out, lse, dq, dk, dv, _ = run_emu(emu_exe, q, k, v, none, dout, 0.2, order=1, kernel="wmma")
    assert torch.all(out == 0) and torch.all(lse == float("inf"))
    assert all(torch.all(g == 0) for g in (dq, dk, dv))


def test_emulated_single_key_tile_is_order_independent(emu_exe):
    # One key tile: every dQ element receives a single atomic add onto 0, and dK/dV/out are
    # per-thread sums in a fixed order, so any thread schedule gives bit-identical results.
    q, k, v, mask, dout = make_inputs(3, 2, 100, 60, 40, torch.float32, "random", seed=7)
    runs = [run_emu(emu_exe, q, k, v, mask, dout, 0.2, order=o, seed=o)[:5] for o in (0, 1, 2)]
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


def test_emulated_tile_choice_follows_shared_memory(emu_exe):
    q, k, v, mask, dout = make_inputs(1, 1, 8, 8, 64, torch.float32, None)
    big = run_emu(emu_exe, q, k, v, mask, dout, 0.1, smem=H100_SMEM)[-1]
    small = run_emu(emu_exe, q, k, v, mask, dout, 0.1, smem=SMALL_SMEM)[-1]
    assert "bwd_tile=64" in big and "bwd_tile=32" in small
    # Every launch stays within the limit (the emulation fails the run otherwise).
    assert all(int(s.split("smem=")[1]) <= SMALL_SMEM for s in small.splitlines() if "smem=" in s)


# --------------------------------------------------------------------------------------------
# GPU: the compiled extension
# --------------------------------------------------------------------------------------------

HAS_KERNELS = _extension.has_cuda_kernels()
needs_kernels = pytest.mark.skipif(
    not HAS_KERNELS, reason=f"fsrf._C has no CUDA kernels ({_extension.extension_error() or 'built without CUDA'})")


def cuda_op(q, k, v, mask, scale):
    return torch.ops.fsrf.masked_cross_attention_fwd(q, k, v, mask, scale)


def cuda_fwd_bwd(q, k, v, mask, scale, dout):
    out, lse = cuda_op(q, k, v, mask, scale)
    dq, dk, dv = torch.ops.fsrf.masked_cross_attention_bwd(dout, q, k, v, mask, out, lse, scale)
    return out, lse, dq, dk, dv


GPU_SHAPES = [
    (32, 8, 50, 50, 32),    # the model's attention (MSA shape)
    (3, 2, 70, 300, 64),    # several key tiles, Tq != Tk
    (4, 2, 65, 97, 33),     # odd head dim
    (2, 2, 40, 200, 128),   # widest head
    (3, 2, 17, 1, 5),       # Tk = 1
    (2, 3, 1, 130, 16),     # Tq = 1
]


def _gpu(f):
    """Marks a test `gpu` and skips it without a CUDA device or without compiled CUDA kernels."""
    for m in CUDA_MARKS + [needs_kernels]:
        f = m(f)
    return f


@_gpu
@pytest.mark.parametrize("mask_mode", ["random", None])
@pytest.mark.parametrize("shape", GPU_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gpu_values_and_grads_match_float64(dtype, shape, mask_mode):
    q, k, v, mask, dout = make_inputs(*shape, dtype, mask_mode, device="cuda", seed=shape[3])
    scale = shape[-1] ** -0.5
    out, lse, dq, dk, dv = cuda_fwd_bwd(q, k, v, mask, scale, dout)
    r_out, r_lse, r_dq, r_dk, r_dv = ref_with_grads(q, k, v, mask, scale, dout)
    tol = 2e-5 if dtype == torch.float32 else 1e-6
    assert out.dtype == dtype and lse.dtype == torch.float32 and dq.dtype == dtype
    assert_close_rel("out", out, r_out, 1e-12 if dtype == torch.float64 else tol, 1e-6 * (dtype != torch.float64))
    assert_close_rel("lse", lse, r_lse, 1e-6, 1e-6)
    # Absolute floor `tol`: with Tk = 1 the exact dq, dk are 0 and the kernel's are rounding
    # residues of dS = P * (dP - rowsum(dO * O)), about eps * |dO| * |v|.
    for name, a, b in (("dq", dq, r_dq), ("dk", dk, r_dk), ("dv", dv, r_dv)):
        assert_close_rel(name, a, b, tol, tol)
    assert_exactly_zero_for_empty_samples(mask, out, lse, dq, dk, dv)


@_gpu
@pytest.mark.parametrize("shape", [(32, 8, 50, 50, 32), (4, 8, 1024, 1024, 64), (3, 2, 9, 17, 7), (2, 2, 40, 300, 128)])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_gpu_low_precision_flash_rule(dtype, shape):
    q, k, v, mask, dout = make_inputs(*shape, dtype, "random", device="cuda", seed=11)
    scale = shape[-1] ** -0.5
    out, lse, dq, dk, dv = cuda_fwd_bwd(q, k, v, mask, scale, dout)
    ref = ref_with_grads(q, k, v, mask, scale, dout)
    plain = ref_with_grads(q, k, v, mask, scale, dout, fn=ref_plain)
    floor = 1e-3 if dtype == torch.bfloat16 else 1e-4
    assert out.dtype == dtype and dq.dtype == dtype and dk.dtype == dtype and dv.dtype == dtype
    assert max_err(out, ref[0]) <= 2 * max_err(plain[0], ref[0]) + floor
    for name, a, r, p in zip(("dq", "dk", "dv"), (dq, dk, dv), ref[2:], plain[2:]):
        assert max_err(a, r) <= 3 * max_err(p, r) + floor, f"{name}: {max_err(a, r)} vs plain {max_err(p, r)}"
    assert_exactly_zero_for_empty_samples(mask, out, lse, dq, dk, dv)


@_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gpu_fully_masked_samples_give_zero_and_no_nan(dtype):
    q, k, v, _, dout = make_inputs(4, 2, 30, 90, 32, dtype, None, device="cuda")
    mask = torch.rand(4, 90, device="cuda") < 0.5
    mask[1] = False
    mask[3] = False
    out, lse, dq, dk, dv = cuda_fwd_bwd(q, k, v, mask, 0.2, dout)
    for t in (out, dq, dk, dv):
        assert not torch.isnan(t).any()
    assert_exactly_zero_for_empty_samples(mask, out, lse, dq, dk, dv)
    none = torch.zeros_like(mask)
    out, lse, dq, dk, dv = cuda_fwd_bwd(q, k, v, none, 0.2, dout)
    assert torch.all(out == 0) and torch.all(lse == float("inf"))
    assert all(torch.all(g == 0) for g in (dq, dk, dv))


@_gpu
def test_gpu_cuda_core_kernels_for_half_inputs():
    # float16/bfloat16 normally run on the tensor-core kernels; FSRF_CUDA_ATTENTION=simt (read
    # once per process, hence the subprocess) selects the CUDA-core ones, which must pass too.
    import subprocess
    import sys

    code = f"""
import sys, torch
sys.path.insert(0, {HERE!r})
import test_masked_cross_attention_cuda as T
for dtype in (torch.float16, torch.bfloat16):
    for shape in ((32, 8, 50, 50, 32), (3, 2, 70, 300, 64), (4, 2, 65, 97, 33)):
        q, k, v, mask, dout = T.make_inputs(*shape, dtype, "random", device="cuda", seed=1)
        scale = shape[-1] ** -0.5
        got = T.cuda_fwd_bwd(q, k, v, mask, scale, dout)
        ref = T.ref_with_grads(q, k, v, mask, scale, dout)
        plain = T.ref_with_grads(q, k, v, mask, scale, dout, fn=T.ref_plain)
        floor = 1e-3 if dtype == torch.bfloat16 else 1e-4
        assert T.max_err(got[0], ref[0]) <= 2 * T.max_err(plain[0], ref[0]) + floor, (dtype, shape, "out")
        for i in (2, 3, 4):
            assert T.max_err(got[i], ref[i]) <= 3 * T.max_err(plain[i], ref[i]) + floor, (dtype, shape, i)
print("simt ok")
"""
    env = dict(os.environ, FSRF_CUDA_ATTENTION="simt")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert r.returncode == 0 and "simt ok" in r.stdout, r.stdout[-2000:] + r.stderr[-3000:]


@_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_nan_under_masked_keys_does_not_leak(dtype):
    q, k, v, mask, dout = make_inputs(3, 2, 30, 90, 32, dtype, "random", device="cuda", seed=5)
    hidden = ~mask[:, None, :, None].expand_as(k)
    kn, vn = k.masked_fill(hidden, float("nan")), v.masked_fill(hidden, float("nan"))
    out, lse, dq, dk, dv = cuda_fwd_bwd(q, kn, vn, mask, 0.25, dout)
    ref = ref_with_grads(q, k, v, mask, 0.25, dout)
    tol = 2e-5 if dtype == torch.float32 else 2e-2
    for name, a, b in zip(("out", "lse", "dq", "dk", "dv"), (out, lse, dq, dk, dv), ref):
        assert not torch.isnan(a).any(), name
        assert_close_rel(name, a, b, tol, 1e-6 if dtype == torch.float32 else 1e-3)
    assert torch.all(dk[hidden] == 0) and torch.all(dv[hidden] == 0)


@_gpu
def test_gpu_gradcheck_float64():
    # Tk = 40 is two float64 key tiles, so dq is summed with atomics: repeated backwards may
    # differ in the last bits (nondet_tol). The saved lse is float32: analytic grads carry ~1e-7.
    q, k, v, mask, _ = make_inputs(3, 2, 6, 40, 5, torch.float64, "random", device="cuda")
    inputs = tuple(x.requires_grad_() for x in (q, k, v))
    f = lambda a, b, c: fsrf.ops.masked_cross_attention(a, b, c, mask, backend="cuda")  # noqa: E731
    assert torch.autograd.gradcheck(f, inputs, atol=1e-5, rtol=1e-4, nondet_tol=1e-10)


@_gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gpu_cuda_backend_agrees_with_torch_backend(dtype):
    q, k, v, mask, dout = make_inputs(4, 3, 45, 77, 40, dtype, "random", device="cuda")
    outs, grads = [], []
    for be in ("cuda", "torch"):
        qq, kk, vv = (x.detach().clone().requires_grad_() for x in (q, k, v))
        o = fsrf.ops.masked_cross_attention(qq, kk, vv, mask, backend=be)
        outs.append(o)
        grads.append(torch.autograd.grad(o, (qq, kk, vv), dout))
    tol = dict(atol=2e-5, rtol=2e-4) if dtype == torch.float32 else dict(atol=2e-2, rtol=2e-2)
    torch.testing.assert_close(outs[0], outs[1], **tol)
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, **tol)


@_gpu
def test_gpu_non_contiguous_inputs():
    q, k, v, mask, dout = make_inputs(2, 3, 20, 40, 16, torch.float32, "random", device="cuda")
    qt = q.transpose(1, 2).contiguous().transpose(1, 2)  # same values, (B, T, H, Dh) memory
    kt = k.transpose(2, 3).contiguous().transpose(2, 3)
    vt = v.transpose(0, 1).contiguous().transpose(0, 1)
    assert not (qt.is_contiguous() or kt.is_contiguous() or vt.is_contiguous())
    a = cuda_fwd_bwd(qt, kt, vt, mask, 0.3, dout.transpose(1, 2).contiguous().transpose(1, 2))
    b = cuda_fwd_bwd(q, k, v, mask, 0.3, dout)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5)


@_gpu
def test_gpu_opcheck():
    from torch.library import opcheck

    for dtype in (torch.float32, torch.bfloat16):
        for mode in ("random", None):
            q, k, v, mask, dout = make_inputs(3, 2, 5, 70, 8, dtype, mode, device="cuda")
            opcheck(torch.ops.fsrf.masked_cross_attention_fwd.default, (q, k, v, mask, 0.35))
            out, lse = cuda_op(q, k, v, mask, 0.35)
            opcheck(torch.ops.fsrf.masked_cross_attention_bwd.default, (dout, q, k, v, mask, out, lse, 0.35))
    q, k, v, mask, _ = make_inputs(3, 2, 5, 70, 8, torch.float32, "random", device="cuda")
    opcheck(torch.ops.fsrf.masked_cross_attention_fwd.default,
            (q.requires_grad_(), k.requires_grad_(), v.requires_grad_(), mask, 0.35))


@_gpu
def test_gpu_torch_compile_fullgraph():
    torch._dynamo.reset()
    q, k, v, mask, dout = make_inputs(3, 2, 33, 70, 32, torch.float32, "random", device="cuda")
    for x in (q, k, v):
        x.requires_grad_()

    def f(a, b, c, m):
        return fsrf.ops.masked_cross_attention(a, b, c, m, backend="cuda").relu() * 2.0

    compiled = torch.compile(f, fullgraph=True)
    got, want = compiled(q, k, v, mask), f(q, k, v, mask)
    torch.testing.assert_close(got, want)
    for x, y in zip(torch.autograd.grad(got, (q, k, v), dout), torch.autograd.grad(want, (q, k, v), dout)):
        torch.testing.assert_close(x, y)


@_gpu
def test_gpu_cuda_graph_capture_uses_current_stream():
    # A kernel launched on another stream than the capturing one breaks the capture (or is
    # missing from the replay), so this checks that every launch uses the current stream.
    q, k, v, mask, dout = make_inputs(2, 2, 70, 130, 32, torch.float32, "random", device="cuda")
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(2):
            cuda_fwd_bwd(q, k, v, mask, 0.3, dout)
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = cuda_fwd_bwd(q, k, v, mask, 0.3, dout)
    q.copy_(torch.randn_like(q))
    graph.replay()
    torch.cuda.synchronize()
    fresh = cuda_fwd_bwd(q, k, v, mask, 0.3, dout)
    for a, b in zip(captured, fresh):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@_gpu
def test_gpu_side_stream():
    q, k, v, mask, dout = make_inputs(2, 2, 70, 130, 32, torch.float32, "random", device="cuda")
    want = cuda_fwd_bwd(q, k, v, mask, 0.3, dout)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        got = cuda_fwd_bwd(q, k, v, mask, 0.3, dout)
    torch.cuda.current_stream().wait_stream(s)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@_gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_gpu_second_device():
    q, k, v, mask, dout = make_inputs(2, 2, 20, 40, 16, torch.float32, "random", device="cuda:1")
    with torch.cuda.device(0):
        out, lse, dq, dk, dv = cuda_fwd_bwd(q, k, v, mask, 0.3, dout)
    assert out.device == q.device
    ref = ref_with_grads(q, k, v, mask, 0.3, dout)
    assert_close_rel("out", out, ref[0], 2e-5, 1e-6)


@_gpu
def test_gpu_determinism():
    # One key tile (Tk <= 64): bitwise reproducible. Several: deterministic mode must refuse.
    q, k, v, mask, dout = make_inputs(4, 2, 200, 60, 32, torch.float32, "random", device="cuda")
    a, b = cuda_fwd_bwd(q, k, v, mask, 0.3, dout), cuda_fwd_bwd(q, k, v, mask, 0.3, dout)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    q, k, v, mask, dout = make_inputs(2, 2, 20, 200, 32, torch.float32, "random", device="cuda")
    out, lse = cuda_op(q, k, v, mask, 0.3)
    prev = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        with pytest.raises(RuntimeError, match="masked_cross_attention_bwd"):
            torch.ops.fsrf.masked_cross_attention_bwd(dout, q, k, v, mask, out, lse, 0.3)
    finally:
        torch.use_deterministic_algorithms(prev)


@_gpu
def test_gpu_auto_picks_cuda():
    from fsrf.ops import IMPLEMENTED

    assert fsrf_backend.resolve("masked_cross_attention", "auto", "cuda", IMPLEMENTED["masked_cross_attention"]) == "cuda"
    assert fsrf.info()["ops"]["masked_cross_attention"]["cuda"] == "cuda"


@_gpu
def test_gpu_kernel_rejects_bad_inputs_clearly():
    q, k, v, mask, _ = make_inputs(2, 2, 4, 6, 8, torch.float32, "random", device="cuda")
    wide = torch.randn(2, 2, 4, 129, device="cuda")
    with pytest.raises(RuntimeError, match="head dim must be in"):
        cuda_op(wide, wide, wide, None, 0.1)
    with pytest.raises(RuntimeError, match="key_mask must be bool"):
        cuda_op(q, k, v, mask.float(), 0.1)
    with pytest.raises(RuntimeError, match="key_mask must have shape"):
        cuda_op(q, k, v, mask[:, :3], 0.1)
    with pytest.raises(RuntimeError, match="must share a dtype"):
        cuda_op(q, k.double(), v, mask, 0.1)
    with pytest.raises(RuntimeError, match="lse must be float32"):
        torch.ops.fsrf.masked_cross_attention_bwd(q, q, k, v, mask, q, q[..., 0].double(), 0.1)


@_gpu
def test_auto_falls_back_for_head_dims_beyond_the_cuda_kernels():
    q, k, v = (torch.randn(2, 2, 9, 160, device="cuda") for _ in range(3))
    mask = torch.rand(2, 9, device="cuda") > 0.3
    out = fsrf.ops.masked_cross_attention(q, k, v, mask)  # auto -> torch reference for Dh = 160
    ref = attention64_with_lse(q, k, v, mask, 160 ** -0.5)[0]
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="head dims up to 128"):
        fsrf.ops.masked_cross_attention(q, k, v, mask, backend="cuda")
