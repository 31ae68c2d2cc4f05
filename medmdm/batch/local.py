"""The local engine: one worker per device on this machine.

A single worker runs in this process; several run as processes started with the ``spawn`` method (CUDA
cannot be forked), each with its own bundles and, on the CPU, an equal share of the cores
(``torch.set_num_threads(cores // workers)``). Every worker runs two threads over
:meth:`~medmdm.batch.worker.StudyWorker.process`, so the next group of studies (``studies_per_call`` of
them, one on the CPU by default) is read and preprocessed while the current one is explained, and gets at
most two groups at a time from this process's dispatcher. A worker process that dies (killed, out of
memory) fails the studies it held; the others go on.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Sequence
from typing import Any

from medmdm.batch.discovery import StudyInput
from medmdm.batch.sink import RecordSink
from medmdm.batch.worker import BatchSettings, StudyWorker, new_record, next_call
from medmdm.devices import device_list

CALLS_PER_WORKER = 2  # one group explained, one read and preprocessed meanwhile
POLL_SECONDS = 0.5
JOIN_SECONDS = 30.0


def worker_devices(devices: str, workers: int | None = None) -> list[str]:
    """The device of each worker.

    Parameters
    ----------
    devices : str
        ``"auto"`` (every CUDA device, else the CPU), ``"cpu"``, or a comma-separated list of devices
        (``"cuda:0,cuda:1"``).
    workers : int, optional
        Number of workers, spread over the devices in turn; default one per device (one for the CPU).

    Raises
    ------
    OptionError
        An unknown or unavailable device.
    """
    listed = [str(device) for device in device_list(devices)]
    return [listed[i % len(listed)] for i in range(workers or len(listed))]


def cpu_threads(devices: Sequence[str]) -> int:
    """Torch threads per CPU worker: the cores shared equally among the CPU workers."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, sum(d == "cpu" for d in devices)))


class LocalEngine:
    """Run studies on this machine's devices (see :func:`worker_devices`)."""

    def __init__(self, devices: str = "auto", workers: int | None = None) -> None:
        self.devices = worker_devices(devices, workers)

    def __call__(self, items: Sequence[StudyInput], settings: BatchSettings, sink: RecordSink) -> None:
        """Explain ``items``, handing each record to ``sink`` as it ends."""
        if len(self.devices) == 1:
            stop = threading.Event()
            results: Any = queue.Queue()
            worker = StudyWorker(settings, self.devices[0], stop=stop)
            handles = [_ThreadWorker(worker, results, settings.per_call(self.devices[0]))]
        else:
            context = multiprocessing.get_context("spawn")
            stop = context.Event()
            results = context.Queue()
            threads = cpu_threads(self.devices)
            handles = [
                _ProcessWorker(context, index, settings, device, threads, stop, results)
                for index, device in enumerate(self.devices)
            ]
        try:
            _dispatch(items, handles, results, sink, settings, stop)
        except BaseException:  # interrupted: stop the workers now
            stop.set()
            for handle in handles:
                handle.close(wait=False)
            raise
        stop.set()
        for handle in handles:
            handle.close(wait=True)


class _Handle(ABC):
    """A worker as the dispatcher sees it: its task queue, the studies it holds and how many it explains
    in one call."""

    def __init__(self, tasks: Any, per_call: int) -> None:
        self.tasks = tasks
        self.per_call = per_call
        self.held: list[StudyInput] = []

    @abstractmethod
    def alive(self) -> bool:
        """Whether the worker can still take studies."""

    @abstractmethod
    def exit_note(self) -> str:
        """How the worker ended, for the studies it held."""

    @abstractmethod
    def close(self, wait: bool) -> None:
        """Tell the worker to stop; with ``wait``, let it finish what it holds."""


def _serve(worker: StudyWorker, tasks: Any, results: Any, index: int) -> list[threading.Thread]:
    """Start two threads that process groups of studies until they get None, and return them."""

    def loop() -> None:
        while (group := tasks.get()) is not None:
            for record in worker.process(group):
                results.put((index, record))
        tasks.put(None)  # the other thread stops too

    threads = [threading.Thread(target=loop, daemon=True) for _ in range(CALLS_PER_WORKER)]
    for thread in threads:
        thread.start()
    return threads


