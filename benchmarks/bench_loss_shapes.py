"""FSRF's losses at FSRF's own shapes, ``auto`` against the eager formula, interleaved.

The per-op benchmarks (``bench_<op>.py``) time each implementation in its own pytest-benchmark
entry, minutes apart; on a shared machine a load change between two entries moves their ratio
more than the difference being measured. Here every pair is timed **alternately in one loop**
(one call of the eager formula, one of fsrf's op with ``backend="auto"``, and so on), forward +
backward, so both sides see the same load; the table gives the medians and the ratio
``eager median / auto median`` (> 1: fsrf is faster).

Cases (``_peers``): MMD of 64 + 64 rows × 128 (biased, 5 kernels, σ² from the data), symmetric
KL at T = 2 on 64 × 128 logits, orthogonality of two 64 × 128 factors, decorrelation of one, and
the grouped constraints of 9 factors of 64 × 128 (15 pairs + 6 decorrelation terms = 21),
without masks and with per-modality availability masks (the eager loop then selects rows by
boolean indexing). On CPU ``auto`` is the torch reference of each op. The NaN/Inf input check
is off, as in the other loss benchmarks. One intra-op thread unless ``--threads`` says otherwise.

    pytest benchmarks/bench_loss_shapes.py --benchmark-only -s
    python benchmarks/bench_loss_shapes.py [--rounds N] [--threads T]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

import _peers  # noqa: E402  (after the path fix for the script form)

N, D = 64, 128


def cases(device: str = _peers.DEVICE) -> dict:
    """``{name: (leaves, eager(), auto())}``: the calls timed, each returning a 0-dim loss."""
    import fsrf

    g = torch.Generator().manual_seed(0)

    def leaf(*shape, shift=0.0):
        return (torch.randn(*shape, generator=g) + shift).to(device).requires_grad_()

    x, y = leaf(N, D), leaf(N, D, shift=0.3)
    a, b, z = leaf(N, D), leaf(N, D), leaf(N, D)
    s, t = leaf(N, D), leaf(N, D)
    fac = [leaf(N, D) for _ in range(3 * _peers.MODALITIES)]
    avail = [(torch.rand(N, generator=g) < 0.8).to(device) for _ in range(_peers.MODALITIES)]
    masks = [avail[f // 3] for f in range(3 * _peers.MODALITIES)]
    loop = _peers.EAGER["factor_constraints"]
    T = _peers.KL_TEMPERATURE
    return {
        "mmd 64+64x128": ((x, y), lambda: _peers.mmd_eager(x, y), lambda: fsrf.ops.mmd(x, y)),
        "kl_divergence 64x128": ((s, t), lambda: _peers.kl_eager(s, t),
                                 lambda: fsrf.ops.kl_divergence(s, t, temperature=T, symmetric=True)),
        "orthogonality 64x128/64x128": ((a, b), lambda: _peers.orth_eager(a, b),
                                        lambda: fsrf.ops.orthogonality_loss(a, b)),
        "decorrelation 64x128": ((z,), lambda: _peers.decor_eager(z), lambda: fsrf.ops.decorrelation_loss(z)),
        "factor_constraints 9x(64x128), 21 terms": (
            fac, lambda: loop(fac).sum(),
            lambda: fsrf.ops.factor_constraints(fac, _peers.FSRF_PAIRS, _peers.FSRF_DECOR).sum()),
        "factor_constraints 9x(64x128), 21 terms, masked": (
            fac, lambda: loop(fac, masks).sum(),
            lambda: fsrf.ops.factor_constraints(fac, _peers.FSRF_PAIRS, _peers.FSRF_DECOR, masks=masks).sum()),
    }


def measure(rounds: int = 200, device: str = _peers.DEVICE) -> list[dict]:
    """Rows ``{case, eager_ms, auto_ms, ratio}`` of medians over ``rounds`` alternating calls."""
    rows = []
    with _peers.no_finite_check():
        for name, (leaves, eager, auto) in cases(device).items():
            fns = {"eager": eager, "auto": auto}
            times = {k: [] for k in fns}
            n = rounds if "factor_constraints" not in name else max(rounds // 5, 10)
            for fn in fns.values():  # warm-up
                torch.autograd.grad(fn(), leaves)
            for r in range(n):
                # alternate which goes first, so that neither always follows the other
                for k in (("eager", "auto") if r % 2 == 0 else ("auto", "eager")):
                    t0 = time.perf_counter()
                    torch.autograd.grad(fns[k](), leaves)
                    _peers.synchronize(device)
                    times[k].append(time.perf_counter() - t0)
            med = {k: sorted(v)[len(v) // 2] * 1e3 for k, v in times.items()}
            rows.append({"case": name, "eager_ms": round(med["eager"], 3), "auto_ms": round(med["auto"], 3),
                         "ratio": round(med["eager"] / med["auto"], 2), "calls": n})
    return rows


def table(rows: list[dict], machine: str = "") -> str:
    """Markdown table of :func:`measure`'s rows."""
    lines = ([f"Machine: {machine}.", ""] if machine else []) + [
        "| case (fwd+bwd) | eager ms | fsrf auto ms | eager / auto |", "|---|---:|---:|---:|"]
    lines += [f"| {r['case']} | {r['eager_ms']:.3f} | {r['auto_ms']:.3f} | {r['ratio']:.2f}× |" for r in rows]
    return "\n".join(lines)


def test_fsrf_loss_shapes(benchmark, machine):
    """One pytest-benchmark entry; the interleaved rows are in ``extra_info["rows"]``."""
    res = {}
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        benchmark.group = "fsrf losses at FSRF shapes, interleaved"
        benchmark.pedantic(lambda: res.update(rows=measure()), rounds=1, warmup_rounds=0, iterations=1)
    finally:
        torch.set_num_threads(prev)
    benchmark.extra_info.update(op="fsrf_loss_shapes", machine=machine, device=_peers.DEVICE, threads=1,
                                rows=res["rows"])
    print("\n" + table(res["rows"], machine))


def main(argv=None) -> int:
    """``python benchmarks/bench_loss_shapes.py``: measure and print the table."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    from conftest import machine_name

    print(table(measure(a.rounds), f"{machine_name()}, {a.threads} thread(s)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
