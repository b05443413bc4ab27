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


GPU_CHECK = os.path.join(ROOT, "benchmarks", "gpu_check.sh")


def _limits():
    """The phase limits gpu_check.sh sets by default, read by bash itself."""
    lines = [line for line in open(GPU_CHECK, encoding="utf-8") if line.startswith(': "${LIMIT_')]
    script = "".join(lines) + 'for v in ENV BUILD TESTS BENCH TRAIN TABLE; do n=LIMIT_$v; echo "$v ${!n}"; done'
    r = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    return {k: int(v) for k, v in (line.split() for line in r.stdout.splitlines())}


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_gpu_check_phases_fit_one_nine_minute_call():
    limits = _limits()
    text = open(GPU_CHECK, encoding="utf-8").read()
    assert text.count("timeout --kill-after=5 ") == 2  # run_phase's two forms
    # a phase that ignores SIGTERM ends 5 s past its limit; the tests' limit is what is left of the
    # total after env and build, so only the tests, bench and train phases can add to it
    assert sum(limits.values()) + 3 * 5 <= 9 * 60, limits
    # a cold Triton cache, MMD autotuning and the compile tests: well above the old 120 s
    assert limits["TESTS"] >= 200 and limits["TRAIN"] >= 90
    # the tests take the time env and build leave unused; pytest is interrupted, not killed
    assert "LIMIT_TESTS=$(( t_all + TOTAL_S - $(date +%s) - LIMIT_BENCH - LIMIT_TRAIN - LIMIT_TABLE ))" in text
    assert 'timeout --signal=INT --kill-after=15 "$(( LIMIT_TESTS - 25 ))"' in text


def test_gpu_check_build_fallback_is_a_regular_install():
    text = open(GPU_CHECK, encoding="utf-8").read()
    commands = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert not any("build_ext" in c for c in commands)  # leaves kernels/ unmapped: fsrf.kernels missing
    assert any(c.startswith('FSRF_FORCE_CUDA=1 "$PY" -m pip install --no-build-isolation --no-deps --no-index . ')
               for c in commands)
    assert any("import fsrf.kernels.mmd" in c for c in commands)  # the build phase checks it


def test_gpu_check_checks_what_the_tests_need():
    text = open(GPU_CHECK, encoding="utf-8").read()
    assert 'for mod in ("pytest", "numpy", "xdist"):' in text
    assert '*" pytest "*|*" numpy "*)' in text  # the tests phase is skipped, with the reason


@pytest.mark.skipif(shutil.which("timeout") is None, reason="no coreutils timeout")
def test_an_interrupted_pytest_still_writes_its_junit_file(tmp_path):
    # what the tests phase relies on: SIGINT at its limit, and pytest reports what finished
    (tmp_path / "test_slow.py").write_text("import time\n\ndef test_fast():\n    pass\n\n"
                                           "def test_slow():\n    time.sleep(60)\n")
    xml = tmp_path / "out.xml"
    r = subprocess.run(["timeout", "--signal=INT", "--kill-after=15", "6", sys.executable, "-m", "pytest",
                        str(tmp_path / "test_slow.py"), "-q", "-p", "no:cacheprovider", f"--junitxml={xml}"],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert r.returncode != 0
    assert xml.exists(), r.stdout[-1000:]
    assert 'name="test_fast"' in xml.read_text()


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


def test_every_test_that_needs_cuda_is_selected_by_the_gpu_mark(tmp_path):
    # gpu_check.sh runs `pytest -m gpu`: a test that skips without CUDA but lacks the mark would
    # never run anywhere. Collected in a subprocess with tests/_gpu_audit.py, which lists each
    # test's marks and deselects everything.
    audit = tmp_path / "audit.jsonl"
    env = dict(os.environ, FSRF_GPU_AUDIT=str(audit),
               PYTHONPATH=os.path.join(ROOT, "tests") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    # cwd outside the checkout: `python -m` puts the cwd first on sys.path, and the source tree's
    # fsrf (no compiled _C, no fsrf.kernels) would shadow the installed package
    r = subprocess.run([sys.executable, "-m", "pytest", os.path.join(ROOT, "tests"), "--collect-only", "-q",
                        "-c", os.path.join(ROOT, "pyproject.toml"), "--rootdir", ROOT,
                        "-p", "_gpu_audit", "-p", "no:cacheprovider"], capture_output=True, text=True,
                       timeout=300, env=env, cwd=str(tmp_path))
    assert r.returncode in (0, 5), r.stdout[-2000:] + r.stderr[-2000:]
    rows = [json.loads(line) for line in audit.read_text().splitlines()]
    assert len(rows) > 500  # the whole suite was collected
    needs_cuda = [row for row in rows if any("cuda" in reason.lower() for reason in row["skipif"])]
    assert len(needs_cuda) > 50  # the GPU tests of every op are among them
    unmarked = [row["id"] for row in needs_cuda if not row["gpu"]]
    assert not unmarked, unmarked[:20]


def test_train_step_benchmark_code_cpu_smoke(tmp_path):
    # the eager rows on a tiny batch: the interleaved timing, peak memory, ratios, table and JSON
    out = tmp_path / "train_step.json"
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_train_step.py"), "--device", "cpu",
                        "--smoke", "--impl", "eager torch", "--impl", "eager auto", "--rounds", "3", "--json",
                        str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    rows = res["results"][0]["rows"]
    assert [row["impl"] for row in rows] == ["eager torch", "eager auto"]
    assert rows[0]["vs_eager_torch"] == 1.0 and rows[1]["vs_eager_torch"] > 0
    assert all(row["median_ms"] > 0 and row["error"] is None for row in rows)
    assert "| smoke B=4 T=5/7/6 | eager auto |" in r.stdout


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
