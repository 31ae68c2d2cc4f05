"""Explaining a whole archive: find the studies, explain each into a folder named by a stable key, resume
after a stop, on local devices (:mod:`medmdm.batch.local`) or a Ray cluster (:mod:`medmdm.batch.ray_engine`).

``medmdm batch`` is the command line of :func:`explain_batch`.
"""

from __future__ import annotations

from medmdm.batch.discovery import Discovery, StudyInput, discover
from medmdm.batch.manifest import ManifestRow, StudyRecord, read_manifest, read_results
from medmdm.batch.progress import BatchSummary
from medmdm.batch.runner import explain_batch, finished_outputs
from medmdm.batch.shard import Shard
from medmdm.batch.worker import BatchSettings, StudyWorker

__all__ = [
    "BatchSettings",
    "BatchSummary",
    "Discovery",
    "ManifestRow",
    "Shard",
    "StudyInput",
    "StudyRecord",
    "StudyWorker",
    "discover",
    "explain_batch",
    "finished_outputs",
    "read_manifest",
    "read_results",
]
