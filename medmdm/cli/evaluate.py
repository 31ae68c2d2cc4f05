"""``medmdm evaluate``: explain a folder of cases with lesion masks, score every map, summarise.

Writes ``cases.csv`` (one row per case and method: every metric, seconds and samples) and
``summary.json`` (per method and metric: mean, standard deviation and count) into ``--out``, and
prints a table of the main metrics.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from medmdm import __version__

OUTPUT_CSV = "cases.csv"
OUTPUT_JSON = "summary.json"
TABLE_COLUMNS = (
    "pointing_game",
    "energy_pointing_game",
    "dice_p95",
    "deletion_auc",
    "insertion_auc",
    "average_drop",
    "seconds",
    "samples",
)
GRIDS = {
    "localisation": "the study's grid (source), the map mapped back through the affines, against the mask",
    "faithfulness": "the network input (the model's own grid, after the bundle's preprocessing)",
}


def add_evaluate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``evaluate`` subcommand to ``medmdm``'s subparsers and return its parser."""
    evaluate = subparsers.add_parser(
        "evaluate", help="explain cases with lesion masks and score the maps (CSV, JSON and a table)"
    )
    evaluate.add_argument(
        "cases",
        metavar="CASES",
        help="folder of studies, each with <study stem>_mask.nii.gz beside it, or a CSV manifest "
        "(study,mask[,target])",
    )
    evaluate.add_argument("--bundle", metavar="DIR", required=True, help="MONAI Bundle folder")
    evaluate.add_argument(
        "--methods", default="hdm", metavar="LIST", help="comma-separated methods (default: hdm)"
    )
    evaluate.add_argument("--out", metavar="DIR", required=True, help="output folder")
    evaluate.add_argument("--limit", type=int, metavar="N", help="evaluate the first N cases only")
    evaluate.add_argument("--steps", type=int, metavar="N", help="step budget of the methods that have one")
    evaluate.add_argument("--seed", type=int, metavar="N", help="random seed of the methods")
    evaluate.add_argument(
        "--target",
        type=int,
        metavar="K",
        help="class index to explain where the manifest gives none (default: the predicted class)",
    )
    evaluate.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    evaluate.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    evaluate.add_argument("--quiet", action="store_true", help="print nothing but errors")
    evaluate.add_argument("--debug", action="store_true", help="print tracebacks")
    return evaluate


def run_evaluate(args: argparse.Namespace) -> int:
    """The ``evaluate`` command; returns the exit code (errors raise, for ``main`` to report)."""
    from medmdm.bundle import load_bundle
    from medmdm.errors import OptionError
    from medmdm.evaluation import (
        DIRECTION,
        METRICS,
        evaluate_cases,
        find_cases,
        format_table,
        summarise,
        write_rows,
    )
    from medmdm.pipeline import check_out_dir, resolve_device
    from medmdm.writers import write_report

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise OptionError("--methods must name at least one method (see `medmdm methods`)")
    if args.limit is not None and args.limit < 1:
        raise OptionError(f"--limit must be at least 1, got {args.limit}")
    if args.target is not None and args.target < 0:
        raise OptionError(f"--target must be a class index >= 0, got {args.target}")
    out = check_out_dir(args.out, args.overwrite)
    options: dict[str, Any] = {"device": resolve_device(args.device)}
    if args.seed is not None:
        options["seed"] = args.seed
    if args.steps is not None:
        options["steps"] = args.steps

    cases = find_cases(args.cases)[: args.limit]
    cases = [replace(case, target=args.target) if case.target is None else case for case in cases]
    bundle = load_bundle(args.bundle)
    log = None if args.quiet else _print_to_stderr
    rows = evaluate_cases(cases, bundle, methods, options=options, log=log)

    columns = ["case", "method", "target", "lesions", *METRICS]
    summary = summarise(rows, METRICS)
    without = sorted({row["case"] for row in rows if row["lesions"] == 0})
    notes = []
    if without:
        notes.append(
            f"{len(without)} case(s) without a lesion (an empty or no mask): localisation metrics "
            f"skipped (NaN) for {', '.join(without)}"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_rows(rows, out / OUTPUT_CSV, columns)
    report = {
        "medmdm_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cases_source": str(args.cases),
        "cases": len(cases),
        "cases_without_lesion": without,
        "bundle": bundle.summary(),
        "methods": methods,
        "options": {key: str(value) if key == "device" else value for key, value in options.items()},
        "grids": GRIDS,
        "directions": dict(DIRECTION),
        "summary": summary,
        "notes": notes,
    }
    write_report(report, out / OUTPUT_JSON)
    if not args.quiet:
        print(format_table(summary, TABLE_COLUMNS))
        for note in notes:
            print(f"note: {note}")
        print(f"wrote {OUTPUT_CSV} ({len(rows)} rows) and {OUTPUT_JSON} to {out}")
    return 0


def _print_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
