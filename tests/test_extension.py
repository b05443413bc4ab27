"""The compiled extension fsrf._C: presence, build info, registration, and the fallback when it
is missing or broken (then every op must still run, on its PyTorch reference)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import fsrf
from fsrf.runtime import extension as _extension

from _helpers import HAS_CPP, requires_cpp


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **env)
    full_env.pop("FSRF_BACKEND", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env, capture_output=True,
                          text=True, timeout=180)


@pytest.mark.skipif(os.environ.get("FSRF_REQUIRE_EXTENSION", "") != "1",
                    reason="FSRF_REQUIRE_EXTENSION is not 1 (CI sets it so a missing extension fails)")
def test_extension_is_loaded_when_required():
    assert HAS_CPP, f"FSRF_REQUIRE_EXTENSION=1 but fsrf._C is not loaded: {_extension.extension_error()}"
    assert fsrf.info()["ops"]["masked_cross_attention"]["cpu"] == "cpp"


@requires_cpp
def test_build_info_matches_installed_torch():
    cfg = _extension.build_config()
    assert set(cfg) >= {"torch", "torch_major", "torch_minor", "with_cuda", "openmp"}
    assert cfg["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert (cfg["torch_major"], cfg["torch_minor"]) == tuple(int(x) for x in torch.__version__.split(".")[:2])
    assert isinstance(cfg["with_cuda"], bool)
    if sys.platform.startswith("linux"):
        assert cfg["openmp"] is True, "setup.py compiles with -fopenmp; at::parallel_for would run serially"
    path = os.path.join(os.path.dirname(fsrf.__file__), "_build_config.json")
    with open(path, encoding="utf-8") as fh:
        assert json.load(fh)["torch"] == cfg["torch"]


@requires_cpp
def test_ops_registered_with_cpu_kernels():
    for name in ("fsrf::masked_cross_attention_fwd", "fsrf::masked_cross_attention_bwd"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, "CPU"), name
    schema = str(torch.ops.fsrf.masked_cross_attention_fwd.default._schema)
    assert "Tensor? key_mask, float scale) -> (Tensor, Tensor)" in schema
    assert fsrf.info()["extension"] == "loaded"


def test_without_extension_every_op_runs_on_torch():
    r = run_python("""
        import warnings
        warnings.simplefilter("error")  # disabling on purpose must not warn
        import torch, fsrf
        from fsrf.runtime import extension as _extension
        from fsrf.ops import IMPLEMENTED, masked_cross_attention
        from fsrf.nn import MaskedCrossModalAttention
        assert not _extension.has_cpp()
        assert _extension.extension_error() == "disabled by FSRF_NO_EXTENSION=1"
        info = fsrf.info()
        assert all(info["ops"][op]["cpu"] == "torch" for op in IMPLEMENTED), info["ops"]
        q = torch.randn(2, 2, 3, 4, dtype=torch.float64, requires_grad=True)
        m = torch.tensor([[True, False, True, True], [False] * 4])
        k = torch.randn(2, 2, 4, 4, dtype=torch.float64)
        out = masked_cross_attention(q, k, k, m)
        out.sum().backward()
        assert (out[1] == 0).all() and (q.grad[1] == 0).all() and torch.isfinite(q.grad).all()
        p = torch.softmax((q[0] @ k[0, :, [0, 2, 3]].transpose(-1, -2)) / 2, -1) @ k[0, :, [0, 2, 3]]
        torch.testing.assert_close(out[0], p)
        try:
            masked_cross_attention(q, k, k, m, backend="cpp")
        except ValueError as e:
            assert "FSRF_NO_EXTENSION" in str(e), e
        else:
            raise AssertionError("backend='cpp' must fail without the extension")
        MaskedCrossModalAttention(8, 2)(torch.randn(2, 3, 8), torch.randn(2, 4, 8), torch.randn(2, 4, 8), m)
        print("ok")
    """, FSRF_NO_EXTENSION="1")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_broken_extension_warns_once_and_falls_back():
    # `None` in sys.modules makes `from fsrf import _C` raise ImportError, as a .so with a missing
    # symbol would.
    r = run_python("""
        import sys, warnings
        sys.modules["fsrf._C"] = None
        import torch, fsrf
        from fsrf.runtime import extension as _extension
        from fsrf.ops import masked_cross_attention
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            for _ in range(3):
                out = masked_cross_attention(torch.randn(1, 1, 2, 4), torch.randn(1, 1, 3, 4), torch.randn(1, 1, 3, 4))
                assert _extension.has_cpp() is False
        print(fsrf.info()["ops"]["masked_cross_attention"]["cpu"])
        print(_extension.extension_error())
    """)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == "torch"
    assert lines[1].startswith("fsrf._C failed to load") and "Rebuild it" in lines[1]
    # The one warning is issued when fsrf.ops loads (registration asks for the extension).
    assert r.stderr.count("compiled kernels unavailable, using the PyTorch reference path") == 1, r.stderr


@requires_cpp
@pytest.mark.parametrize("order", ["python_op_first", "extension_first"])
def test_python_custom_op_shares_the_fsrf_namespace(order):
    """Other fsrf ops are torch.library.custom_op("fsrf::...") fragments of the namespace that
    fsrf._C defines with TORCH_LIBRARY(fsrf); both import orders must work."""
    r = run_python(f"""
        import torch

        def define():
            @torch.library.custom_op("fsrf::_probe_namespace", mutates_args=())
            def probe(x: torch.Tensor) -> torch.Tensor:
                return x * 2

            @probe.register_fake
            def _(x):
                return torch.empty_like(x)

        if "{order}" == "python_op_first":
            define()
            import fsrf.ops
        else:
            import fsrf.ops
            define()
        from fsrf.runtime import extension as _extension
        assert _extension.has_cpp(), _extension.extension_error()
        x = torch.randn(3)
        assert torch.equal(torch.ops.fsrf._probe_namespace(x), x * 2)
        out, lse = torch.ops.fsrf.masked_cross_attention_fwd(torch.randn(1, 1, 2, 4), torch.randn(1, 1, 3, 4),
                                                             torch.randn(1, 1, 3, 4), None, 0.5)
        assert out.shape == (1, 1, 2, 4)
        torch.library.opcheck(torch.ops.fsrf._probe_namespace.default, (x,))
        print("ok")
    """)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
