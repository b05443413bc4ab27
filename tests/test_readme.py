"""README.md stays true for a newcomer: its quick start runs, its links resolve, it stays short.

The quick start's commands run as written, in a temporary folder, with one change so that the test
is cheap: the values of the size flags (``--n-train``, ``--n-valid``, ``--n-test`` and
``--epochs``) are replaced by the tiny ones in ``TINY``. Everything else (the commands, their
order, the file names that connect them) is the README's own text.
"""

import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CHECKED_DOCS = [README, ROOT / "CONTRIBUTING.md"]
MAX_README_LINES = 250

#: The one substitution the quick-start test makes: size flag -> tiny value.
TINY = {"--n-train": "16", "--n-valid": "8", "--n-test": "8", "--epochs": "1"}

# Backticked paths that name files of the repository (not outputs of a command, not placeholders).
_REPO_PREFIXES = ("docs/", "scripts/", "examples/", "benchmarks/", "tests/", "fsrf/", "kernels/", "csrc/",
                  ".ci/")


def _section(text: str, heading: str) -> str:
    """The body of the level-2 section ``## heading`` (its ### subsections included)."""
    m = re.search(rf"^## {re.escape(heading)}\s*$(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert m, f"README.md has no '## {heading}' section"
    return m.group(1)


def _bash_lines(section: str) -> list[list[str]]:
    """The commands of the section's ```bash blocks, split as a shell would (comments dropped)."""
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
        for line in block.splitlines():
            argv = shlex.split(line, comments=True)
            if argv:
                cmds.append(argv)
    return cmds


def _shrunk(argv: list[str]) -> list[str]:
    out = list(argv)
    for i, arg in enumerate(out[:-1]):
        if arg in TINY:
            out[i + 1] = TINY[arg]
    return out


def _quick_start() -> list[list[str]]:
    return _bash_lines(_section(README.read_text(encoding="utf-8"), "Quick start"))


def test_quick_start_is_fsrf_commands_with_sizes():
    """Every quick-start line is an `fsrf` command (so it can run here), and the commands that
    generate data or train state their size, so that the substitution above keeps the test cheap."""
    cmds = _quick_start()
    assert len(cmds) >= 3, cmds
    for argv in cmds:
        assert argv[0] == "fsrf", f"quick-start line is not an fsrf command: {shlex.join(argv)}"
        if argv[1] == "make-synthetic":
            assert {"--n-train", "--n-valid", "--n-test"} <= set(argv), shlex.join(argv)
        if argv[1] in ("train", "compare"):
            assert "--epochs" in argv, shlex.join(argv)
    assert any(a[1] == "train" for a in cmds) and any(a[1] == "evaluate" for a in cmds)


@pytest.mark.slow
def test_quick_start_commands_run(tmp_path, monkeypatch, capsys):
    from fsrf import cli

    monkeypatch.chdir(tmp_path)
    for argv in _quick_start():
        argv = _shrunk(argv)
        assert cli.main(argv[1:]) == 0, f"{shlex.join(argv)} failed:\n{capsys.readouterr().err}"
        if "--out" in argv:  # what the command says it writes is there for the next one to read
            out = tmp_path / argv[argv.index("--out") + 1]
            assert out.exists(), f"{shlex.join(argv)} wrote no {out}"
    assert (tmp_path / "results/fsrf/results.json").is_file()
    assert (tmp_path / "predictions/predictions.csv").is_file()


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return {_slug(h) for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}


def _prose(path: Path) -> str:
    """The file without its fenced code blocks and inline code (links there are not links)."""
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.S)
    return re.sub(r"`[^`\n]*`", "", text)


@pytest.mark.parametrize("doc", CHECKED_DOCS, ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    targets = re.findall(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", _prose(doc))
    assert targets, f"{doc.name} has no links"
    broken = []
    for target in targets:
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto: ...: not a file of the repo
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists() or ROOT not in (dest, *dest.parents):
            broken.append(f"{target} (no such file in the repository)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no heading with that anchor)")
    assert not broken, f"{doc.name}: broken links: {broken}"


@pytest.mark.parametrize("doc", CHECKED_DOCS, ids=lambda p: p.name)
def test_named_repository_paths_exist(doc):
    """A path in backticks that names a file of the repository (`scripts/x.py`, `docs/...`) exists,
    so that a move elsewhere in the tree cannot leave the docs pointing at nothing."""
    text = re.sub(r"```.*?```", "", doc.read_text(encoding="utf-8"), flags=re.S)
    missing = []
    for token in re.findall(r"`([^`\s]+)`", text):
        if token.startswith(_REPO_PREFIXES) and not re.search(r"[<>*{}$]", token):
            if not (ROOT / token).exists():
                missing.append(token)
    assert not missing, f"{doc.name} names paths that do not exist: {missing}"


def test_readme_is_short():
    n = len(README.read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; keep it within {MAX_README_LINES} for users " \
                                  "and move developer material to CONTRIBUTING.md"


def test_install_section_is_what_ci_runs():
    """.ci/run installs "exactly as README.md's 'Install (CPU)' section says": the same two pip lines."""
    section = _section(README.read_text(encoding="utf-8"), "Install (CPU)")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    for line in ("pip install torch==2.13.0", 'pip install --no-build-isolation ".[test]"'):
        assert line in section, f"README's Install (CPU) section lacks `{line}`"
        assert line in ci.replace("pip install -q ", "pip install "), f".ci/run lacks `{line}`"
    assert "pytest -q -p no:cacheprovider" in section and "pytest -q -p no:cacheprovider" in ci
