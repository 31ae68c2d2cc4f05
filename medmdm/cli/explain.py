"""``medmdm explain``: explain one study and write the outputs."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from medmdm.cli.common import (
    DEVICE_HELP,
    FORMATS_HELP,
    add_bundle_arguments,
    add_method_arguments,
    add_pacs_arguments,
)


def add_explain_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``explain`` subcommand."""
    explain = subparsers.add_parser("explain", help="explain a study and write the outputs")
    explain.add_argument(
        "study",
        nargs="+",
        help="DICOM file, DICOM series folder, NIfTI file or PNG/JPEG/TIFF image; several co-registered "
        "files are the channels of one study, in the order given (t1.nii.gz t1c.nii.gz t2.nii.gz ...); "
        "or a PACS: dicomweb://host:port/path or dicom://AET@host:port with --study UID (docs/pacs.md)",
    )
    add_bundle_arguments(explain, "the demo bundle")
    explain.add_argument("--method", default="hdm", help="explanation method (see `medmdm methods`)")
    explain.add_argument(
        "--target",
        help="K or class:K, prototype:K, region:K, detection:K (default: the predicted class)",
    )
    explain.add_argument(
        "--region-mask",
        metavar="FILE",
        help="with --target region:K: explain this region (a mask on the study's grid, nonzero inside) "
        "instead of the one the bundle predicts",
    )
    explain.add_argument("--out", metavar="DIR", help="output folder (default: ./medmdm-<study name>)")
    explain.add_argument("--format", dest="formats", metavar="LIST", help=FORMATS_HELP)
    explain.add_argument("--device", default="auto", help=DEVICE_HELP)
    add_method_arguments(explain)
    explain.add_argument("--series", metavar="UID", help="the series to read from a folder holding several")
    add_pacs_arguments(explain, reading=True)
    explain.add_argument("--overwrite", action="store_true", help="replace a non-empty output folder")
    explain.add_argument(
        "--redact-paths", action="store_true", help="leave the study's path out of report.json"
    )
    explain.add_argument("--quiet", action="store_true", help="nothing on success; one line on error")
    explain.add_argument("--debug", action="store_true", help="print tracebacks")
    return explain


def run_explain(args: argparse.Namespace) -> int:
    """The ``explain`` command."""
    from medmdm.cli.common import UsageError, sent_exit_code, settings_from_args
    from medmdm.cli.progress import ProgressBar
    from medmdm.pacs import is_pacs_url
    from medmdm.pipeline import explain_study

    settings = settings_from_args(args, device=args.device)
    paths = [Path(p) for p in args.study]
    name = paths[0].name.split(".")[0] or "study"
    if is_pacs_url(args.study[0]):  # a study in a PACS (medmdm.pacs), named by its UID
        paths, name = args.study[:1], args.study_uid or "study"
    elif args.study_uid:
        raise UsageError("--study names a study in a PACS: give its URL (dicomweb://... or dicom://...)")
    out = Path(args.out) if args.out else Path.cwd() / f"medmdm-{name}"
    with ProgressBar(enabled=not args.quiet) as bar:
        result = explain_study(
            paths[0] if len(paths) == 1 else paths,
            args.bundle,
            out,
            settings=settings,
            bundle_config=args.bundle_config,
            allow_random_weights=args.allow_random_weights,
            region_mask=args.region_mask,
            series_uid=args.series,
            study_uid=args.study_uid,
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
    return sent_exit_code(result.sent, args.quiet)
