"""GPU benchmarks and the final report of ``benchmarks/gpu_check.sh``.

Subcommands (OUT is the folder gpu_check.sh writes into):

``python benchmarks/gpu_report.py bench OUT [--budget-s S]``
    Measures the card's ceilings (device-to-device copy bandwidth, bf16 and fp32 matmul rate),
    then times every fsrf op against eager PyTorch, ``torch.compile`` of it and, for attention,
    ``scaled_dot_product_attention`` with a boolean mask, at the BENCHMARKS.md shapes, plus one
    FSRFModel training step. Rows are appended to ``OUT/bench_rows.jsonl`` as they finish, so a
    timeout keeps what was measured. Times are medians of ``triton.testing.do_bench`` (CUDA
    events, L2 flushed before each repetition). The public ops' NaN/Inf input check (a host sync)
    is switched off while timing, as it would be in a tuned training loop.
``python benchmarks/gpu_report.py table OUT``
    Prints the phase summary, the test summary, and the table (last), and writes
    ``OUT/results.csv`` and ``OUT/results.json``. Works with whatever the earlier phases left.
``python benchmarks/gpu_report.py bench OUT --device cpu``
    Smoke run of the benchmark code itself on tiny CPU shapes (fsrf's CPU backends, host timers,
    no torch.compile peers): catches mistakes in this file before GPU time is spent on it.
``python benchmarks/gpu_report.py --dry-run [OUT]``
    CPU-only self-check of the reporting code: fabricates ceilings, phases, test results and
    rows (some failed or skipped), then runs ``table`` on them.

Table columns: op, shape, dtype, mode, fsrf ms, best peer (its name) ms, speedup (peer time /
fsrf time; > 1 means fsrf is faster), and what fsrf achieved: GB/s against the measured copy
bandwidth (memory-bound ops; bytes = each input read once, each output written once) or TFLOP/s
against the measured matmul rate of the dtype (attention: FLOPs over observed keys only).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET

ROWS = "bench_rows.jsonl"
ROOF = "roofline.json"
PHASES = "phases.tsv"
JUNIT = "gpu_tests.xml"


# ============================================================================================
# Reporting (no torch needed)
# ============================================================================================

def _file_lines(out, name):
    """The lines of OUT/name without their line ends; none when the file is missing."""
    path = os.path.join(out, name)
    if not os.path.exists(path):
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            yield line.rstrip("\n")


def _read_rows(out):
    rows = []
    for line in _file_lines(out, ROWS):
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except ValueError:
                rows.append({"op": "?", "error": f"unreadable row: {line[:80]}"})
    return rows


def _read_json(path):
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def _read_phases(out):
    phases = []
    for line in _file_lines(out, PHASES):
        parts = line.split("\t")
        if len(parts) >= 3:
            phases.append({"phase": parts[0], "status": parts[1], "seconds": parts[2],
                           "note": parts[3] if len(parts) > 3 else ""})
    return phases


def _read_junit(out):
    path = os.path.join(out, JUNIT)
    if not os.path.exists(path):
        return None
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        return {"error": f"unreadable {JUNIT}: {exc}"}
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    tot = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0, "time": 0.0, "failed": []}
    for s in suites:
        for key in ("tests", "failures", "errors", "skipped"):
            tot[key] += int(s.get(key, 0) or 0)
        tot["time"] += float(s.get("time", 0) or 0)
        for case in s.iter("testcase"):
            if case.find("failure") is not None or case.find("error") is not None:
                tot["failed"].append(f"{case.get('classname', '')}::{case.get('name', '')}")
    tot["passed"] = tot["tests"] - tot["failures"] - tot["errors"] - tot["skipped"]
    return tot


def _fmt_ms(x):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _achieved(row, roof):
    """(text, fraction of the measured roof) for a row's fsrf time."""
    ms = row.get("fsrf_ms")
    if not ms or not roof:
        return "-", None
    # Rows with a byte count are memory-bound ops (reported in GB/s even when a FLOP count is
    # recorded too); attention and MMD carry FLOPs only.
    if row.get("bytes"):
        gbs = row["bytes"] / (ms * 1e-3) / 1e9
        peak = roof.get("copy_gbs")
        return f"{gbs:.0f} GB/s", (gbs / peak if peak else None)
    if row.get("flops"):
        rate = row["flops"] / (ms * 1e-3) / 1e12
        peak = (roof.get("matmul_tflops") or {}).get(row.get("roof_dtype") or row.get("dtype"))
        frac = rate / peak if peak else None
        return f"{rate:.2f} TFLOP/s", frac
    return "-", None


