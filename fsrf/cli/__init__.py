"""The ``fsrf`` command line (also ``python -m fsrf``).

:func:`build_parser` asks each command module, in a fixed order, to add its sub-parsers
(``add_parser(subparsers)``, as accelerate and pip do): nothing registers itself on import.
Every module only parses arguments and calls the library (:mod:`fsrf.training`,
:mod:`fsrf.data`); the logic lives there. The options shared by the commands that load an MMSA
file (:data:`DATA_COMMANDS`) are added here, once, by :func:`fsrf.cli._options.add_data_options`.

Expected failures print one line, ``fsrf <command>: error: <what>``, and exit with status 2:
bad arguments, missing or malformed files, data too small to train on, a damaged checkpoint, an
output folder in use by another run, a diverged training, and every ``OSError`` (full disk,
permissions, read-only file system, a folder removed under the run), which names the path and
the OS reason, also where a library raised an error of its own over the disk's (``torch.save``;
see :mod:`fsrf.runtime.io`). ``--debug`` shows
the traceback instead. Warnings are printed as one line too, ``fsrf <command>: warning: ...``;
``--strict`` turns the loader's warning about lengths beyond the padded length into an error.
"""

from __future__ import annotations

import argparse
import sys
import warnings

from fsrf.cli import compare, data, demo, evaluate, export, info, predict, train
from fsrf.cli._options import Parser, add_data_options

__all__ = ["main", "build_parser", "COMMAND_MODULES", "DATA_COMMANDS"]

#: The command modules, in the order ``fsrf --help`` lists them.
COMMAND_MODULES = (info, data, train, evaluate, predict, compare, export, demo)

#: The commands that load an MMSA feature file and so take the data options (``--strict``).
DATA_COMMANDS = ("describe", "train", "evaluate", "compare")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fsrf`` command."""
    parser = Parser(prog="fsrf", description="FSRF for incomplete multimodal sentiment analysis")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for module in COMMAND_MODULES:
        module.add_parser(sub)
    for name in DATA_COMMANDS:
        add_data_options(sub.choices[name])
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    prefix = f"fsrf {args.command}"

    def show(message, category, filename, lineno, file=None, line=None):
        print(f"{prefix}: warning: {message}", file=sys.stderr if file is None else file)

    with warnings.catch_warnings():
        warnings.showwarning = show
        if getattr(args, "strict", False):
            from fsrf.data.mmsa import MMSALengthWarning

            warnings.simplefilter("error", MMSALengthWarning)
        try:
            return int(args.func(args) or 0)
        except KeyboardInterrupt:
            print(f"{prefix}: interrupted", file=sys.stderr)
            return 130
        except (ValueError, TypeError, KeyError, FloatingPointError, OSError, Warning) as exc:
            if args.debug:
                raise
            print(f"{prefix}: error: {_one_line(exc)}", file=sys.stderr)
            return 2


def _one_line(exc: BaseException) -> str:
    from fsrf.runtime.io import describe_os_error

    if isinstance(exc, OSError):
        msg = describe_os_error(exc)
    elif isinstance(exc, KeyError) and exc.args:
        msg = str(exc.args[0])
    elif isinstance(exc, Warning):  # a warning that --strict made an error
        msg = str(getattr(exc, "refusal", None) or exc)
    else:
        msg = str(exc) or type(exc).__name__
    # one line even when a library message spans several
    return " ".join(part.strip() for part in msg.splitlines() if part.strip())
