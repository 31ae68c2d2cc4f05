"""``medmdm explain``: explain one study and write the outputs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from medmdm.cli.common import DEVICE_HELP, FORMATS_HELP, add_bundle_arguments, add_method_arguments


def add_explain_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``explain`` subcommand."""
    explain = subparsers.add_parser("explain", help="explain a study and write the outputs")
    explain.add_argument("study", help="DICOM file, DICOM series folder or NIfTI file")
    add_bundle_arguments(explain, "the demo bundle")
    explain.add_argument("--method", default="hdm", help="explanation method (see `medmdm methods`)")
    explain.add_argument(
        "--target", help="K or class:K, prototype:K, region:K (default: the predicted class)"
    )
    explain.add_argument("--out", metavar="DIR", help="output folder (default: ./medmdm-<study name>)")
    explain.add_argument("--format", dest="formats", metavar="LIST", help=FORMATS_HELP)
    explain.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_method_arguments(explain)
    explain.add_argument("--series", metavar="UID", help="the series to read from a folder holding several")
    explain.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    explain.add_argument(
        "--redact-paths", action="store_true", help="leave the study's path out of report.json"
    )
    explain.add_argument("--quiet", action="store_true", help="nothing on success; one line on error")
    explain.add_argument("--debug", action="store_true", help="print tracebacks")
    return explain


def run_explain(args: argparse.Namespace) -> int:
    """The ``explain`` command."""
    from medmdm.cli.common import settings_from_args
    from medmdm.cli.progress import ProgressBar
    from medmdm.pipeline import explain_study

    settings = settings_from_args(args, device=args.device)
    study = Path(args.study)
    out = Path(args.out) if args.out else Path.cwd() / f"medmdm-{study.name.split('.')[0] or 'study'}"
    with ProgressBar(enabled=not args.quiet) as bar:
        result = explain_study(
            study,
            args.bundle,
            out,
            settings=settings,
            bundle_config=args.bundle_config,
            series_uid=args.series,
            overwrite=args.overwrite,
            progress=bar,
        )
    if not args.quiet:
        for skipped in result.skipped:
            print(f"medmdm: warning: {skipped}", file=sys.stderr)
        target, explanation = result.target, result.explanation
        name = f" ({target.name})" if target.name else ""
        print(
            f"{result.bundle.name}: {target.kind} {target.index}{name}, "
            f"score {float(explanation.score_original[0]):.4g}; "
            f"{explanation.method} kept {float(explanation.score_masked[0]):.4g} with the map; "
            f"{explanation.samples} samples in {result.timings['total']:.1f} s"
        )
        print(f"wrote {len(result.outputs)} files to {result.out_dir}")
    return 0
