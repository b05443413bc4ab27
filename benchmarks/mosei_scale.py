"""A CMU-MOSEI-sized run on one machine: load, one training epoch, evaluation at every rate and pattern.

    python benchmarks/mosei_scale.py WORKDIR [--epochs 1] [--json OUT.json]

Writes a synthetic file with CMU-MOSEI's unaligned shapes and split sizes (16,326 / 1,871 / 4,659
samples; 50 x 768 text, 500 x 74 audio, 500 x 35 vision frames: 8.5 GB as float32) once into
WORKDIR, then runs each step as its own ``fsrf`` command and reports its wall time and the peak
resident memory of that process (``ru_maxrss`` of the child), beside the float32 bytes of the
arrays: the numbers of BENCHMARKS.md's "MOSEI-sized run". Not a pytest-benchmark file: one run
takes tens of minutes and most of the machine's memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

SIZES = (16326, 1871, 4659)
FRAMES = {"text": (50, 768), "audio": (500, 74), "vision": (500, 35)}


# run one command and print its wall time and peak RSS: in a fresh process, the children's maximum
# is that command's own
_WRAP = ("import json, resource, subprocess, sys, time; t = time.perf_counter(); "
         "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
         "print(json.dumps({'rc': p.returncode, 'seconds': time.perf_counter() - t, "
         "'peak_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, 'out': p.stdout[-400:], "
         "'err': p.stderr[-2000:]}))")


def _run(cmd: list[str]) -> dict:
    """Wall seconds and peak RSS (GiB) of ``cmd``, run in a process of its own."""
    got = json.loads(subprocess.run([sys.executable, "-c", _WRAP, *cmd], capture_output=True, text=True,
                                    check=True).stdout)
    if got["rc"] != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({got['rc']}):\n{got['err']}")
    return {"command": " ".join(cmd), "seconds": round(got["seconds"], 1),
            "peak_rss_gib": round(got["peak_kib"] / 2**20, 2), "stdout_tail": got["out"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workdir")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    data = work / "mosei_sized.pkl"
    fsrf = [sys.executable, "-m", "fsrf"]
    arrays = sum(n for n in SIZES) * sum(t * d for t, d in FRAMES.values()) * 4
    report = {"array_bytes_gib": round(arrays / 2**30, 2), "steps": {}}
    if not data.is_file():
        report["steps"]["make-synthetic"] = _run(fsrf + ["make-synthetic", "--preset", "mosei", "--unaligned",
                                                         "--n-train", str(SIZES[0]), "--n-valid", str(SIZES[1]),
                                                         "--n-test", str(SIZES[2]), "--out", str(data)])
    report["file_gib"] = round(os.path.getsize(data) / 2**30, 2)
    # each measured step in a fresh process, so that its peak is its own
    load = [sys.executable, "-c", "import sys, time; t = time.perf_counter(); from fsrf.data import load_mmsa; "
            "d = load_mmsa(sys.argv[1]); print(f'load {time.perf_counter() - t:.1f} s')", str(data)]
    report["steps"]["load"] = _run(load)
    # what training and evaluation hold besides the model: the loaded file, two epochs of the LNLN
    # sampler and the 17 evaluation conditions, each with a batch read
    datapath = [sys.executable, "-c",
                "import sys, numpy as np; from fsrf.data import load_mmsa; "
                "from fsrf.missing import ALL_PATTERNS, LNLNSampler, corrupt_split; d = load_mmsa(sys.argv[1]); "
                "s = LNLNSampler(d.split('train'), seed=1111); "
                "[s.epoch(e).batch(np.arange(32)) for e in range(2)]; te = d.split('test'); "
                "[corrupt_split(te, rate=r / 10).batch(np.arange(256)) for r in range(10)]; "
                "[corrupt_split(te, pattern=p).batch(np.arange(256)) for p in ALL_PATTERNS]", str(data)]
    report["steps"]["data path"] = _run(datapath)
    run = work / "run"
    report["steps"]["train"] = _run(fsrf + ["train", "--data", str(data), "--dataset", "mosei", "--epochs",
                                            str(args.epochs), "--no-progress", "--out", str(run)])
    report["steps"]["evaluate"] = _run(fsrf + ["evaluate", "--checkpoint", str(run), "--data", str(data),
                                               "--no-progress", "--out", str(work / "eval")])
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
