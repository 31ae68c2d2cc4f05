"""Explaining a batch: the run that finds the studies, plans, dispatches them to an engine and records.

:func:`explain_batch` finds the studies, skips the finished ones (``resume``), hands the rest to an engine
(:mod:`medmdm.batch.local` or :mod:`medmdm.batch.ray_engine`, each running
:class:`~medmdm.batch.worker.StudyWorker`) and writes ``results.jsonl`` as they end.

A study's output folder only ever appears complete: :func:`medmdm.pipeline.explain_prepared` writes into a
hidden ``.<key>.tmp-*`` folder and renames it at the end, so a killed run leaves hidden leftovers at most,
which the next run removes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from medmdm.batch.discovery import StudyInput, discover
from medmdm.batch.manifest import NOTE_FINISHED, NOTE_NOT_RUN, RESULTS_NAME, ResultsLog, StudyRecord
from medmdm.batch.progress import BatchProgress, BatchSummary
from medmdm.batch.shard import Shard
from medmdm.batch.sink import RecordSink
from medmdm.batch.worker import BatchSettings, new_record
from medmdm.bundle import load_bundle
from medmdm.devices import resolve_device
from medmdm.errors import InputError, OptionError
from medmdm.pipeline import REPORT_NAME, make_explainer
from medmdm.pipeline.output_folder import check_out_dir, clean_leftovers

Engine = Literal["local", "ray"]
ENGINES = ("local", "ray")
LOCK_NAME = ".medmdm-batch.lock"


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
        if item.note:
            plan.decided.append(new_record(item, settings, "skipped", note=item.note))
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
    prefer: str = "dicom",
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
    prefer : {"dicom", "nifti", "both"}
        Which of a DICOM study and a NIfTI file of the same name beside it is explained (see
        :func:`medmdm.batch.discover`).

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
    out_dir = check_out_dir(settings.out_dir, overwrite=True)  # its study folders are checked by the plan
    found = discover(Path(source).absolute(), exclude=out_dir, prefer=prefer)
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


def _check_settings(batch: BatchSettings) -> None:
    """The batch's bundle and the explainer for it, made once here rather than failing every study (the
    settings were validated when made; the demo bundles load in the workers)."""
    if batch.bundle is not None:
        bundle = load_bundle(
            batch.bundle, config_files=batch.bundle_config, allow_random_weights=batch.allow_random_weights
        )
        make_explainer(batch.settings, bundle, resolve_device("cpu"))


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
