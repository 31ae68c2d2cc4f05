"""``medmdm`` command line: ``main(argv) -> int``, testable in-process.

Exit codes: 0 success; 2 bad input or usage (one line ``medmdm: error: ...`` on standard error); 1 an
internal error, or (``batch``, ``evaluate``) some studies failed. A traceback is printed only with
``--debug``. Subcommands import torch and MONAI only when they run, so ``--help`` and ``--version`` are quick.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Sequence

from medmdm import __version__
from medmdm.cli.batch import add_batch_parser, run_batch
from medmdm.cli.common import Parser
from medmdm.cli.evaluate import add_evaluate_parser, run_evaluate
from medmdm.cli.explain import add_explain_parser, run_explain
from medmdm.cli.info import add_info_parsers, run_info, run_methods
from medmdm.errors import MedmdmError, one_line, own_warning

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "methods": run_methods,
    "info": run_info,
    "explain": run_explain,
    "batch": run_batch,
    "evaluate": run_evaluate,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``medmdm`` command."""
    parser = Parser(prog="medmdm", description="Explain medical-image models with dynamic masks.")
    parser.add_argument("--version", action="version", version=f"medmdm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    add_info_parsers(commands)
    add_explain_parser(commands)
    add_batch_parser(commands)
    add_evaluate_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            code = COMMANDS[args.command](args)
        if not getattr(args, "quiet", False):
            _show(caught, debug)
        return code
    except MedmdmError as error:
        if debug:
            traceback.print_exc()
        print(f"medmdm: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medmdm: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader of the output left (`medmdm methods | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except Exception as error:
        if debug:
            traceback.print_exc()
        print(f"medmdm: internal error: {one_line(error)} (rerun with --debug for details)", file=sys.stderr)
        return 1


def _show(caught: list[warnings.WarningMessage], debug: bool) -> None:
    """Print medmdm's own warnings of a run that succeeded, a line each; third-party notices (decoders,
    deprecations) only with ``--debug``."""
    shown: set[str] = set()
    for record in caught:
        text = " ".join(str(record.message).split())
        if (own_warning(record) or debug) and text not in shown:
            shown.add(text)
            print(f"medmdm: warning: {text}", file=sys.stderr)


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())
