"""CPU checks of the GPU validation scripts (benchmarks/gpu_check.sh, benchmarks/gpu_report.py).

They run for real only on a GPU machine; here their syntax is checked, the report code runs on
fabricated results (``--dry-run``), and the benchmark code runs on tiny CPU shapes
(``bench --device cpu``), so a mistake in them is found before GPU time is spent.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORT = os.path.join(ROOT, "benchmarks", "gpu_report.py")


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
@pytest.mark.parametrize("script", ["benchmarks/gpu_check.sh", "scripts/check_cuda_compile.sh",
                                    "scripts/check_cuda_build.sh"])
def test_shell_scripts_parse(script):
    r = subprocess.run(["bash", "-n", os.path.join(ROOT, script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_report_dry_run(tmp_path):
    r = subprocess.run([sys.executable, REPORT, "--dry-run", str(tmp_path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "dry run OK" in r.stdout
    out = r.stdout
    # The table comes last, after the phase and test summaries, and shows failures.
    assert out.index("phase tests") < out.index("op  ") < out.index("dry run OK")
    assert "FAILED tests.test_x::test_b" in out and "ERROR" in out
    res = json.loads((tmp_path / "results.json").read_text())
    att = [row for row in res["rows"] if row["op"] == "masked_cross_attention" and row["mode"] == "fwd"][0]
    assert att["best_peer"] in ("sdpa", "eager") and att["speedup"] == pytest.approx(
        att["best_peer_ms"] / att["fsrf_ms"])


@pytest.mark.slow
def test_benchmark_code_cpu_smoke(tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run([sys.executable, REPORT, "bench", str(tmp_path), "--device", "cpu"], capture_output=True,
                       text=True, timeout=600, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "bench_rows.jsonl").read_text().splitlines()]
    ops = {row["op"] for row in rows}
    assert ops == {"masked_cross_attention", "kl_divergence", "mmd", "orthogonality_loss", "decorrelation_loss",
                   "factor_constraints", "fsrf_model_step"}
    errors = [(row["op"], row.get("error")) for row in rows if row.get("error")]
    assert not errors, errors
    assert all(isinstance(row["fsrf_ms"], float) for row in rows)
    r = subprocess.run([sys.executable, REPORT, "table", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "fsrf_model_step" in r.stdout.splitlines()[-1]
