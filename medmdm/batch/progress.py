"""What a batch shows while it runs (an overall bar) and when it ends (a summary)."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tqdm import tqdm

from medmdm.batch.manifest import NOTE_FINISHED, NOTE_NOT_RUN, StudyRecord

MAX_FAILURES_LISTED = 20


class BatchProgress:
    """One bar over the whole batch: studies done, ok/failed/skipped, rate and time left.

    On a terminal the bar is drawn on standard error; otherwise (logs, clusters) each finished study gets
    one line there. Silent when not ``enabled``.

    Parameters
    ----------
    total : int
        Studies in the batch, skipped ones included.
    enabled : bool
        Show anything at all.
    """

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total = total
        self.enabled = enabled
        self.counts: Counter[str] = Counter()
        self._bar: tqdm | None = None
        if enabled and sys.stderr.isatty():
            self._bar = tqdm(total=total, desc="batch", unit="study", file=sys.stderr, dynamic_ncols=True)

    def update(self, record: StudyRecord) -> None:
        """Count one finished study."""
        self.counts[record.status] += 1
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(
                ok=self.counts["ok"], failed=self.counts["failed"], skipped=self.counts["skipped"]
            )
        elif self.enabled:
            done = sum(self.counts.values())
            line = f"[{done}/{self.total}] {record.status} {record.key} ({record.seconds:.1f} s)"
            if record.error:
                line += f": {record.error}"
            elif record.note:
                line += f": {record.note}"
            print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        """Close the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> BatchProgress:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()


@dataclass
class BatchSummary:
    """How a batch went.

    Attributes
    ----------
    records : list of StudyRecord
        One per study, in the order they ended.
    seconds : float
        Wall-clock time of the whole batch.
    ignored : int
        Files found that were neither DICOM images nor NIfTI.
    results : Path
        The results manifest.
    """

    records: list[StudyRecord] = field(default_factory=list)
    seconds: float = 0.0
    ignored: int = 0
    results: Path = Path()

    def count(self, status: str) -> int:
        """Studies with ``status`` (``"ok"``, ``"failed"``, ``"skipped"``)."""
        return sum(r.status == status for r in self.records)

    @property
    def studies_per_hour(self) -> float:
        """Studies explained (ok) per hour of this run's wall-clock time."""
        return self.count("ok") * 3600.0 / self.seconds if self.seconds > 0 else 0.0

    @property
    def exit_code(self) -> int:
        """0 when every study is ok or skipped, 1 when some failed."""
        return 1 if self.count("failed") else 0

    def lines(self) -> list[str]:
        """The summary as text lines: counts, rate, the results file, and the failures."""
        skipped = Counter(_skip_reason(r.note) for r in self.records if r.status == "skipped")
        reasons = ", ".join(f"{n} {reason}" for reason, n in sorted(skipped.items()))
        counts = f"{self.count('ok')} ok, {self.count('skipped')} skipped"
        counts += f" ({reasons})" if reasons else ""
        counts += f", {self.count('failed')} failed"
        lines = [
            f"batch: {_studies(len(self.records))} in {_duration(self.seconds)}: {counts}; "
            f"{self.studies_per_hour:.1f} studies/hour",
            f"results: {self.results}",
        ]
        if self.ignored:
            files = "file that is" if self.ignored == 1 else "files that are"
            lines.append(f"ignored {self.ignored} {files} neither a DICOM image nor NIfTI")
        failed = [r for r in self.records if r.status == "failed"]
        if failed:
            lines.append(f"{_studies(len(failed))} failed:")
            lines += [f"  {r.key}: {r.error}" for r in failed[:MAX_FAILURES_LISTED]]
            if len(failed) > MAX_FAILURES_LISTED:
                lines.append(f"  ... and {len(failed) - MAX_FAILURES_LISTED} more (see {self.results})")
        return lines


def _skip_reason(note: str) -> str:
    if note == NOTE_FINISHED:
        return "finished earlier"
    if note == NOTE_NOT_RUN:
        return "not run"
    return "duplicate"


def _studies(count: int) -> str:
    return f"{count} study" if count == 1 else f"{count} studies"


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"
