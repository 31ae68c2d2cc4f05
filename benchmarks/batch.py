"""Studies per hour of ``medmdm batch`` for 1, 2 and more workers, and studies per explainer call.

Writes phantom studies (chest radiographs as DICOM files, chest CTs as DICOM series, from
:mod:`medmdm.testing.internal.phantoms`) into a scratch folder, explains them with the demo bundles (the
2D bundle for the radiographs, the 3D bundle for the CTs) once per worker count and ``--studies-per-call``
value, and prints a table: seconds, studies per hour, and the speed-up over the first row. The demo
bundles are looked up as ``medmdm`` does (``$MEDMDM_DEMO_BUNDLES``, else ``sample_data/bundles``), else in
``build/demo_bundles`` (the quick ones ``workflows/train_demo_bundles.py --quick`` writes).
``--test-bundle`` uses the small lesion detector of the tests on NIfTI volumes instead (no demo bundle
needed).

Examples
--------
A 2-core CPU, with few steps::

    python benchmarks/batch.py --devices cpu --workers 1 2 --studies 2 --steps 20

A GPU machine (one worker per GPU, then more workers than GPUs)::

    python benchmarks/batch.py --devices auto --workers 1 2 4 --studies 16

One worker, one study per call against ``auto`` (4 on CUDA)::

    python benchmarks/batch.py --devices auto --workers 1 --studies-per-call 1 auto --studies 4
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

import torch

from medmdm.batch import BatchSettings, explain_batch
from medmdm.bundle.demo import DEMO_BUNDLES, DEMO_BUNDLES_ENV, demo_bundles_folder
from medmdm.settings import Settings
from medmdm.testing.internal.bundles import ct_with_ball, detector_bundle
from medmdm.testing.internal.dicom_studies import write_ct_series, write_radiograph_dicom
from medmdm.testing.internal.phantoms import ct_case, radiograph_case

REPOSITORY = Path(__file__).resolve().parents[1]
QUICK_BUNDLES = REPOSITORY / "build" / "demo_bundles"


def find_demo_bundles() -> Path | None:
    """The folder holding both demo bundles, or None."""
    for folder in (demo_bundles_folder(), QUICK_BUNDLES):
        if all((folder / name / "configs").is_dir() for name in DEMO_BUNDLES.values()):
            return folder
    return None


def write_studies(folder: Path, count: int, test_bundle: bool) -> None:
    """``count`` radiographs and ``count`` CT series (or ``count`` NIfTI volumes for the test bundle)."""
    folder.mkdir(parents=True)
    for seed in range(count):
        if test_bundle:
            ct_with_ball(folder / f"ct{seed}.nii.gz", centre=(10 + seed % 20, 11 + seed % 15, 3 + seed % 8))
            continue
        write_radiograph_dicom(radiograph_case(seed, size=(256, 256)), folder / f"cr{seed}.dcm", seed=seed)
        write_ct_series(ct_case(seed, size=(96, 96, 48)), folder / f"ct{seed}", seed=seed)


def run(args: argparse.Namespace) -> list[dict]:
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="medmdm-batch-benchmark-"))
    bundle = None
    if args.test_bundle:
        bundle = detector_bundle(scratch / "bundle")
        label = "test lesion detector (3D NIfTI)"
    else:
        demo = find_demo_bundles()
        if demo is None:
            raise SystemExit(
                "no demo bundles found: run workflows/train_demo_bundles.py, or use --test-bundle"
            )
        os.environ[DEMO_BUNDLES_ENV] = str(demo)  # the worker processes inherit it
        label = f"demo bundles in {demo}"
    studies = scratch / "studies"
    write_studies(studies, args.studies, args.test_bundle)
    options = {"seed": 0} | ({"steps": args.steps} if args.steps else {})
    rows = []
    for workers, per_call in itertools.product(args.workers, args.studies_per_call):
        settings = BatchSettings(
            out_dir=scratch / f"out-{workers}-{per_call}",
            settings=Settings(options=options, formats=("nifti",)),
            bundle=bundle,
            studies_per_call=None if per_call == "auto" else int(per_call),
        )
        started = time.perf_counter()
        summary = explain_batch(studies, settings, devices=args.devices, workers=workers, progress=False)
        seconds = time.perf_counter() - started
        rows.append(
            {
                "workers": workers,
                "studies_per_call": per_call,
                "devices": args.devices,
                "studies": summary.count("ok"),
                "failed": summary.count("failed"),
                "seconds": round(seconds, 1),
                "studies_per_hour": round(summary.count("ok") * 3600 / seconds, 1),
                "bundles": label,
                "steps": args.steps or "default",
                "cores": os.cpu_count(),
                "gpus": torch.cuda.device_count(),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| workers | studies per call | devices | studies | seconds | studies/hour | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    base = rows[0]["studies_per_hour"] or 1.0
    for row in rows:
        lines.append(
            f"| {row['workers']} | {row['studies_per_call']} | {row['devices']} | {row['studies']} | "
            f"{row['seconds']} | {row['studies_per_hour']} | {row['studies_per_hour'] / base:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to run")
    parser.add_argument(
        "--studies-per-call",
        nargs="+",
        default=["1"],
        help="values of --studies-per-call to run (N or auto; default: 1)",
    )
    parser.add_argument("--devices", default="auto", help="auto, cpu or cuda:0,cuda:1 (default: auto)")
    parser.add_argument("--studies", type=int, default=2, help="studies of each kind (default: 2)")
    parser.add_argument("--steps", type=int, help="optimisation steps per stage (default: the method's)")
    parser.add_argument("--test-bundle", action="store_true", help="the tests' lesion detector on NIfTI")
    parser.add_argument("--scratch", help="folder for the studies and outputs (default: a temporary one)")
    args = parser.parse_args()
    rows = run(args)
    print(f"\n{rows[0]['bundles']}, steps {rows[0]['steps']}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
