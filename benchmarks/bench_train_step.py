"""The whole FSRF training step: forward of both views, every loss, backward and the optimizer.

What a user pays per batch, for

* ``eager torch``: ``FSRFConfig(backend="torch")``, every op on its pure-PyTorch reference;
* ``eager auto``: the default backends (C++ attention on CPU; CUDA attention and the Triton
  losses on a GPU);
* ``compile(auto)``: ``torch.compile(model.training_loss, dynamic=False)`` (as ``fsrf train
  --compile`` does: one static graph per shape);
* ``compile(auto, fullgraph)``: the same with ``fullgraph=True`` (the step is one graph);
* ``compile(auto, fullgraph, reduce-overhead)``: CUDA only, the graph replayed as a CUDA graph
  (a step at MSA shapes is a few hundred small kernels, bound by launch overhead).

Shapes (``_peers.TRAIN_STEP_SHAPES``): CMU-MOSEI aligned (B = 64, T = 50 for text, audio and
vision) and unaligned (T = 50 / 500 / 500), MOSEI's feature widths 768 / 74 / 35, d = 128, the
default config (dropout 0.1, DAS on), LNLN-style masks (a per-sample drop rate, a quarter of the
samples missing one modality). The optimizer is AdamW, eager, in every row. The NaN/Inf input
checks (a host sync per input) are off in every row, as the compiled graph has none.

Each implementation has its own copy of one model (same initial weights) and its own optimizer.
After the warm-up (compilation included, reported as ``compile_s``) and one peak-memory
measurement per row, the rounds call the implementations **interleaved**, one step each in a
rotating order, so that a load change on a shared machine hits every row alike; the table gives
medians, quartiles and the ratio ``eager torch median / row median`` (> 1: faster).

Run it either way:

    pytest benchmarks/bench_train_step.py --benchmark-only -s        # one pytest-benchmark entry per shape
    python benchmarks/bench_train_step.py [--device cuda] [--rounds N] [--json FILE] [--shape LABEL ...]

The script form prints the markdown table of BENCHMARKS.md (``gpu_check.sh`` runs it on a GPU).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import _peers  # noqa: E402  (after the path fix for the script form)

#: A tiny shape for the CPU smoke test of this file's code (``--smoke``), not a benchmark.
SMOKE_SHAPES = {"smoke B=4 T=5/7/6": (4, {"text": 5, "audio": 7, "vision": 6})}
_SHAPES = {**_peers.TRAIN_STEP_SHAPES, **SMOKE_SHAPES}


def make_batch(B: int, lengths: dict[str, int], device: str, seed: int = 0):
    """MOSEI-like random features, LNLN-style masks and labels in [-3, 3]."""
    g = torch.Generator().manual_seed(seed)
    inputs, masks = {}, {}
    for m, T in lengths.items():
        inputs[m] = torch.randn(B, T, _peers.MOSEI_DIMS[m], generator=g)
        rate = torch.rand(B, 1, generator=g) * (torch.rand(B, 1, generator=g) < 0.5)  # half complete
        masks[m] = torch.rand(B, T, generator=g) >= rate
    # a quarter of the samples miss one whole modality
    names = list(lengths)
    for b in range(0, B, 4):
        masks[names[(b // 4) % len(names)]][b] = False
    labels = torch.empty(B).uniform_(-3, 3, generator=g)
    return ({m: x.to(device) for m, x in inputs.items()}, {m: k.to(device) for m, k in masks.items()},
            labels.to(device))


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def build(impl: str, device: str, state: dict | None):
    """(model, loss function, optimizer) of one row; ``state`` is the shared initial weights."""
    from fsrf import FSRFConfig, FSRFModel

    backend = "torch" if impl == "eager torch" else "auto"
    cfg = FSRFConfig(d_model=_peers.TRAIN_STEP_D_MODEL, backend=backend)
    torch.manual_seed(0)
    model = FSRFModel(_peers.MOSEI_DIMS, cfg).to(device).train()
    if state is not None:
        model.load_state_dict(state)
    fn = model.training_loss
    if impl.startswith("compile"):
        # static shapes, as the trainer compiles: every shape gets its own specialised graph
        kw = {"dynamic": False}
        if "fullgraph" in impl:
            kw["fullgraph"] = True
        if "reduce-overhead" in impl:
            kw["mode"] = "reduce-overhead"
        fn = torch.compile(fn, **kw)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    return model, fn, opt


def make_step(fn, opt, batch, device):
    """One training step: loss of both views, backward, AdamW; waits for the device."""
    inputs, masks, labels = batch

    def step():
        loss, _parts = fn(inputs, masks, labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _sync(device)
    return step


def _quantiles(xs):
    xs = sorted(xs)
    q = lambda f: xs[min(len(xs) - 1, int(f * (len(xs) - 1) + 0.5))]  # noqa: E731
    return q(0.25), q(0.5), q(0.75)


#: Seconds a compiled row is assumed to need for its first step when a deadline is given (a
#: fresh GPU machine; a cache hit is much faster): below this much time left it is skipped.
COMPILE_ALLOWANCE_S = 45.0


def measure(label: str, device: str, rounds: int, impls=None, peak_memory=None, warmup: int = 2,
            log=print, deadline: float | None = None) -> dict:
    """Warm up and time every implementation of ``impls`` at shape ``label``, interleaved.

    ``deadline`` (a ``time.monotonic()`` value): compiled rows that would start with less than
    :data:`COMPILE_ALLOWANCE_S` left are skipped, and the rounds stop early (after at least 3)
    when the next one would pass it. Returns ``{"label", "device", "rounds", "threads", "rows":
    [{impl, median_ms, q1_ms, q3_ms, peak_mib, compile_s, vs_eager_torch, error}]}``.
    """
    def left():
        return float("inf") if deadline is None else deadline - time.monotonic()

    import fsrf

    impls = [i for i in (impls or _peers.TRAIN_STEP_IMPLS) if "reduce-overhead" not in i or device == "cuda"]
    B, lengths = _SHAPES[label]
    batch = make_batch(B, lengths, device)
    prev_check = fsrf.runtime.backend.check_finite_enabled()
    fsrf.set_check_finite(False)
    rows, steps = {}, {}
    try:
        torch.manual_seed(0)
        state = fsrf.FSRFModel(_peers.MOSEI_DIMS, fsrf.FSRFConfig(d_model=_peers.TRAIN_STEP_D_MODEL)).state_dict()
        for impl in impls:
            row = rows[impl] = {"impl": impl, "compile_s": None, "peak_mib": None, "error": None}
            if impl.startswith("compile") and left() < COMPILE_ALLOWANCE_S:
                row["error"] = f"skipped (budget: {max(left(), 0):.0f} s left)"
                log(f"  {label}: {impl} {row['error']}")
                continue
            try:
                _model, fn, opt = build(impl, device, state)
                step = make_step(fn, opt, batch, device)
                t0 = time.perf_counter()
                step()  # compilation, autotuning, allocator
                first = time.perf_counter() - t0
                for _ in range(max(warmup, 3 if "reduce-overhead" in impl else 1)):
                    step()
                if impl.startswith("compile"):
                    row["compile_s"] = round(first, 1)
                if peak_memory is not None:
                    row["peak_mib"] = round(peak_memory(step, device), 1)
                steps[impl] = step
                log(f"  {label}: {impl} ready" + (f" (first step {first:.1f} s)" if row["compile_s"] else ""))
            except Exception as exc:  # one failing row must not lose the others
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
                if os.environ.get("BENCH_TRACEBACK"):
                    traceback.print_exc()
                log(f"  {label}: {impl} FAILED: {row['error']}")
        times = {impl: [] for impl in steps}
        order = list(steps)
        t_round = 0.0
        for r in range(rounds if order else 0):
            if r >= 3 and left() < 1.5 * t_round:
                log(f"  {label}: stopped after {r} rounds (budget)")
                break
            t_r = time.perf_counter()
            for impl in order[r % len(order):] + order[:r % len(order)]:
                t0 = time.perf_counter()
                steps[impl]()
                times[impl].append(time.perf_counter() - t0)
            t_round = time.perf_counter() - t_r
    finally:
        fsrf.set_check_finite(prev_check)
    base = None
    if "eager torch" in times and times["eager torch"]:
        base = _quantiles(times["eager torch"])[1]
    for impl, ts in times.items():
        q1, med, q3 = _quantiles(ts)
        rows[impl].update(median_ms=round(med * 1e3, 2), q1_ms=round(q1 * 1e3, 2), q3_ms=round(q3 * 1e3, 2),
                          vs_eager_torch=round(base / med, 2) if base else None)
    done = max((len(ts) for ts in times.values()), default=0)
    return {"label": label, "device": device, "rounds": done, "threads": torch.get_num_threads(),
            "rows": [rows[i] for i in impls]}


def report_rows(res: dict) -> list[dict]:
    """The rows of one :func:`measure` result in ``gpu_report.py``'s format (``bench_rows.jsonl``):
    op ``fsrf_train_step``, mode = the implementation, peer = eager torch."""
    base = next((r.get("median_ms") for r in res["rows"] if r["impl"] == "eager torch"), None)
    out = []
    for r in res["rows"]:
        error = r.get("error")
        skipped = bool(error) and error.startswith("skipped")
        note = f"train step: {res['rounds']} interleaved rounds"
        if r.get("compile_s"):
            note += f"; first step (compilation) {r['compile_s']} s"
        if skipped:
            note = f"train step {r['impl']} at {res['label']}: {error}"
        out.append({"op": "fsrf_train_step", "shape": res["label"], "dtype": "float32", "mode": r["impl"],
                    "fsrf_ms": r.get("median_ms"), "peers": {} if r["impl"] == "eager torch" or base is None
                    else {"eager torch": base}, "peak_mib": r.get("peak_mib"),
                    "error": None if skipped else error, "notes": [note]})
    return out


def table(results: list[dict], machine: str = "") -> str:
    """The markdown table of BENCHMARKS.md for one or more :func:`measure` results."""
    lines = [f"Machine: {machine}." if machine else "", "",
             "| shape | step | median ms | IQR ms | vs eager torch | peak MiB | first step s |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for res in results:
        for r in res["rows"]:
            if r.get("error") or r.get("median_ms") is None:
                lines.append(f"| {res['label']} | {r['impl']} | ERROR: {r.get('error')} | | | | |")
                continue
            lines.append(f"| {res['label']} | {r['impl']} | {r['median_ms']:.1f} | {r['q1_ms']:.1f}–{r['q3_ms']:.1f} | "
                         f"{r['vs_eager_torch']:.2f}× | {'' if r['peak_mib'] is None else r['peak_mib']} | "
                         f"{'' if r['compile_s'] is None else r['compile_s']} |")
    return "\n".join(lines).lstrip("\n")


def _rounds(label: str, device: str) -> int:
    if device == "cuda":
        return 30
    return 15 if max(_SHAPES[label][1].values()) <= 50 else 5


# ---------------------------------------------------------------------------------------------
# pytest-benchmark entry
# ---------------------------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # pragma: no cover - the script form needs no pytest
    pytest = None

if pytest is not None:
    @pytest.mark.parametrize("label", list(_peers.TRAIN_STEP_SHAPES))
    def test_train_step(benchmark, peak_memory, machine, label):
        """One entry per shape: pytest-benchmark times the interleaved rounds as a whole; the rows
        (median per implementation, peak memory, ratios) are in ``extra_info["rows"]``."""
        device = _peers.DEVICE
        res = {}

        def run():
            res.update(measure(label, device, _rounds(label, device), peak_memory=peak_memory))

        benchmark.group = f"train_step {label}"
        benchmark.pedantic(run, rounds=1, warmup_rounds=0, iterations=1)
        benchmark.extra_info.update(op="train_step", shape=label, machine=machine, device=device,
                                    threads=res["threads"], rounds=res["rounds"], rows=res["rows"])
        print("\n" + table([res], machine))
        assert all(r["error"] is None for r in res["rows"]), [r["error"] for r in res["rows"]]


# ---------------------------------------------------------------------------------------------
# script form
# ---------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    """``python benchmarks/bench_train_step.py``: measure, print the table, optionally write JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cpu", "cuda"], default=_peers.DEVICE)
    p.add_argument("--rounds", type=int, help="timed rounds per shape (default: 30 on CUDA, 15 / 5 on CPU)")
    p.add_argument("--shape", action="append", choices=list(_peers.TRAIN_STEP_SHAPES),
                   help="a shape label (repeatable; default: all)")
    p.add_argument("--impl", action="append", choices=list(_peers.TRAIN_STEP_IMPLS),
                   help="an implementation (repeatable; default: all for the device)")
    p.add_argument("--json", help="write the results to this file")
    p.add_argument("--smoke", action="store_true", help="a tiny shape only: checks this code, measures nothing")
    p.add_argument("--rows", help="append the rows to this bench_rows.jsonl of gpu_report.py")
    p.add_argument("--budget-s", type=float, help="soft time limit: compiled rows that would start too late "
                   "are skipped, rounds stop early")
    a = p.parse_args(argv)
    deadline = None if a.budget_s is None else time.monotonic() + a.budget_s
    if a.device == "cuda" and not torch.cuda.is_available():
        print("bench_train_step: no CUDA device", file=sys.stderr)
        return 2
    from conftest import machine_name, measure_peak_memory

    results = []
    labels = list(SMOKE_SHAPES) if a.smoke else (a.shape or list(_peers.TRAIN_STEP_SHAPES))
    for label in labels:
        print(f"{label}: warming up", flush=True)
        results.append(measure(label, a.device, a.rounds or _rounds(label, a.device), impls=a.impl,
                               peak_memory=measure_peak_memory, log=lambda s: print(s, flush=True),
                               deadline=deadline))
        if a.rows:
            with open(a.rows, "a", encoding="utf-8") as fh:
                for row in report_rows(results[-1]):
                    fh.write(json.dumps(row) + "\n")
        if a.json:  # after every shape, so that a timeout keeps what was measured
            with open(a.json, "w", encoding="utf-8") as fh:
                json.dump({"machine": machine_name(), "torch": torch.__version__, "results": results}, fh, indent=1)
    print()
    print(table(results, machine_name()))
    failed = [r for res in results for r in res["rows"] if r["error"] and not r["error"].startswith("skipped")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