def summarize(rows, roof):
    """Adds best peer, speedup, achieved rate to each row (in place) and returns them."""
    for r in rows:
        peers = {k: v for k, v in (r.get("peers") or {}).items() if isinstance(v, (int, float))}
        if peers:
            best = min(peers, key=peers.get)
            r["best_peer"], r["best_peer_ms"] = best, peers[best]
        else:
            r["best_peer"], r["best_peer_ms"] = None, None
        f = r.get("fsrf_ms")
        r["speedup"] = (r["best_peer_ms"] / f) if (f and r["best_peer_ms"]) else None
        r["achieved"], r["roof_frac"] = _achieved(r, roof)
    return rows


def print_table(rows, roof, file=sys.stdout):
    head = ["op", "shape", "dtype", "mode", "fsrf ms", "best peer", "peer ms", "speedup", "achieved", "% roof"]
    lines = []
    for r in rows:
        if r.get("error") and r.get("fsrf_ms") is None:
            lines.append([r.get("op", "?"), r.get("shape", ""), r.get("dtype", ""), r.get("mode", ""),
                          "ERROR", "-", "-", "-", (r.get("error") or "")[:40], "-"])
            continue
        lines.append([
            r.get("op", "?"), r.get("shape", ""), r.get("dtype", ""), r.get("mode", ""),
            _fmt_ms(r.get("fsrf_ms")), r.get("best_peer") or "-", _fmt_ms(r.get("best_peer_ms")),
            f"{r['speedup']:.2f}x" if r.get("speedup") else "-", r.get("achieved", "-"),
            f"{100 * r['roof_frac']:.0f}%" if r.get("roof_frac") is not None else "-",
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *lines)] if lines else [len(h) for h in head]
    sep = "  "
    print(sep.join(h.ljust(w) for h, w in zip(head, widths)), file=file)
    print(sep.join("-" * w for w in widths), file=file)
    for ln in lines:
        print(sep.join(str(x).ljust(w) for x, w in zip(ln, widths)), file=file)


def table(out):
    roof = _read_json(os.path.join(out, ROOF)) or {}
    rows = summarize(_read_rows(out), roof)
    try:
        _summary(out, roof, rows)
    except Exception:  # the table below must print whatever went wrong above
        traceback.print_exc()
    print("=" * 100)
    if rows:
        print_table(rows, roof)
    else:
        print("(no benchmark rows)")


