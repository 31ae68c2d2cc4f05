"""The batch summary: counts, rate and failures."""

from __future__ import annotations

from pathlib import Path

from medmdm.batch import BatchSummary, StudyRecord
from medmdm.batch.manifest import NOTE_FINISHED


def test_summary_counts_rate_and_failures() -> None:
    records = [
        StudyRecord("a", "/in/a.nii.gz", "ok", seconds=1000.0),
        StudyRecord("b", "/in/b.nii.gz", "ok", seconds=1000.0),
        StudyRecord("c", "/in/c.nii.gz", "skipped", note=NOTE_FINISHED),
        StudyRecord("d", "/in/a.nii.gz", "skipped", note="duplicate of /in/a.nii.gz (same key)"),
        StudyRecord(
            "e", "/in/e.dcm", "failed", error="/in/e.dcm: neither DICOM nor NIfTI (no DICOM preamble)"
        ),
    ]
    summary = BatchSummary(records=records, seconds=1800.0, ignored=1, results=Path("/out/results.jsonl"))
    assert (summary.count("ok"), summary.count("skipped"), summary.count("failed")) == (2, 2, 1)
    assert summary.studies_per_hour == 4.0  # 2 explained in half an hour
    assert summary.exit_code == 1
    assert summary.lines() == [
        "batch: 5 studies in 30.0 min: 2 ok, 2 skipped (1 duplicate, 1 finished earlier), 1 failed; "
        "4.0 studies/hour",
        "results: /out/results.jsonl",
        "ignored 1 file that is neither a DICOM image nor NIfTI",
        "1 study failed:",
        "  e: /in/e.dcm: neither DICOM nor NIfTI (no DICOM preamble)",
    ]
    assert BatchSummary(records=records[:3], seconds=10.0).exit_code == 0
