"""What the ``medmdm`` subcommands share: the parser class, the settings flags and how they become a
:class:`medmdm.settings.Settings`.

Nothing heavy is imported here: ``medmdm --help`` and ``--version`` must not load torch or MONAI.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from medmdm.errors import MedmdmError, OptionError

if TYPE_CHECKING:
    from medmdm.settings import Settings

FORMATS_HELP = "comma-separated: nifti,dicom-pm,dicom-sc,dicom-seg,png,json (default: all that fit the study)"
DEVICE_HELP = "auto, cpu, cuda or cuda:N (default: auto)"


class UsageError(MedmdmError):
    """A command-line usage error (argparse's own errors)."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are a :class:`UsageError` (one line and exit code 2 in ``main``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--seed`` and ``--steps``: the method's options."""
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file of method options")
    parser.add_argument("--seed", type=int, help="random seed of the method")
    parser.add_argument("--steps", type=int, help="optimisation steps per stage (fewer: faster, coarser)")


def add_bundle_arguments(parser: argparse.ArgumentParser, default: str = "", required: bool = False) -> None:
    """``--bundle`` (with the ``default`` said in its help, or ``required``) and ``--bundle-config``."""
    said = f" (default: {default})" if default else ""
    parser.add_argument("--bundle", metavar="DIR", required=required, help=f"MONAI Bundle folder{said}")
    parser.add_argument(
        "--bundle-config",
        metavar="FILE",
        action="append",
        help="bundle config file(s) to read instead of configs/inference.json",
    )


def method_options(args: argparse.Namespace) -> dict[str, Any]:
    """The method options of ``--config``, ``--seed`` and ``--steps`` (the flags win)."""
    from medmdm.settings import read_config

    options = read_config(args.config) if args.config else {}
    if args.seed is not None:
        options["seed"] = args.seed
    if args.steps is not None:
        options["steps"] = args.steps
    return options


def settings_from_args(args: argparse.Namespace, device: str = "auto") -> Settings:
    """The :class:`~medmdm.settings.Settings` of ``--method``, the options flags, ``--format`` and
    ``--target``."""
    from medmdm.settings import Settings, parse_target

    try:
        target = parse_target(args.target)
    except OptionError as error:
        raise OptionError(f"--target: {error}") from None
    return Settings(
        method=args.method, options=method_options(args), formats=args.formats, device=device, target=target
    )
