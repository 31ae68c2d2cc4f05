"""The per-study work every batch engine runs: read and prepare a study, explain it, write its folder.

:class:`StudyWorker` explains studies on one device with each bundle loaded, and its explainer made, once;
two threads calling :meth:`StudyWorker.process` overlap one study's reading and preprocessing
(:func:`medmdm.pipeline.prepare`) with another's explanation (:func:`medmdm.pipeline.explain_prepared`).
"""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from medmdm.batch.discovery import StudyInput
from medmdm.batch.manifest import NOTE_NOT_RUN, StudyRecord
from medmdm.bundle import Bundle, demo_bundle_path, load_bundle
from medmdm.bundle.demo import DEMO_BUNDLES
from medmdm.devices import resolve_device
from medmdm.errors import BundleError, MedmdmError, failure_line
from medmdm.explainers import Explainer
from medmdm.pipeline import PreparedStudy, StudyResult, explain_prepared, make_explainer, prepare, read
from medmdm.settings import Settings, plain_target


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
    """

    out_dir: Path
    settings: Settings = field(default_factory=Settings)
    bundle: Path | None = None
    bundle_config: tuple[str, ...] | None = None
    allow_random_weights: bool = False

    def target_of(self, item: StudyInput) -> Any:
        """What to explain in ``item``: its manifest row's target, else the batch's."""
        return item.target if item.target is not None else self.settings.target


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
        """Read a study and run its bundle's preprocessing."""
        study = read(item.source, item.series_uid)
        bundle, _ = self.loaded_for(len(study.size))
        return prepare(study, bundle)

    def explain(self, item: StudyInput, prepared: PreparedStudy) -> StudyResult:
        """Explain a prepared study and write its output folder (replacing an unfinished one)."""
        _, explainer = self.loaded_for(len(prepared.study.size))
        settings = replace(self.batch.settings, target=self.batch.target_of(item))
        return explain_prepared(prepared, explainer, settings, self.batch.out_dir / item.key, overwrite=True)

    def process(self, item: StudyInput) -> StudyRecord:
        """Read, explain and write one study; every failure becomes a failed record, never an exception."""
        started = time.perf_counter()
        record = new_record(item, self.batch, "ok")
        record.device = str(self.device)
        try:
            prepared = self.prepare(item)
            record.timings["prepare"] = time.perf_counter() - started
            with self._explaining:
                record.timings["wait"] = time.perf_counter() - started - record.timings["prepare"]
                if self.stop is not None and self.stop.is_set():
                    record.status, record.note = "skipped", NOTE_NOT_RUN
                    return record
                result = self.explain(item, prepared)
            record.timings["explain_and_write"] = result.timings["total"]
            record.outputs = [f"{item.key}/{output.path}" for output in result.outputs]
            if result.sent is not None and not result.sent.ok:  # the outputs stay; the study is not done
                record.status, record.error = "failed", f"{item.path}: {result.sent.line()}"
        except Exception as error:  # a failed study is recorded and the batch goes on
            record.status, record.error = "failed", failure_line(error, item.path)
            if not isinstance(error, MedmdmError):  # not an input, model or option error: keep the trace
                record.traceback = traceback.format_exc()
        record.seconds = time.perf_counter() - started
        return record


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
