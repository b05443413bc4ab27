"""Turn one ``pytest --benchmark-only --benchmark-json=FILE`` run into the tables of BENCHMARKS.md.

    python benchmarks/report.py bench.json > tables.md

Each benchmark carries ``extra_info`` = {op, shape, mode, impl, peak_mib} (see the benchmark
files). Per (op, shape, mode) the table lists every implementation's median time and peak memory
and the speed ratio of fsrf's row against the fastest peer (eager, compile, sdpa):
``ratio = best peer median / fsrf median`` (> 1 means fsrf is faster).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

PEERS = ("eager", "compile", "sdpa")


def _fmt_ms(s: float) -> str:
    ms = s * 1e3
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}" if ms < 100 else f"{ms:.0f}"


def render(data: dict) -> str:
    """Markdown tables for a pytest-benchmark JSON document."""
    groups: dict[tuple, list] = defaultdict(list)
    for b in data["benchmarks"]:
        info = b.get("extra_info", {})
        if "impl" not in info:
            continue
        variant = info.get("mask", info.get("masked", ""))
        shape = str(info.get("shape", "")) + (f" [mask: {variant}]" if variant not in ("", None) else "")
        key = (info.get("op", b["group"]), shape, info.get("mode", ""))
        groups[key].append((info["impl"], b["stats"]["median"], info.get("peak_mib"), b["stats"]["rounds"]))
    mi = data.get("machine_info", {})
    cpu = mi.get("cpu", {}).get("brand_raw", "")
    lines = [f"Machine: {cpu} ({mi.get('cpu', {}).get('count', '?')} logical CPUs), "
             f"python {mi.get('python_version', '?')}; run {data.get('datetime', '?')}.", ""]
    by_op: dict[str, list] = defaultdict(list)
    for key in sorted(groups):
        by_op[key[0]].append(key)
    for op, keys in by_op.items():
        lines += [f"### {op}", "", "| shape | mode | impl | median ms | peak MiB | fsrf vs best peer |",
                  "|---|---|---|---:|---:|---:|"]
        for key in keys:
            rows = sorted(groups[key], key=lambda r: r[1])
            peers = [r for r in rows if r[0] in PEERS]
            best_peer = min((r[1] for r in peers), default=None)
            for impl, med, peak, _ in rows:
                ratio = ""
                if impl.startswith("fsrf") and best_peer:
                    ratio = f"{best_peer / med:.2f}×"
                peak_s = "" if peak is None else f"{peak:.1f}"
                lines.append(f"| {key[1]} | {key[2]} | {impl} | {_fmt_ms(med)} | {peak_s} | {ratio} |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """CLI entry: ``report.py BENCH_JSON``; prints markdown."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python benchmarks/report.py BENCH_JSON", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as fh:
        print(render(json.load(fh)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
