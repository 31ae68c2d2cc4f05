"""Explaining a batch: the per-study function every engine runs, and the run that plans, dispatches and
records.

:class:`StudyWorker` explains studies on one device with each bundle loaded once; two threads calling
:meth:`StudyWorker.process` overlap one study's reading and preprocessing with another's explanation.
:func:`explain_batch` finds the studies, skips the finished ones (``resume``), hands the rest to an engine
(:mod:`medmdm.batch.local` or :mod:`medmdm.batch.ray_engine`) and writes ``results.jsonl`` as they end.

A study's output folder only ever appears complete: :func:`medmdm.pipeline.explain_study` writes into a
hidden ``.<key>.tmp-*`` folder and renames it at the end, so a killed run leaves hidden leftovers at most,
which the next run removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import re
import shutil
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch
from monai.data import MetaTensor

from medmdm import explainers
from medmdm.batch.discovery import StudyInput, discover
from medmdm.batch.manifest import NOTE_FINISHED, NOTE_NOT_RUN, RESULTS_NAME, ResultsLog, StudyRecord
from medmdm.batch.progress import BatchProgress, BatchSummary
from medmdm.batch.shard import Shard
from medmdm.bundle import Bundle, demo_bundle_path, load_bundle
from medmdm.bundle.demo import DEMO_BUNDLES
from medmdm.errors import BundleError, InputError, MedmdmError, ModelError, OptionError
from medmdm.io import Study, load_study
from medmdm.pipeline import OUTPUT_FORMATS, REPORT_NAME, StudyResult, explain_study, resolve_device

Engine = Literal["local", "ray"]
ENGINES = ("local", "ray")
LOCK_NAME = ".medmdm-batch.lock"
LEFTOVER = re.compile(r"^\.(?P<key>.+)\.(tmp|old)-\w+$")  # the staging folders of medmdm.pipeline


@dataclass(frozen=True)
class BatchSettings:
    """What every study of a batch is explained with (picklable, sent to every worker).

    Attributes
    ----------
    out_dir : Path
        The batch's output folder; study ``key`` goes to ``out_dir / key``.
    method : str
        A registered explainer.
    options : dict
        Explainer options (``seed``, ``steps``...).
    formats : str or None
        Output formats (see :func:`medmdm.pipeline.parse_formats`); None: those that fit each study.
    bundle : Path or None
        The bundle folder; None: the demo bundle of each study's dimensionality.
    bundle_config : tuple of str or None
        Bundle config files to read instead of ``configs/inference.json``.
    target : int, str or None
        What to explain when a study's manifest row does not say: a class index or a target text such as
        ``"class:1"`` (see ``medmdm explain --target``); None: the predicted class.
    """

    out_dir: Path
    method: str = "hdm"
    options: dict[str, Any] = field(default_factory=dict)
    formats: str | None = None
    bundle: Path | None = None
    bundle_config: tuple[str, ...] | None = None
    target: int | str | None = None


@dataclass
class PreparedStudy:
    """A study read and preprocessed, waiting for the explainer."""

    item: StudyInput
    study: Study
    bundle: Bundle
    network_input: MetaTensor


class _Preprocessed:
    """A bundle preprocessing that returns the network input a prefetching thread already made."""

    def __init__(self, image_key: str, network_input: MetaTensor) -> None:
        self.image_key = image_key
        self.network_input = network_input

    def __call__(self, data: dict[str, Any]) -> dict[str, MetaTensor]:
        return {self.image_key: self.network_input[0]}


class StudyWorker:
    """Explains studies on one device; the bundle (or each demo bundle) is loaded once, when the worker
    starts (MONAI's config parser walks ``sys.modules``, which a thread importing meanwhile would change),
    and kept on that device.

    Parameters
    ----------
    settings : BatchSettings
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
        settings: BatchSettings,
        device: str = "auto",
        threads: int | None = None,
        stop: Any = None,
    ) -> None:
        if threads is not None:
            torch.set_num_threads(threads)
        self.settings = settings
        self.device = resolve_device(device)
        self.stop = stop
        self._explaining = threading.Lock()
        self._bundles: dict[int | None, Bundle | str] = {}
        slots: list[int | None] = [None] if settings.bundle is not None else list(DEMO_BUNDLES)
        for slot in slots:
            try:
                if slot is None:
                    bundle = load_bundle(settings.bundle, config_files=settings.bundle_config)
                else:
                    bundle = load_bundle(demo_bundle_path(slot))
            except BundleError as error:  # the studies that need this bundle fail with its error
                self._bundles[slot] = str(error)
                continue
            bundle.network.to(self.device)
            self._bundles[slot] = bundle

    def bundle_for(self, spatial_dims: int) -> Bundle:
        """The batch's bundle, or the demo bundle for ``spatial_dims``."""
        slot = None if self.settings.bundle is not None else spatial_dims
        bundle = self._bundles.get(slot, f"no demo bundle for {spatial_dims}D studies; pass a bundle")
        if isinstance(bundle, str):
            raise BundleError(bundle)
        return bundle

    def prepare(self, item: StudyInput) -> PreparedStudy:
        """Read a study and run its bundle's preprocessing."""
        study = load_study(item.path, series_uid=item.series_uid)
        bundle = self.bundle_for(len(study.size))
        return PreparedStudy(item, study, bundle, bundle.preprocess(study))

    def explain(self, prepared: PreparedStudy) -> StudyResult:
        """Explain a prepared study and write its output folder (replacing an unfinished one)."""
        item, settings = prepared.item, self.settings
        bundle = replace(
            prepared.bundle, preprocessing=_Preprocessed(prepared.bundle.image_key, prepared.network_input)
        )
        return explain_study(
            prepared.study,
            bundle,
            settings.out_dir / item.key,
            method=settings.method,
            target=item.target if item.target is not None else settings.target,
            options={**settings.options, "device": self.device},
            formats=settings.formats,
            device=self.device,
            overwrite=True,
        )

    def process(self, item: StudyInput) -> StudyRecord:
        """Read, explain and write one study; every failure becomes a failed record, never an exception."""
        started = time.perf_counter()
        record = new_record(item, self.settings, "ok")
        record.device = str(self.device)
        try:
            prepared = self.prepare(item)
            record.timings["prepare"] = time.perf_counter() - started
            with self._explaining:
                record.timings["wait"] = time.perf_counter() - started - record.timings["prepare"]
                if self.stop is not None and self.stop.is_set():
                    record.status, record.note = "skipped", NOTE_NOT_RUN
                    return record
                result = self.explain(prepared)
            record.timings["explain_and_write"] = result.report["timings"]["total"]
            record.outputs = [f"{item.key}/{o['path']}" for o in result.report["outputs"]]
        except MedmdmError as error:
            record.status, record.error = "failed", _naming(item, " ".join(str(error).split()))
        except Exception as error:  # a failed study is recorded and the batch goes on
            message = " ".join(str(error).split())
            record.status, record.error = "failed", _naming(item, f"{type(error).__name__}: {message}")
            record.traceback = traceback.format_exc()
        record.seconds = time.perf_counter() - started
        return record


