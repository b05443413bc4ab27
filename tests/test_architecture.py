"""The layering of ARCHITECTURE.md: import-linter keeps it, catches a forbidden import, and the
compiled sources include nothing but torch, CUDA, the standard library and themselves."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))

pytestmark = pytest.mark.skipif(not Path(LINT).exists(), reason="import-linter is not installed (pip install '.[test]')")


def _copy_tree(dst: Path) -> Path:
    """The Python sources of fsrf/ and kernels/ (no binaries) in ``dst``, as lint-imports sees them."""
    for pkg in ("fsrf", "kernels"):
        shutil.copytree(ROOT / pkg, dst / pkg, ignore=shutil.ignore_patterns("*.so", "*.pyd", "__pycache__"))
    return dst


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    # lint-imports analyses the packages importable from its working directory first
    return subprocess.run([LINT, "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_the_tree_keeps_every_contract(tmp_path):
    proc = _lint(_copy_tree(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize("module, line, contract", [
    ("fsrf/ops/_common.py", "from fsrf.nn import layer", "fsrf is layered"),
    ("fsrf/data/synthetic.py", "import fsrf.models", "never import the model"),
    ("kernels/mmd.py", "import fsrf.runtime", "know nothing of fsrf"),
    ("fsrf/runtime/extension.py", "from fsrf.runtime import checks", "no import cycle"),
])
def test_a_forbidden_import_is_caught(tmp_path, module, line, contract):
    tree = _copy_tree(tmp_path)
    with open(tree / module, "a", encoding="utf-8") as fh:
        fh.write(f"\n{line}  # a violation planted by the test\n")
    proc = _lint(tree)
    assert proc.returncode != 0, proc.stdout[-3000:]
    broken = [ln for ln in proc.stdout.splitlines() if ln.rstrip().endswith("BROKEN")]
    assert any(contract in ln for ln in broken), proc.stdout[-3000:]


# torch / CUDA / pybind11, x86 intrinsics, and extension-less standard headers (<cmath>, <vector>)
_ALLOWED_SYSTEM = re.compile(r"^(torch|ATen|c10|pybind11)/|^(cuda\w*|mma|\w*intrin)\.h$|^[a-z_0-9]+$")


def test_compiled_sources_know_nothing_of_fsrf():
    """csrc/ includes torch/CUDA/std headers and its own, and names no Python module of fsrf."""
    sources = sorted(p for p in (ROOT / "csrc").rglob("*") if p.suffix in {".cpp", ".cu", ".cuh", ".h"})
    assert sources
    for path in sources:
        text = path.read_text(encoding="utf-8")
        for inc in re.findall(r'^\s*#\s*include\s*[<"]([^>"]+)[>"]', text, flags=re.M):
            local = (path.parent / inc).is_file()
            assert local or _ALLOWED_SYSTEM.search(inc), f"{path.name} includes {inc}"
        assert not re.search(r"fsrf\.(nn|models|training|ops|data)\b|FSRFLayer|FSRFModel", text), path.name
