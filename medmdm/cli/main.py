"""``medmdm`` command line: ``main(argv) -> int``, testable in-process.

Exit codes: 0 success; 2 bad input or usage (one line ``medmdm: error: ...`` on standard error); 1 an
internal error. A traceback is printed only with ``--debug``.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from medmdm import __version__, explainers
from medmdm.cli.batch import add_batch_parser, run_batch
from medmdm.cli.evaluate import add_evaluate_parser, run_evaluate
from medmdm.errors import InputError, MedmdmError, OptionError

FORMATS_HELP = "comma-separated: nifti,dicom-pm,dicom-sc,dicom-seg,png,json (default: all that fit the study)"


class UsageError(MedmdmError):
    """A command-line usage error (argparse's own errors)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse prints usage and exits; we want one line and code 2
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``medmdm`` command."""
    parser = _Parser(prog="medmdm", description="Explain medical-image classifiers with dynamic masks.")
    parser.add_argument("--version", action="version", version=f"medmdm {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.add_parser("methods", help="list the explanation methods")

    info = commands.add_parser("info", help="say what would be read from a study, without running a model")
    info.add_argument("study", help="DICOM file, DICOM series folder or NIfTI file")
    info.add_argument("--series", metavar="UID", help="the series to read from a folder holding several")
    info.add_argument("--debug", action="store_true", help="print tracebacks")

    explain = commands.add_parser("explain", help="explain a study and write the outputs")
    explain.add_argument("study", help="DICOM file, DICOM series folder or NIfTI file")
    explain.add_argument("--bundle", metavar="DIR", help="MONAI Bundle folder (default: the demo bundle)")
    explain.add_argument(
        "--bundle-config",
        metavar="FILE",
        action="append",
        help="bundle config file(s) to read instead of configs/inference.json",
    )
    explain.add_argument("--method", default="hdm", help="explanation method (see `medmdm methods`)")
    explain.add_argument(
        "--target", help="K or class:K, prototype:K, region:K (default: the predicted class)"
    )
    explain.add_argument("--out", metavar="DIR", help="output folder (default: ./medmdm-<study name>)")
    explain.add_argument("--format", dest="formats", metavar="LIST", help=FORMATS_HELP)
    explain.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    explain.add_argument("--seed", type=int, help="random seed of the method")
    explain.add_argument("--config", metavar="FILE", help="YAML or JSON file of method options")
    explain.add_argument("--series", metavar="UID", help="the series to read from a folder holding several")
    explain.add_argument("--steps", type=int, help="optimisation steps per stage (fewer: faster, coarser)")
    explain.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    explain.add_argument("--quiet", action="store_true", help="no progress bar and no summary")
    explain.add_argument("--debug", action="store_true", help="print tracebacks")
    add_batch_parser(commands)
    add_evaluate_parser(commands)
    return parser


def list_methods() -> int:
    """Print each registered method with its one-line description."""
    names = explainers.available()
    width = max(len(name) for name in names)
    for name in names:
        print(f"{name:<{width}}  {explainers.describe(name)}")
    return 0


def show_info(study_path: str, series_uid: str | None) -> int:
    """Print the series of a folder, or the geometry of the study that would be read."""
    from medmdm.io import list_series, load_study

    path = Path(study_path)
    if path.is_dir() and series_uid is None:
        series = list_series(path)
        if len(series) > 1:
            print(f"{path}: {len(series)} series (pick one with --series UID)")
            for item in series:
                print(f"  {item.summary()}")
            return 0
    study = load_study(path, series_uid=series_uid)
    lines = {
        "path": str(study.path),
        "kind": study.kind,
        "series": study.series_uid or "-",
        "modality": study.modality or "-",
        "description": study.description or "-",
        "size": " x ".join(str(s) for s in study.size),
        "channels": str(study.image.shape[0]),
        "spacing (mm)": " x ".join(f"{s:.4g}" for s in study.spacing),
        "orientation": study.orientation,
    }
    width = max(len(k) for k in lines)
    for key, value in lines.items():
        print(f"{key:<{width}}  {value}")
    return 0


def read_options(config: str | None) -> dict[str, Any]:
    """Method options from a YAML or JSON file (a mapping of option names to values)."""
    if config is None:
        return {}
    path = Path(config)
    try:
        text = path.read_text()
    except OSError as error:
        raise InputError(f"{path}: cannot read the config file ({error.strerror})") from error
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path}: cannot parse the config file ({first})") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"{path}: the config file must hold a mapping of option names to values")
    return data


def parse_target(text: str | None) -> int | str | None:
    """``--target``: ``K`` or ``class:K``, ``prototype:K``, ``region:K``; None for the predicted class."""
    if text is None:
        return None
    from medmdm.explainers import as_target

    try:
        as_target(text)
    except MedmdmError as error:
        raise OptionError(f"--target: {error}") from None
    return int(text) if text.strip().lstrip("-").isdigit() else text


def run_explain(args: argparse.Namespace) -> int:
    """The ``explain`` command."""
    from medmdm.bundle import load_bundle
    from medmdm.cli.progress import ProgressBar
    from medmdm.pipeline import check_out_dir, explain_study

    options = read_options(args.config)
    if args.seed is not None:
        options["seed"] = args.seed
    if args.steps is not None:
        options["steps"] = args.steps
    target = parse_target(args.target)
    study = Path(args.study)
    out = Path(args.out) if args.out else Path.cwd() / f"medmdm-{study.name.split('.')[0] or 'study'}"
    check_out_dir(out, args.overwrite)
    bundle = load_bundle(args.bundle, config_files=args.bundle_config) if args.bundle else None
    with ProgressBar(enabled=not args.quiet) as bar:
        result = explain_study(
            study,
            bundle,
            out,
            method=args.method,
            target=target,
            options=options,
            formats=args.formats,
            device=args.device,
            series_uid=args.series,
            overwrite=args.overwrite,
            progress=bar,
        )
    if not args.quiet:
        report = result.report
        t = report["target"]
        name = f" ({t['name']})" if t["name"] else ""
        print(
            f"{report['model']['name']}: {t['kind']} {t['index']}{name}, score {t['score_original']:.4g}; "
            f"{report['method']['name']} kept {t['score_masked']:.4g} with the map; "
            f"{report['explanation']['samples']} samples in {report['timings']['total']:.1f} s"
        )
        print(f"wrote {len(report['outputs'])} files to {result.out_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` and return the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args = build_parser().parse_args(argv)
        if args.command == "methods":
            return list_methods()
        if args.command == "info":
            return show_info(args.study, args.series)
        if args.command == "explain":
            return run_explain(args)
        if args.command == "batch":
            return run_batch(args)
        if args.command == "evaluate":
            return run_evaluate(args)
        build_parser().print_help()
        return 2
    except MedmdmError as error:
        if debug:
            traceback.print_exc()
        print(f"medmdm: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("medmdm: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            traceback.print_exc()
        message = str(error).strip().splitlines()[0] if str(error).strip() else ""
        print(
            f"medmdm: internal error: {type(error).__name__}: {message} (rerun with --debug for details)",
            file=sys.stderr,
        )
        return 1


def entry_point() -> None:
    """Console-script entry point."""
    sys.exit(main())
