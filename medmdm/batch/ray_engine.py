"""The Ray engine: Ray actors that each load the bundles once, on a local Ray instance or a cluster.

Each actor is a :class:`~medmdm.batch.worker.StudyWorker` (the same per-study function and output layout as
the local engine) with one GPU where the cluster has GPUs, else an equal share of its CPUs. An actor runs two
groups of studies at a time (``max_concurrency=2``: one is read and preprocessed while the other is
explained; a group is ``studies_per_call`` studies, explained in one call) and is handed more as they end,
so faster nodes do more. An actor that dies (node lost, out of memory) is restarted
and its studies retried, ``retries`` times; a study that raises is not retried but recorded as failed.

Install with ``pip install 'medmdm[ray]'``. The studies, the bundle and the output folder must be at the same
paths on every node (a shared file system); see ``docs/batch.md``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import Any

from medmdm.batch.discovery import StudyInput
from medmdm.batch.sink import RecordSink
from medmdm.batch.worker import BatchSettings, StudyWorker, new_record, next_call
from medmdm.errors import OptionError

CALLS_PER_ACTOR = 2


class RayEngine:
    """Run studies on Ray actors.

    Parameters
    ----------
    devices : {"auto", "cpu"}
        ``"auto"``: one GPU per actor where the cluster has GPUs; ``"cpu"``: CPU actors only.
    workers : int, optional
        Number of actors; default one per GPU of the cluster, else one.
    address : str, optional
        A running cluster (``ray://head:10001`` or ``head:6379``); default ``$RAY_ADDRESS`` or a local
        instance. An instance already started in this process (``ray.init``) is used as it is.
    retries : int
        Restarts of a dead actor, and retries of the studies it held.

    Raises
    ------
    OptionError
        Ray is not installed, or a device list was given (Ray places the GPUs).
    """

    def __init__(
        self,
        devices: str = "auto",
        workers: int | None = None,
        *,
        address: str | None = None,
        retries: int = 2,
    ) -> None:
        try:
            import ray
        except ImportError:
            raise OptionError("--engine ray needs Ray: pip install 'medmdm[ray]'") from None
        if devices.strip().lower() not in ("auto", "cpu"):
            raise OptionError(
                f"--engine ray takes --devices auto or cpu (Ray places the GPUs), got {devices!r}"
            )
        if retries < 0:
            raise OptionError(f"--retries must be 0 or more, got {retries}")
        self.ray = ray
        self.use_gpus = devices.strip().lower() == "auto"
        self.workers = workers
        self.address = address
        self.retries = retries

    def __call__(self, items: Sequence[StudyInput], settings: BatchSettings, sink: RecordSink) -> None:
        """Explain ``items`` on actors, handing each record to ``sink`` as it ends."""
        ray = self.ray
        started_here = not ray.is_initialized()
        if started_here:
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False)
        actors: list[Any] = []
        try:
            actors, device = self._actors(settings)
            self._dispatch(items, actors, settings, sink, settings.per_call(device))
        finally:
            for actor in actors:
                ray.kill(actor)
            if started_here:
                ray.shutdown()

    def _actors(self, settings: BatchSettings) -> tuple[list[Any], str]:
        """The actors, started, and their device."""
        resources = self.ray.cluster_resources()
        gpus = int(resources.get("GPU", 0)) if self.use_gpus else 0
        count = self.workers or gpus or 1
        cpu_share = float(resources.get("CPU", 1)) / count  # fractions: every actor fits, however many
        gpu_share = min(1.0, gpus / count) if gpus else 0
        actor = self.ray.remote(StudyWorker).options(
            num_cpus=cpu_share,
            num_gpus=gpu_share,
            max_restarts=self.retries,
            max_task_retries=self.retries,
            max_concurrency=CALLS_PER_ACTOR,
        )
        device = "cuda" if gpus else "cpu"
        return [actor.remote(settings, device, threads=max(1, int(cpu_share))) for _ in range(count)], device

    def _dispatch(
        self,
        items: Sequence[StudyInput],
        actors: list[Any],
        settings: BatchSettings,
        sink: RecordSink,
        per_call: int,
    ) -> None:
        ray = self.ray
        pending = deque(items)
        held: dict[Any, tuple[int, list[StudyInput]]] = {}
        load = [0] * len(actors)
        while not sink.stopped:
            for depth in range(1, CALLS_PER_ACTOR + 1):  # one group to each actor before a second
                for index, actor in enumerate(actors):
                    if pending and load[index] < depth:
                        group = next_call(pending, per_call)
                        held[actor.process.remote(group)] = (index, group)
                        load[index] += 1
            if not held:
                return
            ready, _ = ray.wait(list(held), num_returns=1)
            for ref in ready:
                index, group = held.pop(ref)
                load[index] -= 1
                try:
                    records = ray.get(ref)
                except ray.exceptions.RayError as error:
                    message = " ".join(str(error).split())[:500]
                    failure = f"the Ray task failed after {self.retries} retries ({message})"
                    records = [
                        new_record(item, settings, "failed", error=f"{item.path}: {failure}")
                        for item in group
                    ]
                for record in records:
                    sink.add(record)
