"""Where batch engines hand finished studies: the results manifest, the progress display, the tally."""

from __future__ import annotations

from medmdm.batch.manifest import ResultsLog, StudyRecord
from medmdm.batch.progress import BatchProgress


class RecordSink:
    """Records studies as they end.

    ``stopped`` turns true at the first failure when ``fail_fast``; engines then start nothing new.
    """

    def __init__(self, log: ResultsLog, progress: BatchProgress, fail_fast: bool) -> None:
        self.log = log
        self.progress = progress
        self.fail_fast = fail_fast
        self.records: list[StudyRecord] = []
        self.stopped = False

    def add(self, record: StudyRecord) -> None:
        """Record one finished (or skipped, or failed) study."""
        self.records.append(record)
        self.log.write(record)
        self.progress.update(record)
        if record.status == "failed" and self.fail_fast:
            self.stopped = True

    def recorded(self) -> set[str]:
        """Keys of the studies recorded so far."""
        return {r.key for r in self.records}