def _summary(out, roof, rows):
    phases = _read_phases(out)
    tests = _read_junit(out)

    print("=" * 100)
    print("gpu_check summary")
    if roof.get("device"):
        print(f"device: {roof['device']}  (torch {roof.get('torch')}, triton {roof.get('triton')}, "
              f"CUDA {roof.get('cuda')}, {roof.get('sms')} SMs)")
        mm = roof.get("matmul_tflops") or {}
        copy = roof.get("copy_gbs")
        print("measured ceilings: copy " + (f"{copy:.0f} GB/s (read+write)" if isinstance(copy, (int, float))
                                            else "not measured")
              + "".join(f", {k} matmul {v:.1f} TFLOP/s" for k, v in mm.items() if isinstance(v, (int, float))))
    else:
        print("device: (no roofline measurement; the benchmark phase did not run or failed early)")
    for p in phases:
        print(f"phase {p['phase']:<10} {p['status']:<16} {p['seconds']:>5} s  {p['note']}")
    if tests is None:
        print("tests: no result file (phase did not run or crashed before writing it)")
    elif "error" in tests:
        print("tests:", tests["error"])
    else:
        print(f"tests: {tests['passed']} passed, {tests['failures']} failed, {tests['errors']} errors, "
              f"{tests['skipped']} skipped in {tests['time']:.0f} s")
        for name in tests["failed"][:15]:
            print("  FAILED", name)
        if len(tests["failed"]) > 15:
            print(f"  ... and {len(tests['failed']) - 15} more")
    errors = [r for r in rows if r.get("error")]
    for r in errors[:10]:
        print(f"bench error: {r.get('op')} {r.get('shape')} {r.get('dtype')} {r.get('mode')}: {r['error'][:200]}")
    notes = sorted({n for r in rows for n in (r.get("notes") or [])})
    for n in notes:
        print("note:", n)

    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as fh:
        json.dump({"roofline": roof, "phases": phases, "tests": tests, "rows": rows}, fh, indent=1, default=str)
    cols = ["op", "shape", "dtype", "mode", "fsrf_ms", "best_peer", "best_peer_ms", "speedup", "achieved",
            "roof_frac", "eager_ms", "compile_ms", "sdpa_ms", "torch_backend_ms", "peak_mib", "flops", "bytes",
            "error"]
    with open(os.path.join(out, "results.csv"), "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in rows:
            peers = r.get("peers") or {}
            flat = dict(r, eager_ms=peers.get("eager"), compile_ms=peers.get("compile"), sdpa_ms=peers.get("sdpa"),
                        torch_backend_ms=peers.get("fsrf-torch"))
            w.writerow([flat.get(c) for c in cols])
    print(f"full results: {os.path.join(out, 'results.csv')}, results.json, gpu_check.log")


def dry_run(out):
    """Fabricated inputs for the reporting code, then the table (runs without a GPU)."""
    rnd = random.Random(0)
    os.makedirs(out, exist_ok=True)
    roof = {"device": "FAKE H100 (dry run)", "torch": "x", "triton": "x", "cuda": "x", "sms": 132,
            "copy_gbs": 3000.0, "matmul_tflops": {"bfloat16": 750.0, "float32": 50.0}}
    with open(os.path.join(out, ROOF), "w", encoding="utf-8") as fh:
        json.dump(roof, fh)
    with open(os.path.join(out, PHASES), "w", encoding="utf-8") as fh:
        fh.write("build\tok\t95\tTORCH_CUDA_ARCH_LIST=9.0\n")
        fh.write("tests\tfailed(rc=1)\t88\t\n")
        fh.write("bench\ttimeout\t130\tkilled after 130 s\n")
    with open(os.path.join(out, JUNIT), "w", encoding="utf-8") as fh:
        fh.write('<testsuites><testsuite name="pytest" tests="5" failures="1" errors="0" skipped="1" time="12.5">'
                 '<testcase classname="tests.test_x" name="test_a"/><testcase classname="tests.test_x" name="test_b">'
                 '<failure message="boom"/></testcase><testcase classname="tests.test_x" name="test_c"/>'
                 '<testcase classname="tests.test_x" name="test_d"/><testcase classname="tests.test_x" name="test_e">'
                 '<skipped/></testcase></testsuite></testsuites>')
    with open(os.path.join(out, ROWS), "w", encoding="utf-8") as fh:
        for op, shape, flops, nbytes in [("masked_cross_attention", "32x8x50x50x32", 1.3e9, None),
                                         ("kl_divergence", "4096x4096", None, 2 * 4096 * 4096 * 4),
                                         ("mmd", "8192+8192x256", 1.4e11, None),
                                         ("fsrf_model_step", "B64 T50 MOSEI", None, None)]:
            for mode in ("fwd", "fwd+bwd"):
                f = rnd.uniform(0.05, 2.0)
                peers = {"eager": f * rnd.uniform(0.5, 4), "compile": f * rnd.uniform(0.5, 3)}
                if op == "masked_cross_attention":
                    peers["sdpa"] = f * rnd.uniform(0.5, 2)
                    peers["compile"] = "skipped (budget)"
                fh.write(json.dumps({"op": op, "shape": shape, "dtype": "float32", "mode": mode, "fsrf_ms": f,
                                     "peers": peers, "flops": flops and flops * (3.5 if mode != "fwd" else 1),
                                     "bytes": nbytes, "notes": ["dry run"]}) + "\n")
        fh.write(json.dumps({"op": "orthogonality_loss", "shape": "64x128", "dtype": "float32", "mode": "fwd",
                             "fsrf_ms": None, "peers": {}, "error": "RuntimeError: fake failure"}) + "\n")
        fh.write("{not json\n")
    table(out)
    res = _read_json(os.path.join(out, "results.json"))
    assert res and len(res["rows"]) == 10, "dry run: results.json incomplete"
    with open(os.path.join(out, "results.csv"), encoding="utf-8") as fh:
        assert len(list(csv.reader(fh))) == 11, "dry run: results.csv incomplete"
    print("dry run OK")


# ============================================================================================
# Benchmarks (GPU)
# ============================================================================================

def _load_peers():
    """benchmarks/_peers.py, the peers and shapes this report shares with the pytest benchmarks.

    Python puts a script's folder on sys.path, except under PYTHONSAFEPATH (which the test
    suite sets for its subprocesses) or when this file is imported from elsewhere.
    """
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)
    import _peers

    return _peers