class _ThreadWorker(_Handle):
    """The single worker, in this process."""

    def __init__(self, worker: StudyWorker, results: Any, per_call: int) -> None:
        super().__init__(queue.Queue(), per_call)
        self.threads = _serve(worker, self.tasks, results, 0)

    def alive(self) -> bool:
        return any(t.is_alive() for t in self.threads)

    def exit_note(self) -> str:
        return "its worker thread ended"

    def close(self, wait: bool) -> None:
        self.tasks.put(None)
        for thread in self.threads if wait else []:
            thread.join(JOIN_SECONDS)


def _process_main(
    settings: BatchSettings, device: str, threads: int | None, stop: Any, tasks: Any, results: Any, index: int
) -> None:
    """A worker process: load nothing until the first study, then serve tasks until None."""
    worker = StudyWorker(settings, device, threads=threads, stop=stop)
    for thread in _serve(worker, tasks, results, index):
        thread.join()


class _ProcessWorker(_Handle):
    """A worker in a process of its own."""

    def __init__(
        self,
        context: Any,
        index: int,
        settings: BatchSettings,
        device: str,
        threads: int | None,
        stop: Any,
        results: Any,
    ) -> None:
        super().__init__(context.Queue(), settings.per_call(device))
        self.device = device
        threads = threads if device == "cpu" else None
        self.process = context.Process(
            target=_process_main,
            args=(settings, device, threads, stop, self.tasks, results, index),
            name=f"medmdm-batch-{index}-{device}",
            daemon=True,
        )
        self.process.start()

    def alive(self) -> bool:
        return self.process.is_alive()

    def exit_note(self) -> str:
        return f"the worker process on {self.device} exited with code {self.process.exitcode}"

    def close(self, wait: bool) -> None:
        self.tasks.put(None)
        self.process.join(JOIN_SECONDS if wait else 0)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join()


def _dispatch(
    items: Sequence[StudyInput],
    handles: Sequence[_Handle],
    results: Any,
    sink: RecordSink,
    settings: BatchSettings,
    stop: Any,
) -> None:
    """Keep every live worker holding two groups of studies until all are recorded (or the batch stops)."""
    pending = deque(items)
    while True:
        if sink.stopped:
            stop.set()
        for depth in range(1, CALLS_PER_WORKER + 1):  # one group to each worker before a second
            for handle in handles:
                if (
                    pending
                    and not sink.stopped
                    and handle.alive()
                    and len(handle.held) < depth * handle.per_call
                ):
                    group = next_call(pending, handle.per_call)
                    handle.held.extend(group)
                    handle.tasks.put(group)
        if not any(handle.held for handle in handles):
            break
        try:
            index, record = results.get(timeout=POLL_SECONDS)
        except queue.Empty:
            _fail_dead(handles, results, sink, settings)
            continue
        _take(handles[index], record, sink)
    if not sink.stopped:
        for item in pending:  # every worker died
            sink.add(new_record(item, settings, "failed", error=f"{item.path}: not run, no worker left"))


def _take(handle: _Handle, record: Any, sink: RecordSink) -> None:
    handle.held = [item for item in handle.held if item.key != record.key]
    sink.add(record)


def _fail_dead(handles: Sequence[_Handle], results: Any, sink: RecordSink, settings: BatchSettings) -> None:
    """Fail the studies held by workers that died, after taking the records they sent before dying."""
    dead = [handle for handle in handles if handle.held and not handle.alive()]
    if not dead:
        return
    while True:
        try:
            index, record = results.get_nowait()
        except queue.Empty:
            break
        _take(handles[index], record, sink)
    for handle in dead:
        for item in handle.held:
            error = f"{item.path}: {handle.exit_note()} while the study was in progress"
            sink.add(new_record(item, settings, "failed", error=error))
        handle.held = []
