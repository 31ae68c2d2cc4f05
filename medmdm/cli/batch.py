"""``medmdm batch``: explain every study of a folder or manifest, one output folder per study, resumably.

Exit codes: 0 when every study is ok or skipped, 1 when some failed (the summary lists them), 2 bad input or
usage (nothing run).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from medmdm.cli.common import FORMATS_HELP, add_bundle_arguments, add_method_arguments, add_pacs_arguments


def add_batch_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``batch`` subcommand to the ``medmdm`` parser's subparsers."""
    batch = subparsers.add_parser("batch", help="explain every study of a folder or manifest, resumably")
    batch.add_argument(
        "input",
        help="folder of studies (searched recursively), a DICOM or NIfTI file, or a CSV/JSONL manifest",
    )
    batch.add_argument("--out", metavar="DIR", required=True, help="output folder: one folder per study")
    add_bundle_arguments(batch, "the demo bundles")
    batch.add_argument("--method", default="hdm", help="explanation method (see `medmdm methods`)")
    batch.add_argument(
        "--target",
        help="K or class:K (as for explain) where the manifest gives none (default: the predicted class)",
    )
    batch.add_argument("--format", dest="formats", metavar="LIST", help=FORMATS_HELP)
    add_method_arguments(batch)
    batch.add_argument("--workers", type=int, help="number of workers (default: one per device)")
    batch.add_argument(
        "--devices",
        default="auto",
        help="auto (every GPU, else the CPU), cpu, or a list such as cuda:0,cuda:1 (default: auto)",
    )
    batch.add_argument(
        "--studies-per-call",
        type=_studies_per_call,
        default=None,
        metavar="N|auto",
        help="studies of one network input shape explained in one explainer call, each map as if alone "
        "(default: auto, 4 on CUDA and 1 on the CPU)",
    )
    batch.add_argument("--engine", choices=("local", "ray"), default="local", help="where workers run")
    batch.add_argument(
        "--ray-address", metavar="ADDR", help="Ray cluster to join (default: a local instance)"
    )
    batch.add_argument("--retries", type=int, default=2, help="Ray: retries of a study whose actor died")
    batch.add_argument(
        "--shard",
        metavar="K/N",
        help="explain shard K (0-based) of N only; default under torchrun: RANK/WORLD_SIZE on GPU LOCAL_RANK",
    )
    batch.add_argument(
        "--prefer",
        choices=("dicom", "nifti", "both"),
        default="dicom",
        help="a DICOM study and a NIfTI file of its name in one folder: explain which (default: dicom)",
    )
    batch.add_argument("--resume", action="store_true", help="skip studies whose outputs are complete")
    batch.add_argument("--overwrite", action="store_true", help="replace existing study folders")
    batch.add_argument(
        "--redact-paths", action="store_true", help="leave the studies' paths out of their report.json"
    )
    batch.add_argument("--fail-fast", action="store_true", help="stop at the first failed study")
    add_pacs_arguments(batch, reading=False)
    batch.add_argument("--quiet", action="store_true", help="no progress and no summary")
    batch.add_argument("--debug", action="store_true", help="print tracebacks")
    return batch


def _studies_per_call(text: str) -> int | None:
    """``--studies-per-call``: ``auto`` (None) or a whole number of at least 1."""
    if text.strip().lower() == "auto":
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be auto or a whole number of at least 1, got {text!r}")
    return int(text)


def run_batch(args: argparse.Namespace) -> int:
    """The ``batch`` command: 0 all ok or skipped, 1 some failed."""
    from medmdm.batch import BatchSettings, explain_batch
    from medmdm.batch.shard import Shard, local_rank_device, wait_for_every_rank
    from medmdm.cli.common import settings_from_args

    batch = BatchSettings(
        out_dir=Path(args.out),
        settings=settings_from_args(args),
        bundle=Path(args.bundle) if args.bundle else None,
        bundle_config=tuple(args.bundle_config) if args.bundle_config else None,
        allow_random_weights=args.allow_random_weights,
        studies_per_call=args.studies_per_call,
    )
    shard = Shard.parse(args.shard) if args.shard else Shard.from_environment()
    devices = args.devices
    if args.shard is None and shard is not None and devices == "auto":
        devices = local_rank_device() or devices
    summary = explain_batch(
        args.input,
        batch,
        engine=args.engine,
        devices=devices,
        workers=args.workers,
        ray_address=args.ray_address,
        retries=args.retries,
        resume=args.resume,
        overwrite=args.overwrite,
        fail_fast=args.fail_fast,
        progress=not args.quiet,
        shard=shard,
        prefer=args.prefer,
    )
    if not args.quiet:
        print("\n".join(summary.lines()), flush=True)
    if args.shard is None and shard is not None:
        wait_for_every_rank()
    return summary.exit_code