class Bench:
    """Runs the benchmark rows. device="cpu" is a smoke run of this code on tiny shapes (no GPU:
    fsrf's CPU backends, host timers, no torch.compile peers), to catch mistakes before GPU time."""

    def __init__(self, out, budget_s, device="cuda"):
        import torch

        self.torch = torch
        self.out = out
        self.deadline = time.monotonic() + budget_s
        self.dev = device
        self.cuda = device == "cuda"
        self.be_attn = "cuda" if self.cuda else "auto"
        self.be_loss = "triton" if self.cuda else "auto"
        self.peers = _load_peers()
        try:
            import triton.testing as tt
            self.do_bench = tt.do_bench
        except Exception:  # pragma: no cover - the GPU image has triton
            self.do_bench = None

    def left(self):
        return self.deadline - time.monotonic()

    def shapes(self, op):
        """``op``'s shapes for this run: the GPU's, or the tiny ones of the CPU smoke run."""
        return self.peers.REPORT_SHAPES[op][self.dev]

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def time_ms(self, fn, grad_to_none=None, rep=100):
        """Median ms of fn() (CUDA events; L2 flushed before each repetition by do_bench)."""
        torch = self.torch
        fn()
        self.sync()
        if not self.cuda:  # smoke run: one timed call after the warm-up
            for x in grad_to_none or ():
                x.grad = None
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) * 1e3
        if self.do_bench is not None:
            return float(self.do_bench(fn, warmup=25, rep=rep, grad_to_none=grad_to_none, return_mode="median"))
        times = []
        for _ in range(20):
            if grad_to_none:
                for x in grad_to_none:
                    x.grad = None
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            e.synchronize()
            times.append(s.elapsed_time(e))
        return sorted(times)[len(times) // 2]

    def emit(self, row):
        with open(os.path.join(self.out, ROWS), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, default=str) + "\n")
        f, peers = row.get("fsrf_ms"), row.get("peers", {})
        ptxt = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in peers.items())
        print(f"  {row['op']:<24} {row['shape']:<22} {row['dtype']:<9} {row['mode']:<8} "
              f"fsrf {_fmt_ms(f)} ms | {ptxt}" + (f" | ERROR {row['error'][:120]}" if row.get("error") else ""),
              flush=True)

    # -------------------------------------------------------------------------------- ceilings
    def roofline(self):
        torch = self.torch
        if not self.cuda:
            with open(os.path.join(self.out, ROOF), "w", encoding="utf-8") as fh:
                json.dump({"device": "cpu smoke run (timings meaningless)", "torch": torch.__version__,
                           "copy_gbs": None, "matmul_tflops": {}}, fh)
            return
        import triton

        props = torch.cuda.get_device_properties(0)
        copy_gbs = self._copy_gbs()
        mm = {}
        prev_tf32 = torch.backends.cuda.matmul.allow_tf32
        for name, dtype, n, tf32 in (("bfloat16", torch.bfloat16, 8192, False), ("float16", torch.float16, 8192, False),
                                     ("float32", torch.float32, 4096, False), ("tf32", torch.float32, 8192, True)):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            mm[name] = self._matmul_tflops(dtype, n)
        torch.backends.cuda.matmul.allow_tf32 = prev_tf32
        roof = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "triton": triton.__version__,
                "cuda": torch.version.cuda, "sms": props.multi_processor_count, "copy_gbs": copy_gbs,
                "matmul_tflops": mm}
        with open(os.path.join(self.out, ROOF), "w", encoding="utf-8") as fh:
            json.dump(roof, fh, indent=1)
        print(f"ceilings: copy {copy_gbs:.0f} GB/s; " + ", ".join(f"{k} {v:.1f} TFLOP/s" for k, v in mm.items()),
              flush=True)
        torch.cuda.empty_cache()

    # The operands live in these helpers' frames, so they are freed before the next measurement.
    def _copy_gbs(self):
        """Device-to-device copy bandwidth in GB/s (bytes read + written)."""
        x = self.torch.randn(2**27, device=self.dev)  # 512 MiB, far beyond L2
        y = self.torch.empty_like(x)
        t = self.time_ms(lambda: y.copy_(x))
        return 2 * x.numel() * 4 / (t * 1e-3) / 1e9

    def _matmul_tflops(self, dtype, n):
        """Rate of an n x n x n matmul in ``dtype``, in TFLOP/s."""
        a = self.torch.randn(n, n, device=self.dev).to(dtype)
        b = self.torch.randn(n, n, device=self.dev).to(dtype)
        t = self.time_ms(lambda: a @ b)
        return 2 * n**3 / (t * 1e-3) / 1e12

    # -------------------------------------------------------------------------------- one row
    def row(self, op, shape, dtype, make, impls, flops=None, nbytes=None, roof_dtype=None, modes=("fwd", "fwd+bwd"),
            notes=()):
        """Times impls {name: f(*inputs) -> tensor} in each mode; 'fsrf' is the subject.

        make() returns the inputs (tensors requiring grad where gradients are wanted) and the
        upstream gradient for the output (None: the output is a scalar). A name starting with
        'compile' is wrapped in torch.compile once and reused for both modes; it is skipped when
        the time budget is nearly spent.
        """
        torch = self.torch
        dname = str(dtype).replace("torch.", "")
        try:
            inputs, gout = make()
        except Exception as exc:
            for mode in modes:
                self.emit(dict(op=op, shape=shape, dtype=dname, mode=mode, fsrf_ms=None, peers={},
                               error=f"{type(exc).__name__}: {exc}"))
            return
        leaves = [x for x in inputs if isinstance(x, torch.Tensor) and x.requires_grad]
        prepared = {}
        for name, fn in impls.items():
            if name == "compile":
                if not self.cuda:
                    prepared[name] = "skipped (cpu smoke)"
                    continue
                if self.left() < 35:
                    prepared[name] = "skipped (budget)"
                    continue
                torch._dynamo.reset()
                prepared[name] = torch.compile(fn)
            else:
                prepared[name] = fn
        for mode in modes:
            res = dict(op=op, shape=shape, dtype=dname, mode=mode, fsrf_ms=None, peers={}, notes=list(notes),
                       roof_dtype=roof_dtype or dname)
            if flops:
                res["flops"] = flops * (3.5 if mode == "fwd+bwd" and op == "masked_cross_attention" else
                                        (3.0 if mode == "fwd+bwd" else 1.0))
            if nbytes:
                res["bytes"] = nbytes[mode] if isinstance(nbytes, dict) else nbytes
            for name, fn in prepared.items():
                if isinstance(fn, str):
                    res["peers"][name] = fn
                    continue
                if self.left() < 5:
                    val = "skipped (budget)"
                else:
                    try:
                        if mode == "fwd":
                            call = (lambda f=fn: f(*inputs))
                        else:
                            def call(f=fn):
                                o = f(*inputs)
                                if gout is None:
                                    o.backward()
                                else:
                                    o.backward(gout)
                        val = self.time_ms(call, grad_to_none=leaves)
                        if name == "fsrf" and self.cuda:
                            torch.cuda.synchronize()
                            torch.cuda.reset_peak_memory_stats()
                            base = torch.cuda.memory_allocated()
                            call()
                            torch.cuda.synchronize()
                            res["peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
                            for x in leaves:
                                x.grad = None
                    except Exception as exc:
                        val = None
                        msg = f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                        res["error"] = (res.get("error", "") + "; " + msg).strip("; ")
                        if os.environ.get("GPU_REPORT_TRACEBACK"):
                            traceback.print_exc()
                if name == "fsrf":
                    res["fsrf_ms"] = val
                else:
                    res["peers"][name] = val
            self.emit(res)
        del prepared
        if self.cuda:
            torch.cuda.empty_cache()

    # -------------------------------------------------------------------------------- the ops
    def attention(self):
        torch = self.torch
        p = self.peers
        ours = p.fsrf_peer("masked_cross_attention", self.be_attn)
        for (B, H, Tq, Tk, D) in self.shapes("masked_cross_attention"):
            for dtype in (torch.bfloat16, torch.float32):
                g = torch.Generator(device="cpu").manual_seed(0)
                mask_cpu = torch.rand(B, Tk, generator=g) > 0.15
                mask_cpu[0] = False  # one sample with the whole modality missing
                observed = int(mask_cpu.sum())

                def make(B=B, H=H, Tq=Tq, Tk=Tk, D=D, dtype=dtype, mask_cpu=mask_cpu):
                    q, k, v = (torch.randn(B, H, T, D, device=self.dev, dtype=dtype, requires_grad=True)
                               for T in (Tq, Tk, Tk))
                    return [q, k, v, mask_cpu.to(self.dev)], torch.randn(B, H, Tq, D, device=self.dev, dtype=dtype)
                flops = 4.0 * H * Tq * D * observed  # q.k and p.v over observed keys only
                self.row("masked_cross_attention", f"{B}x{H}x{Tq}x{Tk}x{D}", dtype, make,
                         {"fsrf": ours, "sdpa": p.attention_sdpa, "eager": p.attention_eager,
                          "compile": p.attention_eager}, flops=flops,
                         notes=["attention FLOPs count observed keys; fwd+bwd = 3.5x fwd"])

    def losses(self):
        torch = self.torch
        p = self.peers
        f32 = torch.float32

        # One direction, fsrf's default (symmetric=False); bench_kl_divergence.py times FSRF's
        # symmetric setting.
        def kl_eager(s, t):
            return p.kl_eager(s, t, symmetric=False)

        kl_ours = p.fsrf_peer("kl_divergence", self.be_loss, symmetric=False)
        for R, Cn in self.shapes("kl_divergence"):
            for dtype in (f32, torch.bfloat16):
                es = torch.tensor([], dtype=dtype).element_size()
                n = R * Cn

                def make(R=R, Cn=Cn, dtype=dtype):
                    s = torch.randn(R, Cn, device=self.dev, dtype=dtype, requires_grad=True)
                    return [s, torch.randn(R, Cn, device=self.dev, dtype=dtype)], None
                self.row("kl_divergence", f"{R}x{Cn}", dtype, make,
                         {"fsrf": kl_ours, "eager": kl_eager, "compile": kl_eager},
                         nbytes={"fwd": 2 * n * es, "fwd+bwd": 3 * n * es})

        for N, M, d in self.shapes("mmd"):
            def make_mmd(N=N, M=M, d=d):
                return [torch.randn(N, d, device=self.dev, requires_grad=True),
                        (torch.randn(M, d, device=self.dev) + 0.1).requires_grad_()], None
            self.row("mmd", f"{N}+{M}x{d}", f32, make_mmd,
                     {"fsrf": p.fsrf_peer("mmd", self.be_loss), "eager": p.mmd_eager_gram,
                      "compile": p.mmd_eager_gram},
                     flops=2.0 * (N + M) ** 2 * d, roof_dtype="tf32",
                     notes=["MMD FLOPs: the (N+M)^2 pairwise dot products, fwd+bwd = 3x; its float32 products run as "
                            "tf32x3 (3 tf32 products each), so its roof is 1/3 of the tf32 rate shown"])

        for N, d1, d2 in self.shapes("orthogonality_loss"):
            def make_o(N=N, d1=d1, d2=d2):
                return [torch.randn(N, d1, device=self.dev, requires_grad=True),
                        torch.randn(N, d2, device=self.dev, requires_grad=True)], None
            self.row("orthogonality_loss", f"{N}x{d1} / {N}x{d2}", f32, make_o,
                     {"fsrf": p.fsrf_peer("orthogonality_loss", self.be_loss), "eager": p.orth_eager,
                      "compile": p.orth_eager}, flops=2.0 * N * d1 * d2,
                     nbytes={"fwd": N * (d1 + d2) * 4, "fwd+bwd": 2 * N * (d1 + d2) * 4}, roof_dtype="float32")
        for N, d in self.shapes("decorrelation_loss"):
            def make_d(N=N, d=d):
                return [torch.randn(N, d, device=self.dev, requires_grad=True)], None
            self.row("decorrelation_loss", f"{N}x{d}", f32, make_d,
                     {"fsrf": p.fsrf_peer("decorrelation_loss", self.be_loss), "eager": p.decor_eager,
                      "compile": p.decor_eager}, flops=2.0 * N * d * d,
                     nbytes={"fwd": N * d * 4, "fwd+bwd": 2 * N * d * 4})

        pairs, decor = p.REPORT_PAIRS, p.REPORT_DECOR
        loop = p.constraints_eager(pairs, decor)
        grouped = p.fsrf_peer("factor_constraints", self.be_loss, pairs=pairs, decorrelate=decor)

        def grouped_eager(*fs):
            return loop(fs).sum()

        def grouped_ours(*fs):
            return grouped(list(fs)).sum()

        nf = p.REPORT_FACTORS
        for N, d in self.shapes("factor_constraints"):
            def make_g(N=N, d=d):
                return [torch.randn(N, d, device=self.dev, requires_grad=True) for _ in range(nf)], None
            self.row("factor_constraints", f"{nf}x({N}x{d}) {len(pairs)} pairs+{len(decor)}", f32, make_g,
                     {"fsrf": grouped_ours, "eager": grouped_eager, "compile": grouped_eager},
                     flops=2.0 * N * d * d * (len(pairs) + len(decor)),
                     nbytes={"fwd": nf * N * d * 4, "fwd+bwd": 2 * nf * N * d * 4})

    def model_step(self):
        torch = self.torch
        try:
            import fsrf
            from fsrf import FSRFModel
        except Exception as exc:
            print(f"  fsrf_model_step: skipped, FSRFModel not importable ({type(exc).__name__}: {exc})")
            self.emit(dict(op="fsrf_model_step", shape="B64 T50 MOSEI", dtype="float32", mode="fwd+bwd",
                           fsrf_ms=None, peers={}, error=f"skipped: FSRFModel not importable ({exc})"))
            return
        (B, T), = self.shapes("fsrf_model_step")
        dims = self.peers.MOSEI_DIMS
        try:
            torch.manual_seed(0)
            model = FSRFModel(dims).to(self.dev).train()
            inputs = {m: torch.randn(B, T, d, device=self.dev) for m, d in dims.items()}
            masks = {m: torch.rand(B, T, device=self.dev) > 0.3 for m in dims}
            labels = torch.randn(B, device=self.dev)
            params = [p for p in model.parameters() if p.requires_grad]

            def step():
                loss, _parts = model.training_loss(inputs, masks, labels)
                loss.backward()

            t_auto = self.time_ms(step, grad_to_none=params, rep=200)
            with fsrf.use_backend("torch"):
                t_torch = self.time_ms(step, grad_to_none=params, rep=200)
            self.emit(dict(op="fsrf_model_step", shape=f"B{B} T{T} MOSEI", dtype="float32", mode="fwd+bwd",
                           fsrf_ms=t_auto, peers={"fsrf-torch": t_torch},
                           notes=["model step peer = the same model with every op on the torch backend"]))
        except Exception as exc:
            traceback.print_exc()
            self.emit(dict(op="fsrf_model_step", shape="B64 T50 MOSEI", dtype="float32", mode="fwd+bwd",
                           fsrf_ms=None, peers={}, error=f"{type(exc).__name__}: {exc}"))


def bench(out, budget_s, device="cuda"):
    import torch

    if device == "cuda" and not torch.cuda.is_available():
        print("gpu_report bench: no CUDA device; nothing to measure")
        return 2
    import fsrf

    fsrf.set_check_finite(False)
    os.makedirs(out, exist_ok=True)
    b = Bench(out, budget_s, device)
    print(f"fsrf backends on {device}: " + ", ".join(
        f"{op}={e[device]}" for op, e in fsrf.info()["ops"].items()), flush=True)
    status = 0
    for part in (b.roofline, b.attention, b.losses, b.model_step):
        if b.left() < 3:
            print(f"gpu_report bench: budget spent before {part.__name__}")
            status = 1
            break
        try:
            part()
        except Exception:
            traceback.print_exc()
            status = 1
    return status


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--dry-run":
        out = argv[1] if len(argv) > 1 else tempfile.mkdtemp(prefix="gpu_report_dry_")
        dry_run(os.path.abspath(out))
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog="--dry-run [OUT]: exercise the report code on fabricated data (no GPU)")
    p.add_argument("cmd", choices=["bench", "table"], help="what to do")
    p.add_argument("out", nargs="?", default="./gpu_check_out", help="output folder (default ./gpu_check_out)")
    p.add_argument("--budget-s", type=float, default=125.0, help="soft time budget of `bench` in seconds")
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                   help="cpu: smoke run of the benchmark code on tiny shapes (no GPU needed)")
    a = p.parse_args(argv)
    if a.cmd == "bench":
        return bench(os.path.abspath(a.out), a.budget_s, a.device)
    table(os.path.abspath(a.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
