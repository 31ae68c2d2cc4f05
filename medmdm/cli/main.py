"""``medmdm`` command line: ``main(argv) -> int``, testable in-process."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from medmdm import __version__, explainers


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``medmdm`` command."""
    parser = argparse.ArgumentParser(prog="medmdm", description="Explain medical-image classifiers.")
    parser.add_argument("--version", action="version", version=f"medmdm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("methods", help="list the explanation methods")
    return parser


def list_methods() -> int:
    """Print each registered method with its one-line description."""
    names = explainers.available()
    width = max(len(name) for name in names)
    for name in names:
        print(f"{name:<{width}}  {explainers.describe(name)}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` and return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "methods":
        return list_methods()
    parser.print_help()
    return 2


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())
