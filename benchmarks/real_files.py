"""Explain every DICOM and NIfTI file that pydicom, pydicom-data and nibabel ship, as a user would, and
count what is explained and what is refused, by reason.

    python benchmarks/real_files.py                      # default settings (hdm), every file
    python benchmarks/real_files.py --method saliency    # quicker: the reading and writing paths only

Each file goes through ``medmdm explain FILE --out DIR --quiet`` in this process (the demo bundle of the
study's dimensionality), then the outputs are checked: exit 0 with a NIfTI overlay on the source grid, or
exit 2 with one line on standard error and nothing left behind. Anything else (exit 1, a traceback, a
left-over folder) is a failure, listed last. Prints a Markdown table for docs/real_files.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import sys
import tempfile
import time
import warnings
from collections import Counter
from pathlib import Path

import nibabel as nib
import numpy as np

from medmdm.cli.main import main
from medmdm.io import load_study

NIFTI_SUFFIXES = (".nii", ".nii.gz")
SKIPPED_SUFFIXES = (".json", ".txt", ".py", ".pyc", ".md", ".gz", ".bz2", ".zip")  # notes and archives
REASONS = (  # the first pattern found in a refusal names its reason
    ("no pixel data|unusable image size", "no image (no pixel data, or 0 rows)"),
    ("neither DICOM nor NIfTI|not a NIfTI|Cifti", "not DICOM or NIfTI"),
    ("frames at|temporal|over time", "4D / temporal"),
    ("channel", "channels"),
    ("NaN|infinite", "NaN or infinite voxels"),
    ("spacing|orientation|affine|pixdim|geometry", "unusable geometry"),
    ("truncated|undecodable|length|pixel data", "damaged pixel data"),
    ("dimensions|too large", "absurd dimensions"),
    ("is not|VR", "damaged header value"),
    ("series", "several series"),
)


def test_files() -> list[Path]:
    """The files of pydicom's and pydicom-data's test data, and the NIfTI files of nibabel's (listed from the
    installed folders: nothing is downloaded)."""
    import data_store
    import pydicom.data
    from nibabel.testing import data_path

    roots = [Path(pydicom.data.__file__).parent / "test_files", Path(data_store.__file__).parent / "data"]
    dicom = sorted(p for root in roots for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))
    dicom = [p for p in dicom if not p.name.endswith(SKIPPED_SUFFIXES)]
    nifti = sorted(p for p in Path(data_path).iterdir() if p.name.endswith(NIFTI_SUFFIXES))
    return [*dicom, *nifti]


def reason_of(message: str) -> str:
    """The reason a refusal names, from :data:`REASONS`."""
    for pattern, reason in REASONS:
        if re.search(pattern, message, flags=re.IGNORECASE):
            return reason
    return "other"


def run(path: Path, work: Path, extra: list[str]) -> tuple[str, str, float]:
    """``(result, detail, seconds)``: result is ``explained``, ``refused`` or ``FAILED``."""
    out = work / "out"
    err = io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(["explain", str(path), "--out", str(out), "--quiet", *extra])
        except Exception as error:  # anything escaping main is a failure to report
            code, err = -1, io.StringIO(f"{type(error).__name__}: {error}")
    seconds = time.perf_counter() - started
    lines = err.getvalue().strip().splitlines()
    leftovers = [p.name for p in work.iterdir() if p != out]
    if code == 0:
        overlay = nib.load(out / "saliency.nii.gz")
        with warnings.catch_warnings():  # the explain run said them already
            warnings.simplefilter("ignore")
            study = load_study(path)
        on_grid = overlay.shape[: len(study.size)] == tuple(study.size) and np.allclose(
            overlay.affine, np.asarray(study.affine), atol=1e-3
        )
        return (
            "explained" if on_grid and not leftovers else "FAILED",
            "" if on_grid else "off grid",
            seconds,
        )
    if code == 2 and len(lines) == 1 and lines[0].startswith("medmdm: error:") and not out.exists():
        return "refused", lines[0].removeprefix("medmdm: error: "), seconds
    return "FAILED", f"exit {code}: {' | '.join(lines)[-300:]}", seconds


def main_cli(argv: list[str] | None = None) -> int:
    """Run every file and print the table and the counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", help="explanation method (default: medmdm's default)")
    parser.add_argument("--steps", type=int, help="optimisation steps per stage")
    parser.add_argument("--limit", type=int, help="the first N files only")
    args = parser.parse_args(argv)
    extra = [
        *(["--method", args.method] if args.method else []),
        *(["--steps", str(args.steps)] if args.steps else []),
    ]
    files = test_files()[: args.limit]
    rows = []
    for number, path in enumerate(files, start=1):
        with tempfile.TemporaryDirectory() as work:
            result, detail, seconds = run(path, Path(work), extra)
        rows.append((path, result, detail, seconds))
        print(
            f"[{number}/{len(files)}] {path.name}: {result} {seconds:.1f} s {detail[:120]}", file=sys.stderr
        )
    print("| file | result | seconds | reason |\n|---|---|---|---|")
    for path, result, detail, seconds in rows:
        reason = reason_of(detail) if result == "refused" else detail
        print(f"| {path.name} | {result} | {seconds:.1f} | {reason} |")
    counts = Counter(result for _, result, _, _ in rows)
    reasons = Counter(reason_of(detail) for _, result, detail, _ in rows if result == "refused")
    print(f"\n{len(rows)} files: {counts['explained']} explained, {counts['refused']} refused, "
          f"{counts['FAILED']} failed")  # fmt: skip
    for reason, count in reasons.most_common():
        print(f"- refused, {reason}: {count}")
    return 1 if counts["FAILED"] else 0


if __name__ == "__main__":
    sys.exit(main_cli())
