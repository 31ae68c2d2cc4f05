"""``medmdm evaluate``: explain a folder of cases with lesion masks, score every map, summarise.

Writes ``cases.csv`` (one row per case and method, written as each is scored: status, the one-line error of
a case that failed, every metric, seconds and samples) and ``summary.json`` (per method and metric: mean,
standard deviation and count over the cases that ran; the failed cases with their errors) into ``--out``,
and prints a table of the main metrics. A case that fails does not stop the others; the exit code is then 1.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any

from medmdm import __version__
from medmdm.cli.common import DEVICE_HELP, add_bundle_arguments, add_method_arguments

OUTPUT_CSV = "cases.csv"
OUTPUT_JSON = "summary.json"
ROW_COLUMNS = ("case", "method", "status", "error", "target", "lesions")
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
    add_bundle_arguments(evaluate, required=True)
    evaluate.add_argument(
        "--methods", default="hdm", metavar="LIST", help="comma-separated methods (default: hdm)"
    )
    evaluate.add_argument("--out", metavar="DIR", required=True, help="output folder")
    evaluate.add_argument("--limit", type=int, metavar="N", help="evaluate the first N cases only")
    add_method_arguments(evaluate)
    evaluate.add_argument(
        "--target",
        type=int,
        metavar="K",
        help="class index to explain where the manifest gives none (default: the predicted class)",
    )
    evaluate.add_argument("--device", default="auto", help=DEVICE_HELP)
    evaluate.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder")
    evaluate.add_argument("--quiet", action="store_true", help="print nothing but errors")
    evaluate.add_argument("--debug", action="store_true", help="print tracebacks")
    return evaluate


def run_evaluate(args: argparse.Namespace) -> int:
    """The ``evaluate`` command: 0 when every case ran, 1 when some failed (errors raise, for ``main``)."""
    from medmdm.bundle import load_bundle
    from medmdm.cli.common import method_options
    from medmdm.devices import resolve_device
    from medmdm.errors import OptionError
    from medmdm.evaluation import (
        DIRECTION,
        METRICS,
        RowLog,
        find_cases,
        format_table,
        iter_evaluation,
        summarise,
    )
    from medmdm.pipeline import check_out_dir
    from medmdm.settings import settings_for_methods
    from medmdm.writers import write_report

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise OptionError("--methods must name at least one method (see `medmdm methods`)")
    if args.limit is not None and args.limit < 1:
        raise OptionError(f"--limit must be at least 1, got {args.limit}")
    if args.target is not None and args.target < 0:
        raise OptionError(f"--target must be a class index >= 0, got {args.target}")
    options = method_options(args)
    settings = settings_for_methods(methods, options, device=args.device)
    out = check_out_dir(args.out, args.overwrite)
    cases = find_cases(args.cases)[: args.limit]
    cases = [replace(case, target=args.target) if case.target is None else case for case in cases]
    bundle = load_bundle(
        args.bundle, config_files=args.bundle_config, allow_random_weights=args.allow_random_weights
    )
    log = None if args.quiet else _print_to_stderr

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    with RowLog(out / OUTPUT_CSV, [*ROW_COLUMNS, *METRICS]) as csv_rows:
        for row in iter_evaluation(cases, bundle, settings, log=log):
            csv_rows.write(row)
            rows.append(row)
    ran = [row for row in rows if row["status"] == "ok"]
    failed = [{k: row[k] for k in ("case", "method", "error")} for row in rows if row["status"] == "failed"]
    summary = summarise(ran, METRICS)
    without = sorted({row["case"] for row in ran if row["lesions"] == 0})
    notes = []
    if without:
        notes.append(
            f"{len(without)} case(s) without a lesion (an empty or no mask): localisation metrics "
            f"skipped (NaN) for {', '.join(without)}"
        )
    if failed:
        notes.append(f"{len(failed)} run(s) of a case and a method failed; see 'failed' and {OUTPUT_CSV}")
    report = {
        "medmdm_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cases_source": str(args.cases),
        "cases": len(cases),
        "cases_without_lesion": without,
        "failed": failed,
        "bundle": bundle.summary(),
        "methods": methods,
        "options": {**options, "device": str(resolve_device(args.device))},
        "settings": [s.summary() for s in settings],
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
    return 1 if failed else 0


def _print_to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