def new_record(item: StudyInput, settings: BatchSettings, status: Any, **fields: Any) -> StudyRecord:
    """A results record for ``item`` with ``status`` and any other fields."""
    target = item.target if item.target is not None else settings.target
    return StudyRecord(
        key=item.key,
        input=str(item.path),
        status=status,
        series_uid=item.series_uid or "",
        target=target,
        **fields,
    )


def _naming(item: StudyInput, message: str) -> str:
    """The message, led by the study's path unless it names it already."""
    return message if str(item.path) in message else f"{item.path}: {message}"


def finished_outputs(folder: Path) -> list[str] | None:
    """The outputs ``report.json`` lists in ``folder`` when every one exists, else None (unfinished)."""
    try:
        report = json.loads((folder / REPORT_NAME).read_text())
    except (OSError, ValueError):
        return None
    outputs = report.get("outputs") if isinstance(report, dict) else None
    if not isinstance(outputs, list):
        return None
    paths = [o.get("path") if isinstance(o, dict) else None for o in outputs]
    if not all(isinstance(p, str) and (folder / p).is_file() for p in paths):
        return None
    return [f"{folder.name}/{p}" for p in paths]


def clean_leftovers(out_dir: Path, keys: set[str] | None = None) -> list[Path]:
    """Remove the hidden staging folders a killed run left in ``out_dir`` (those of ``keys`` only, when
    given); return them."""
    matches = [(p, LEFTOVER.match(p.name)) for p in out_dir.iterdir() if p.is_dir()]
    leftovers = [p for p, m in matches if m is not None and (keys is None or m["key"] in keys)]
    for path in leftovers:
        shutil.rmtree(path, ignore_errors=True)
    return leftovers


