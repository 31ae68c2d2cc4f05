"""The per-study work every batch engine runs: read and prepare studies, explain them, write their folders.

:class:`StudyWorker` explains studies on one device with each bundle loaded, and its explainer made, once.
It takes a group of studies at a time (``studies_per_call``, :meth:`BatchSettings.per_call`): those of one
bundle, network input shape and target are explained in one explainer call
(:func:`medmdm.pipeline.explain_together`), each written as a single run writes it
(:func:`medmdm.pipeline.write_explained`). Two threads calling :meth:`StudyWorker.process` overlap one
group's reading and preprocessing (:func:`medmdm.pipeline.prepare`) with another's explanation.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from medmdm.batch.discovery import StudyInput
from medmdm.batch.manifest import NOTE_NOT_RUN, StudyRecord
from medmdm.bundle import Bundle, demo_bundle_path, load_bundle
from medmdm.bundle.demo import DEMO_BUNDLES
from medmdm.devices import resolve_device
from medmdm.errors import BundleError, MedmdmError, OptionError, failure_line
from medmdm.explainers import Explainer
from medmdm.pipeline import PreparedStudy, explain_together, make_explainer, prepare, read, write_explained
from medmdm.pipeline.stages import needs_focus
from medmdm.settings import Settings, plain_target

AUTO_STUDIES_PER_CALL = 4  # studies per explainer call on CUDA with ``--studies-per-call auto``


@dataclass(frozen=True)
class BatchSettings:
    """What every study of a batch is explained with (picklable, sent to every worker).

    Attributes
    ----------
    out_dir : Path
        The batch's output folder; study ``key`` goes to ``out_dir / key``.
    settings : Settings
        Method, options, formats and the default target (a manifest row's target wins); its device is not
        used: each worker has its own.
    bundle : Path or None
        The bundle folder; None: the demo bundle of each study's dimensionality.
    bundle_config : tuple of str or None
        Bundle config files to read instead of ``configs/inference.json``.
    allow_random_weights : bool
        Run a bundle without weights with random ones (smoke tests; each report says so).
    studies_per_call : int or None
        Most studies explained in one explainer call; None (``auto``): :data:`AUTO_STUDIES_PER_CALL` on CUDA,
        1 on the CPU (where sharing a call saves little).

    Raises
    ------
    OptionError
        ``studies_per_call`` below 1.
    """

    out_dir: Path
    settings: Settings = field(default_factory=Settings)
    bundle: Path | None = None
    bundle_config: tuple[str, ...] | None = None
    allow_random_weights: bool = False
    studies_per_call: int | None = None

    def __post_init__(self) -> None:
        if self.studies_per_call is not None and self.studies_per_call < 1:
            raise OptionError(f"--studies-per-call must be auto or at least 1, got {self.studies_per_call}")

    def target_of(self, item: StudyInput) -> Any:
        """What to explain in ``item``: its manifest row's target, else the batch's."""
        return item.target if item.target is not None else self.settings.target

    def per_call(self, device: str | torch.device) -> int:
        """Most studies explained in one call on ``device``: ``studies_per_call``, else its ``auto`` value."""
        if self.studies_per_call is not None:
            return self.studies_per_call
        return AUTO_STUDIES_PER_CALL if torch.device(device).type == "cuda" else 1


def next_call(pending: deque[StudyInput], size: int) -> list[StudyInput]:
    """The first ``size`` studies of ``pending`` (fewer when fewer are left), taken from it: what one
    :meth:`StudyWorker.process` is given."""
    return [pending.popleft() for _ in range(min(size, len(pending)))]


class StudyWorker:
    """Explains studies on one device; the bundle (or each demo bundle) is loaded once, when the worker
    starts (MONAI's config parser walks ``sys.modules``, which a thread importing meanwhile would change),
    and kept on that device with its explainer.

    Parameters
    ----------
    batch : BatchSettings
        The batch's settings.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    threads : int, optional
        Torch CPU threads of this process (several CPU workers share the cores).
    stop : threading.Event or multiprocessing.Event, optional
        Once set, studies that have not reached the explainer are skipped.
    """

    def __init__(
        self,
        batch: BatchSettings,
        device: str = "auto",
        threads: int | None = None,
        stop: Any = None,
    ) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        self.batch = batch
        self.device = resolve_device(device)
        self.stop = stop
        self._explaining = threading.Lock()
        self._loaded: dict[int | None, tuple[Bundle, Explainer] | str] = {}
        slots: list[int | None] = [None] if batch.bundle is not None else list(DEMO_BUNDLES)
        for slot in slots:
            try:
                if slot is None:
                    bundle = load_bundle(
                        batch.bundle,
                        config_files=batch.bundle_config,
                        allow_random_weights=batch.allow_random_weights,
                    )
                else:
                    bundle = load_bundle(demo_bundle_path(slot))
                bundle.network.to(self.device)
                self._loaded[slot] = (bundle, make_explainer(batch.settings, bundle, self.device))
            except MedmdmError as error:  # the studies that need this bundle fail with its error
                self._loaded[slot] = str(error)

    def loaded_for(self, spatial_dims: int) -> tuple[Bundle, Explainer]:
        """The batch's bundle (or the demo bundle for ``spatial_dims``) and its explainer."""
        slot = None if self.batch.bundle is not None else spatial_dims
        missing = f"no demo bundle for {spatial_dims}D studies; pass one with --bundle DIR"
        loaded = self._loaded.get(slot, missing)
        if isinstance(loaded, str):
            raise BundleError(loaded)
        return loaded

    def prepare(self, item: StudyInput) -> PreparedStudy:
        """Read a study and run its bundle's preprocessing; a format it cannot carry is refused here."""
        study = read(item.source, item.series_uid)
        bundle, _ = self.loaded_for(len(study.size))
        self.batch.settings.formats_for(study)
        return prepare(study, bundle)

    def process(self, items: Sequence[StudyInput]) -> list[StudyRecord]:
        """Read, explain and write studies, those of one bundle, network input shape and target in one
        explainer call; every failure becomes a failed record of its study, never an exception.

        A group whose call fails is explained again one study at a time, so that a bad study fails alone.
        """
        started = time.perf_counter()
        records = {item.key: new_record(item, self.batch, "ok", device=str(self.device)) for item in items}
        prepared: dict[str, PreparedStudy] = {}
        for item in items:
            clock = time.perf_counter()
            try:
                prepared[item.key] = self.prepare(item)
            except Exception as error:  # a failed study is recorded and the batch goes on
                _fail(records[item.key], item, error)
            records[item.key].timings["prepare"] = time.perf_counter() - clock
            records[item.key].seconds = time.perf_counter() - started
        ready = time.perf_counter()
        with self._explaining:
            for key in prepared:
                records[key].timings["wait"] = time.perf_counter() - ready
            for group in self._calls([item for item in items if item.key in prepared], prepared):
                if self.stop is not None and self.stop.is_set():
                    for item in group:
                        records[item.key].status, records[item.key].note = "skipped", NOTE_NOT_RUN
                    continue
                self._explain(group, prepared, records)
                for item in group:
                    records[item.key].seconds = time.perf_counter() - started
        return list(records.values())

    def _calls(
        self, items: Sequence[StudyInput], prepared: dict[str, PreparedStudy]
    ) -> list[list[StudyInput]]:
        """The studies by explainer call: one bundle, network input shape and target per call; a study
        whose target is found in each study (a region) alone."""
        calls: dict[Any, list[StudyInput]] = {}
        for item in items:
            study, target = prepared[item.key], self.batch.target_of(item)
            shared = (id(study.bundle), tuple(study.network_input.shape), plain_target(target))
            calls.setdefault(item.key if needs_focus(target) else shared, []).append(item)
        return list(calls.values())

    def _explain(
        self, group: list[StudyInput], prepared: dict[str, PreparedStudy], records: dict[str, StudyRecord]
    ) -> None:
        """Explain ``group`` in one call and write each study's folder (replacing an unfinished one); when
        the call fails, explain its studies one at a time."""
        _, explainer = self.loaded_for(len(prepared[group[0].key].study.size))
        clock = time.perf_counter()
        try:
            explained = explain_together(
                [prepared[item.key] for item in group], explainer, self.batch.target_of(group[0])
            )
        except Exception as error:
            if len(group) == 1:
                _fail(records[group[0].key], group[0], error)
                return
            for item in group:
                self._explain([item], prepared, records)
            return
        share = (time.perf_counter() - clock) / len(group)
        for item, (study, explanation) in zip(group, explained, strict=True):
            record = records[item.key]
            settings = replace(self.batch.settings, target=self.batch.target_of(item))
            try:
                result = write_explained(
                    study,
                    explanation,
                    settings,
                    self.batch.out_dir / item.key,
                    device=self.device,
                    overwrite=True,
                    timings={"explain": share},
                    started=time.perf_counter() - share,
                    studies_in_call=len(group),
                )
            except Exception as error:
                _fail(record, item, error)
                continue
            record.timings["explain_and_write"] = result.timings["total"]
            record.outputs = [f"{item.key}/{output.path}" for output in result.outputs]
            if result.sent is not None and not result.sent.ok:  # the outputs stay; the study is not done
                record.status, record.error = "failed", f"{item.path}: {result.sent.line()}"


def _fail(record: StudyRecord, item: StudyInput, error: Exception) -> None:
    """Record ``error`` as why the study failed; the trace too when it is not an input, model or option
    error."""
    record.status, record.error = "failed", failure_line(error, item.path)
    if not isinstance(error, MedmdmError):
        record.traceback = "".join(traceback.format_exception(error))


def new_record(item: StudyInput, batch: BatchSettings, status: Any, **fields: Any) -> StudyRecord:
    """A results record for ``item`` with ``status`` and any other fields."""
    target = batch.target_of(item)
    return StudyRecord(
        key=item.key,
        input=str(item.path),
        status=status,
        series_uid=item.series_uid or "",
        target=plain_target(target),
        **fields,
    )
