"""``medmdm methods`` and ``medmdm info``: what can be run, and what would be read, without running a
model."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_info_parsers(subparsers: Any) -> None:
    """Add the ``methods`` and ``info`` subcommands."""
    methods = subparsers.add_parser("methods", help="list the explanation methods, or one method's options")
    methods.add_argument("method", nargs="?", help="a method: list its options, defaults and ranges")
    methods.add_argument("--debug", action="store_true", help="print tracebacks")
    info = subparsers.add_parser("info", help="say what would be read from a study, without running a model")
    info.add_argument("study", help="DICOM file, DICOM series folder or NIfTI file")
    info.add_argument("--series", metavar="UID", help="the series to read from a folder holding several")
    info.add_argument("--debug", action="store_true", help="print tracebacks")


def run_methods(args: argparse.Namespace) -> int:
    """Print each registered method with its one-line description, or one method's options."""
    from medmdm import explainers

    if args.method is None:
        names = explainers.available()
        width = max(len(name) for name in names)
        for name in names:
            print(f"{name:<{width}}  {explainers.describe(name)}")
        return 0
    print(f"{args.method}: {explainers.describe(args.method)}")
    for line in explainers.options_class(args.method).describe():
        print(f"  {line}")
    return 0


def run_info(args: argparse.Namespace) -> int:
    """Print the series of a folder, or the geometry of the study that would be read."""
    from medmdm.io import list_series, load_study

    path = Path(args.study)
    if path.is_dir() and args.series is None:
        series = list_series(path)
        if len(series) > 1:
            print(f"{path}: {len(series)} series (pick one with --series UID)")
            for item in series:
                print(f"  {item.summary()}")
            return 0
    study = load_study(path, series_uid=args.series)
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