@dataclass
class BatchPlan:
    """The studies to run, and the records decided without running anything."""

    todo: list[StudyInput] = field(default_factory=list)
    decided: list[StudyRecord] = field(default_factory=list)


def plan_batch(
    studies: Sequence[StudyInput], settings: BatchSettings, *, resume: bool, overwrite: bool
) -> BatchPlan:
    """Sort studies into those to run, finished ones (with ``resume``), duplicates and unreadable inputs.

    Raises
    ------
    InputError
        Output folders of some studies exist and neither ``resume`` nor ``overwrite`` is set.
    """
    plan = BatchPlan()
    first: dict[str, StudyInput] = {}
    existing: list[str] = []
    for item in studies:
        if item.key in first:
            note = f"duplicate of {first[item.key].path} (same key)"
            plan.decided.append(new_record(item, settings, "skipped", note=note))
            continue
        first[item.key] = item
        if item.error:
            plan.decided.append(new_record(item, settings, "failed", error=item.error))
            continue
        folder = settings.out_dir / item.key
        outputs = finished_outputs(folder) if resume else None
        if outputs is not None:
            plan.decided.append(new_record(item, settings, "skipped", outputs=outputs, note=NOTE_FINISHED))
            continue
        if folder.exists() and not (resume or overwrite):
            existing.append(item.key)
        plan.todo.append(item)
    if existing:
        raise InputError(
            f"{settings.out_dir}: already holds the outputs of {len(existing)} of these studies "
            f"(e.g. {existing[0]}); use --resume to skip the finished ones or --overwrite to replace them"
        )
    return plan


class RecordSink:
    """Where engines hand finished studies: the results manifest, the progress display, the tally.

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


EngineRun = Callable[[Sequence[StudyInput], BatchSettings, RecordSink], None]


def explain_batch(
    source: str | Path,
    settings: BatchSettings,
    *,
    engine: Engine = "local",
    devices: str = "auto",
    workers: int | None = None,
    ray_address: str | None = None,
    retries: int = 2,
    resume: bool = False,
    overwrite: bool = False,
    fail_fast: bool = False,
    progress: bool = True,
    shard: Shard | None = None,
) -> BatchSummary:
    """Explain every study of a folder or manifest into one output folder per study.

    Parameters
    ----------
    source : str or Path
        A folder (searched recursively), a DICOM or NIfTI file, or a CSV/JSONL manifest.
    settings : BatchSettings
        Output folder, method, options, formats, bundle, default target.
    engine : {"local", "ray"}
        Worker processes on this machine, or Ray actors (a local Ray instance or a cluster).
    devices : str
        ``"auto"``, ``"cpu"`` or a comma-separated list such as ``"cuda:0,cuda:1"`` (local engine);
        ``"auto"`` or ``"cpu"`` with Ray, which places one actor per GPU.
    workers : int, optional
        Number of workers; default one per device (one CPU worker, or one per GPU).
    ray_address : str, optional
        Address of a running Ray cluster; default a local Ray instance (or the one already started).
    retries : int
        Ray engine: times a study is retried after its actor died.
    resume : bool
        Skip studies whose output folder is complete; redo unfinished ones.
    overwrite : bool
        Replace existing output folders (without ``resume``, existing folders are an error).
    fail_fast : bool
        Stop at the first failed study; the studies not run are recorded as skipped.
    progress : bool
        Show an overall progress bar (a line per study when standard error is not a terminal).
    shard : Shard, optional
        Explain only this shard's studies (see :mod:`medmdm.batch.shard`); other shards may run at once.

    Returns
    -------
    BatchSummary

    Raises
    ------
    InputError, OptionError, BundleError
        Bad input, options or bundle, found before any study runs.
    """
    started = time.perf_counter()
    run = _engine(engine, devices=devices, workers=workers, ray_address=ray_address, retries=retries)
    _check_settings(settings)
    settings = replace(  # workers may run elsewhere: Ray actors do not share this process's folder
        settings,
        out_dir=settings.out_dir.absolute(),
        bundle=settings.bundle.absolute() if settings.bundle is not None else None,
    )
    out_dir = settings.out_dir
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: output path exists and is not a folder")
    found = discover(Path(source).absolute(), exclude=out_dir)
    if not found.studies:
        raise InputError(f"{source}: no DICOM or NIfTI study found")
    studies = shard.select(found.studies) if shard is not None else found.studies
    results = out_dir / (shard.results_name if shard is not None else RESULTS_NAME)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _locked(out_dir, shard):
        clean_leftovers(out_dir, {s.key for s in studies} if shard is not None else None)
        plan = plan_batch(studies, settings, resume=resume, overwrite=overwrite)
        total = len(plan.todo) + len(plan.decided)
        with (
            ResultsLog(results) as log,
            BatchProgress(total, enabled=progress) as bar,
        ):
            sink = RecordSink(log, bar, fail_fast)
            for record in plan.decided:
                sink.add(record)
            todo = plan.todo if not sink.stopped else []
            if todo:
                run(todo, settings, sink)
            recorded = sink.recorded()
            for item in plan.todo:
                if item.key in recorded:
                    continue
                if sink.stopped:
                    sink.add(new_record(item, settings, "skipped", note=NOTE_NOT_RUN))
                else:
                    error = f"{item.path}: not run, the engine ended without a result for it"
                    sink.add(new_record(item, settings, "failed", error=error))
    return BatchSummary(
        records=sink.records,
        seconds=time.perf_counter() - started,
        ignored=len(found.ignored),
        results=results,
    )


def _engine(
    engine: str, *, devices: str, workers: int | None, ray_address: str | None, retries: int
) -> EngineRun:
    """The engine's run function with its options bound, checked before anything runs."""
    if workers is not None and workers < 1:
        raise OptionError(f"--workers must be at least 1, got {workers}")
    if engine == "local":
        if ray_address is not None:
            raise OptionError("--ray-address needs --engine ray")
        from medmdm.batch.local import LocalEngine

        return LocalEngine(devices, workers)
    if engine == "ray":
        from medmdm.batch.ray_engine import RayEngine

        return RayEngine(devices, workers, address=ray_address, retries=retries)
    raise OptionError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")


