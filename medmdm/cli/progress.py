"""A terminal progress bar fed by the explainer's progress events."""

from __future__ import annotations

import sys
from types import TracebackType

from tqdm import tqdm

from medmdm.explainers.explanation import ProgressEvent


class ProgressBar:
    """One bar per optimisation stage: level, stage, steps, and the class score the mask keeps.

    Silent when ``enabled`` is False or standard error is not a terminal.
    """

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled and sys.stderr.isatty()
        self._bar: tqdm | None = None
        self._stage: tuple[int, str] | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if not self.enabled:
            return
        stage = (event.level, event.stage)
        if stage != self._stage or self._bar is None:
            self.close()
            self._bar = tqdm(
                total=event.max_steps,
                desc=f"level {event.level} {event.stage}",
                leave=False,
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
            )
            self._stage = stage
        self._bar.update(max(0, min(event.step, event.max_steps) - self._bar.n))
        self._bar.set_postfix(kept=f"{event.retention:.2f}", refresh=False)

    def close(self) -> None:
        """Close the current bar, if any."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()
