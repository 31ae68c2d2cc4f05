"""What the ``medmdm`` subcommands share: the parser class, the settings flags and how they become a
:class:`medmdm.settings.Settings`.

Nothing heavy is imported here: ``medmdm --help`` and ``--version`` must not load torch or MONAI.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from medmdm.errors import MedmdmError, OptionError

if TYPE_CHECKING:
    from medmdm.pacs import SendReport
    from medmdm.settings import Settings

COMMON_FLAGS = ("seed", "steps", "compile")
FORMATS_HELP = (
    "comma-separated: nifti,dicom-pm,dicom-pr,dicom-sc,dicom-seg,png,html,json "
    "(default: all that fit the study but dicom-seg and html)"
)
DEVICE_HELP = "auto, cpu, cuda or cuda:N (default: auto)"


class UsageError(MedmdmError):
    """A command-line usage error (argparse's own errors)."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are a :class:`UsageError` (one line and exit code 2 in ``main``)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def add_method_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config``, ``--seed``, ``--steps`` and ``--compile``: the method's options."""
    parser.add_argument("--config", metavar="FILE", help="YAML or JSON file of method options")
    parser.add_argument("--seed", type=int, help="random seed of the method")
    parser.add_argument("--steps", type=int, help="optimisation steps per stage (fewer: faster, coarser)")
    parser.add_argument(
        "--compile",
        nargs="?",
        const=True,
        metavar="MODE",
        help="pass the model through torch.compile, in MODE default, reduce-overhead (CUDA graphs on CUDA) "
        "or max-autotune; the eager model, with a warning, where compiling fails",
    )


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
    parser.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="run a bundle that has no weights with random ones (a smoke test; the report says so)",
    )


def add_pacs_arguments(parser: argparse.ArgumentParser, *, reading: bool) -> None:
    """``--send-to URL`` and, when ``reading`` a study from a PACS, ``--study UID``; credentials are never
    arguments (:mod:`medmdm.pacs.location`)."""
    if reading:
        parser.add_argument(
            "--study", dest="study_uid", metavar="UID", help="the StudyInstanceUID to read from a PACS URL"
        )
    parser.add_argument(
        "--send-to",
        metavar="URL",
        help="send the DICOM outputs to a PACS: dicomweb://host:port/path (STOW-RS) or dicom://AET@host:port "
        "(C-STORE); credentials from MEDMDM_PACS_USER/MEDMDM_PACS_PASSWORD or MEDMDM_PACS_TOKEN",
    )


def sent_exit_code(sent: SendReport | None, quiet: bool) -> int:
    """Say what the PACS accepted (standard output), or why sending failed (one line on standard error):
    0 when everything sent was accepted, 1 when not (the local outputs stay)."""
    if sent is None:
        return 0
    if not sent.ok:
        print(f"medmdm: error: {sent.line()}", file=sys.stderr)
        return 1
    if not quiet:
        print(sent.line())
    return 0


def method_options(args: argparse.Namespace) -> dict[str, Any]:
    """The method options of ``--config``, ``--seed``, ``--steps`` and ``--compile`` (the flags win)."""
    from medmdm.settings import read_config

    return {**(read_config(args.config) if args.config else {}), **common_flags(args)}


def common_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The options given by ``--seed``, ``--steps`` and ``--compile``: flags every method command has,
    whichever method."""
    return {name: value for name in COMMON_FLAGS if (value := getattr(args, name)) is not None}


def settings_from_args(args: argparse.Namespace, device: str = "auto") -> Settings:
    """The :class:`~medmdm.settings.Settings` of ``--method``, the options flags, ``--format`` and
    ``--target``.

    ``--seed`` and ``--steps`` go to the method when it has them, and are set aside with a note in the
    report when it has not (one command line can then switch methods); an option of ``--config`` that the
    method does not have is an error.
    """
    from medmdm.explainers import accepted_options
    from medmdm.settings import Settings, parse_target, read_config

    try:
        target = parse_target(args.target)
    except OptionError as error:
        raise OptionError(f"--target: {error}") from None
    flags = common_flags(args)
    taken = accepted_options(args.method, flags)
    notes = tuple(
        f"--{name} not used: {args.method} has no {name} option" for name in flags if name not in taken
    )
    return Settings(
        method=args.method,
        options={**(read_config(args.config) if args.config else {}), **taken},
        formats=args.formats,
        device=device,
        target=target,
        redact_paths=args.redact_paths,
        notes=notes,
        send_to=args.send_to,
    )
