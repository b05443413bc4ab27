"""Every public name and command that README.md documents imports and runs as documented."""

import re
import shlex
from pathlib import Path

import pytest
import torch

import fsrf

README = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")

# (dotted name, where it is defined): the README's names, and the module each one lives in
PUBLIC = [
    ("fsrf.FSRFLayer", "fsrf.nn.layer"), ("fsrf.FSRFOutput", "fsrf.nn.layer"),
    ("fsrf.FSRFModel", "fsrf.models.fsrf_model"), ("fsrf.FSRFConfig", "fsrf.config"),
    ("fsrf.FSRFObjective", "fsrf.models.objective"),
    ("fsrf.info", "fsrf"), ("fsrf.set_backend", "fsrf.runtime.backend"),
    ("fsrf.get_backend", "fsrf.runtime.backend"), ("fsrf.use_backend", "fsrf.runtime.backend"),
    ("fsrf.set_check_finite", "fsrf.runtime.backend"),
    ("fsrf.nn.MaskedCrossModalAttention", "fsrf.nn.attention"), ("fsrf.nn.FSRFLayer", "fsrf.nn.layer"),
    ("fsrf.nn.ShrinkagePool", "fsrf.nn.pooling"),
    ("fsrf.ops.masked_cross_attention", "fsrf.ops.masked_cross_attention"),
    ("fsrf.ops.orthogonality_loss", "fsrf.ops.orthogonality"),
    ("fsrf.ops.decorrelation_loss", "fsrf.ops.decorrelation"),
    ("fsrf.ops.factor_constraints", "fsrf.ops.factor_constraints"),
    ("fsrf.ops.kl_divergence", "fsrf.ops.kl_divergence"), ("fsrf.ops.mmd", "fsrf.ops.mmd"),
    ("fsrf.missing.corrupt", "fsrf.missing"), ("fsrf.missing.corrupt_split", "fsrf.missing"),
    ("fsrf.metrics.compute", "fsrf.metrics"), ("fsrf.metrics.classification", "fsrf.metrics"),
    ("fsrf.data.load_mmsa", "fsrf.data.mmsa"), ("fsrf.data.make_synthetic", "fsrf.data.synthetic"),
    ("fsrf.data.describe", "fsrf.data.mmsa"),
    ("fsrf.training.fit", "fsrf.training.trainer"), ("fsrf.training.run_demo", "fsrf.training.demo"),
]


def _resolve(dotted: str):
    import importlib

    obj = fsrf
    parts = dotted.split(".")
    for i, part in enumerate(parts[1:], 1):
        try:
            obj = getattr(obj, part)
        except AttributeError:  # a sub-module not imported yet (fsrf.kernels, fsrf.reference.mmd, ...)
            obj = importlib.import_module(".".join(parts[:i + 1]))
    return obj


@pytest.mark.parametrize("dotted, home", PUBLIC, ids=[p[0] for p in PUBLIC])
def test_public_name_resolves_to_its_definition(dotted, home):
    obj = _resolve(dotted)
    assert callable(obj) and obj.__doc__, dotted
    assert obj.__module__ == home, f"{dotted} is defined in {obj.__module__}, expected {home}"


def test_every_readme_name_is_listed():
    """A name the README shows in code (``fsrf.x.y``) is in PUBLIC above or a module."""
    listed = {p[0] for p in PUBLIC}
    for name in set(re.findall(r"\bfsrf(?:\.[A-Za-z_]\w*)+", README)):
        name = name.rstrip(".")
        if name in listed:
            continue
        obj = _resolve(name)  # raises AttributeError if the README names something that is gone
        assert obj is not None, name


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_layer_example_runs():
    """The 'Using the layer in your model' block, as written."""
    block = next(b for b in _python_blocks() if "FSRFLayer(" in b)
    scope: dict = {}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102 - the documentation itself is the test
    assert torch.isfinite(scope["loss"])
    assert {"task_a", "task_b", "orth", "kl", "dist", "recov", "pred", "total"} <= set(scope["parts"])
    assert scope["pred"].shape == (8,)
    assert scope["out"].fused.shape == (8, 128)
    assert scope["layer"].enc_hom[0].weight.grad is not None  # the backward reached the layer


def test_readme_ops_example_names_exist():
    block = next(b for b in _python_blocks() if "from fsrf import ops" in b)
    for name in re.findall(r"ops\.(\w+)\(", block):
        assert callable(getattr(fsrf.ops, name)), name


def _commands() -> list[list[str]]:
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", README, flags=re.S):
        for line in block.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("fsrf "):
                cmds.append(shlex.split(line)[1:])
            elif "-m fsrf " in line:
                cmds.append(shlex.split(line.split("-m fsrf ", 1)[1]))
    return cmds


@pytest.mark.parametrize("argv", _commands(), ids=lambda a: " ".join(a)[:60])
def test_readme_command_parses(argv):
    """Each documented command line is accepted by the parser (flags exist, values are valid)."""
    from fsrf.cli import build_parser

    args = build_parser().parse_args(argv)
    assert callable(args.func)


def test_readme_lists_commands():
    assert len(_commands()) >= 6
