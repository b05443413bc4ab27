"""The ``fsrf`` command line (also ``python -m fsrf``).

:func:`build_parser` asks each command module, in a fixed order, to add its sub-parsers
(``add_parser(subparsers)``, as accelerate and pip do): nothing registers itself on import.
Every module only parses arguments and calls the library (:mod:`fsrf.training`,
:mod:`fsrf.data`); the logic lives there.

Expected failures (bad arguments, missing files, malformed data) print one line and exit with
status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from fsrf.cli import data, demo, evaluate, info, train
from fsrf.cli._options import Parser

__all__ = ["main", "build_parser", "COMMAND_MODULES"]

#: The command modules, in the order ``fsrf --help`` lists them.
COMMAND_MODULES = (info, data, train, evaluate, demo)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fsrf`` command."""
    parser = Parser(prog="fsrf", description="FSRF for incomplete multimodal sentiment analysis")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for module in COMMAND_MODULES:
        module.add_parser(sub)
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
