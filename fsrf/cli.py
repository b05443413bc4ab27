"""The ``fsrf`` command line (also ``python -m fsrf``).

Subcommands register themselves in :data:`COMMANDS`; each gets an ``argparse`` sub-parser and a
handler. Expected failures (bad arguments, missing files, malformed data) print one line and exit
with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Callable

__all__ = ["main", "build_parser", "COMMANDS"]


def _cmd_info(args: argparse.Namespace) -> int:
    from fsrf._info import format_info, info

    d = info()
    print(json.dumps(d, indent=2, default=str) if args.json else format_info(d))
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="versions, compiled backends and the backend each op uses")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=_cmd_info)


# name -> function adding the sub-parser; later modules append to this list.
COMMANDS: list[Callable] = [_add_info]


def _register_optional_commands() -> None:
    try:
        importlib.import_module("fsrf.commands")  # adds demo / train / evaluate / ...
    except ModuleNotFoundError as exc:
        if exc.name != "fsrf.commands":
            raise


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``fsrf <command>: error: ...``, exit status 2)."""

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fsrf`` command."""
    _register_optional_commands()
    parser = _Parser(prog="fsrf", description="FSRF for incomplete multimodal sentiment analysis")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    seen = set()
    for add in COMMANDS:
        if add not in seen:
            seen.add(add)
            add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("fsrf: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError, KeyError) as exc:
        if args.debug:
            raise
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"fsrf {args.command}: error: {msg}", file=sys.stderr)
        return 2
