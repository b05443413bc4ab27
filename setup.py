"""Build script for fsrf: the pure-Python package plus one compiled extension, ``fsrf._C``.

Environment switches (all optional):

``FSRF_NO_EXTENSION=1``   skip compilation; every op then runs on its PyTorch reference.
``FSRF_FORCE_CUDA=1``     compile the CUDA sources even when torch or the toolkit looks CPU-only.
``FSRF_NO_CUDA=1``        never compile CUDA sources.
``TORCH_CUDA_ARCH_LIST``  honoured by ``torch.utils.cpp_extension`` (e.g. ``"8.0;9.0"``); when unset
                          and no GPU is visible, ``"8.0;9.0+PTX"``.
``MAX_JOBS``              parallel compile jobs (ninja).
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))
# every sub-package of fsrf/, plus the Triton kernels of the top-level kernels/ folder
PACKAGES = ["fsrf"] + [f"fsrf.{p}" for p in find_packages("fsrf")] + ["fsrf.kernels"]
# The Triton kernels live in the top-level ``kernels/`` folder of the repository but are
# installed as ``fsrf.kernels`` so nothing named ``kernels`` lands in site-packages.
PACKAGE_DIR = {"fsrf": "fsrf", "fsrf.kernels": "kernels"}


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes", "on"}


def _cuda_home_from_nvcc() -> str | None:
    """Locate the toolkit root of the nvcc on PATH.

    ``torch.utils.cpp_extension`` guesses ``CUDA_HOME`` as the parent of the directory holding
    ``nvcc``; that is wrong when ``nvcc`` on PATH is a wrapper script, so ask nvcc itself.
    """
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return None
    try:
        out = subprocess.run(
            [nvcc, "--dryrun", "-c", "-x", "cu", os.devnull, "-o", os.devnull],
            capture_output=True, text=True, timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    for line in (out.stdout + out.stderr).splitlines():
        m = re.match(r"^#\$ TOP=(.*)/bin/\.\.$", line.strip())
        if m and os.path.isdir(m.group(1)):
            return m.group(1)
    return os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))


def _extension_modules():
    if _flag("FSRF_NO_EXTENSION"):
        print("fsrf: FSRF_NO_EXTENSION=1, building without the compiled extension")
        return [], {}
    try:
        import torch  # noqa: F401
    except ImportError:
        sys.exit(
            "fsrf: building the extension needs PyTorch in the build environment, and none was "
            "found.\n  Either install torch first and run `pip install --no-build-isolation .`,\n"
            "  or let pip build in isolation (`pip install .`), or set FSRF_NO_EXTENSION=1 for "
            "a pure-Python install."
        )
    import torch

    want_cuda = not _flag("FSRF_NO_CUDA") and (
        _flag("FSRF_FORCE_CUDA") or (torch.version.cuda is not None and shutil.which("nvcc") is not None)
    )
    if want_cuda and not os.environ.get("CUDA_HOME") and not os.environ.get("CUDA_PATH"):
        home = _cuda_home_from_nvcc()
        if home:
            os.environ["CUDA_HOME"] = home
    if want_cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        # Without a visible GPU torch cannot detect the target and fails with an IndexError;
        # build for Ampere and Hopper, plus PTX that newer GPUs can JIT-compile.
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0+PTX"
        print("fsrf: no GPU visible and TORCH_CUDA_ARCH_LIST unset; building for 8.0;9.0+PTX")
    # cpp_extension reads CUDA_HOME at import time, so it is imported only now.
    from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension

    cpp_sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    cu_sources = sorted(glob.glob(os.path.join("csrc", "*.cu")))
    stems = [os.path.splitext(os.path.basename(p))[0] for p in cpp_sources + cu_sources]
    dup = {s for s in stems if stems.count(s) > 1}
    if dup:
        sys.exit(f"fsrf: csrc/ has .cpp and .cu files sharing a stem {sorted(dup)}; ninja cannot build both")

    # -fopenmp at compile time only: at::parallel_for expands to `#pragma omp parallel` inside our
    # translation unit, and the GOMP symbols then resolve to the OpenMP runtime torch already loads.
    # No -std flag: cpp_extension picks the standard this torch's headers need (C++20 from 2.14 on).
    cxx_flags = ["-O3", "-fopenmp", "-DFSRF_TORCH_VERSION=\"" + torch.__version__ + "\""]
    include_dirs = [os.path.join(ROOT, "csrc")]
    if want_cuda:
        cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or ""
        if not os.path.exists(os.path.join(cuda_home, "include", "cusparse.h")):
            # Minimal toolkits lack cuBLAS/cuSPARSE headers; the CUDA torch wheel's nvidia-* deps
            # ship them next to torch (in an isolated build that is not the venv's purelib).
            for site in {os.path.dirname(os.path.dirname(torch.__file__)), sysconfig.get_paths()["purelib"]}:
                include_dirs += sorted(glob.glob(os.path.join(site, "nvidia", "cu*", "include")))
                include_dirs += sorted(glob.glob(os.path.join(site, "nvidia", "*", "include")))
        ext = CUDAExtension(
            "fsrf._C",
            cpp_sources + cu_sources,
            include_dirs=include_dirs,
            define_macros=[("FSRF_WITH_CUDA", "1")],
            extra_compile_args={
                "cxx": cxx_flags,
                "nvcc": ["-O3", "--use_fast_math", "--expt-relaxed-constexpr", "-lineinfo",
                         "-DFSRF_WITH_CUDA=1"],
            },
        )
    else:
        ext = CppExtension(
            "fsrf._C", cpp_sources, include_dirs=include_dirs, extra_compile_args={"cxx": cxx_flags}
        )
    build_config = {"torch": torch.__version__, "cuda": bool(want_cuda),
                    "torch_cuda": torch.version.cuda, "python": sys.version.split()[0]}

    class _BuildExt(BuildExtension):
        """Builds ``fsrf._C`` and records which torch it was compiled against."""

        def run(self):
            super().run()
            target_dir = os.path.join(ROOT if self.inplace else self.build_lib, "fsrf")
            os.makedirs(target_dir, exist_ok=True)
            tmp = os.path.join(target_dir, "_build_config.json.tmp")
            with open(tmp, "w", encoding="utf-8") as fh:
                json.dump(build_config, fh)
            os.replace(tmp, os.path.join(target_dir, "_build_config.json"))

    return [ext], {"build_ext": _BuildExt.with_options(no_python_abi_suffix=False)}


ext_modules, cmdclass = _extension_modules()

setup(
    packages=PACKAGES,
    package_dir=PACKAGE_DIR,
    package_data={"fsrf": ["_build_config.json"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