def _check_settings(settings: BatchSettings) -> None:
    """Method, options, formats and bundle, checked once rather than failing every study."""
    if settings.bundle is not None:
        network = load_bundle(settings.bundle, config_files=settings.bundle_config).network
        explainers.create(settings.method, network, **settings.options)
    else:  # the demo bundles load in the workers; a stand-in checks the option names and values
        with contextlib.suppress(ModelError):  # what the stand-in lacks (a layer name) is no error
            explainers.create(
                settings.method, torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1)), **settings.options
            )
    if settings.formats is not None:
        chosen = [f.strip().lower() for f in settings.formats.split(",") if f.strip()]
        unknown = [f for f in chosen if f not in OUTPUT_FORMATS]
        if unknown or not chosen:
            named = ", ".join(unknown) or "(none)"
            raise OptionError(f"unknown output format {named}; choose from {', '.join(OUTPUT_FORMATS)}")


@contextlib.contextmanager
def _locked(out_dir: Path, shard: Shard | None) -> Iterator[None]:
    """Hold ``out_dir``'s lock: one batch at a time writes into a folder, or one run per shard while
    other shards run (the operating system releases the locks of a killed run)."""
    with contextlib.ExitStack() as stack:
        if shard is None:
            _lock(
                stack, out_dir / LOCK_NAME, fcntl.LOCK_EX, "another medmdm batch is writing into this folder"
            )
        else:
            _lock(stack, out_dir / LOCK_NAME, fcntl.LOCK_SH, "a medmdm batch of every study is writing here")
            name = f"{LOCK_NAME.removesuffix('.lock')}.{shard.label}.lock"
            _lock(stack, out_dir / name, fcntl.LOCK_EX, f"another medmdm batch is running {shard.label} here")
        yield


def _lock(stack: contextlib.ExitStack, path: Path, mode: int, busy: str) -> None:
    lock = stack.enter_context(path.open("a"))
    try:
        fcntl.flock(lock.fileno(), mode | fcntl.LOCK_NB)
    except BlockingIOError:
        raise InputError(f"{path.parent}: {busy}") from None
