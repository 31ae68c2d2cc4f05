"""Sharding a batch over independent processes that share an output folder (``torchrun``, job arrays).

Shard ``k`` of ``n`` takes every ``n``-th study key in sorted order, starting at the ``k``-th, so the shards
split any input the same way, a study found twice always falls in one shard, and each shard can be resumed
on its own. A shard writes ``results.shard-<k>-of-<n>.jsonl`` and holds a lock of its own.

Under ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``) ``medmdm batch`` is shard
``RANK`` of ``WORLD_SIZE`` and, with ``--devices auto``, uses GPU ``LOCAL_RANK``; each rank waits for the
others before it exits (:func:`wait_for_every_rank`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from medmdm.batch.discovery import StudyInput
from medmdm.batch.manifest import RESULTS_NAME
from medmdm.errors import OptionError

TORCHRUN_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE")
LONGEST_WAIT = timedelta(days=30)  # ranks may end hours apart


@dataclass(frozen=True)
class Shard:
    """Part ``index`` of ``count`` (0-based) of a batch."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise OptionError(f"shard {self.index}/{self.count}: need 0 <= K < N")

    @classmethod
    def parse(cls, text: str) -> Shard:
        """``"K/N"``, e.g. ``"0/4"``."""
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if match is None:
            raise OptionError(f"--shard must be K/N such as 0/4, got {text!r}")
        return cls(int(match[1]), int(match[2]))

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Shard | None:
        """The shard ``torchrun`` (or any launcher setting ``RANK`` and ``WORLD_SIZE``) made this process."""
        if "RANK" not in environ or int(environ.get("WORLD_SIZE", "1")) < 2:
            return None
        return cls(int(environ["RANK"]), int(environ["WORLD_SIZE"]))

    def select(self, studies: Sequence[StudyInput]) -> list[StudyInput]:
        """The studies of this shard, in their order."""
        keys = sorted({s.key for s in studies})
        mine = set(keys[self.index :: self.count])
        return [s for s in studies if s.key in mine]

    @property
    def results_name(self) -> str:
        """The shard's results manifest."""
        return f"{RESULTS_NAME.removesuffix('.jsonl')}.shard-{self.index}-of-{self.count}.jsonl"

    @property
    def label(self) -> str:
        """``"shard-K-of-N"``."""
        return f"shard-{self.index}-of-{self.count}"


def local_rank_device(environ: Mapping[str, str] = os.environ) -> str | None:
    """``cuda:LOCAL_RANK`` under a launcher that sets ``LOCAL_RANK``, where CUDA is available; else None."""
    import torch

    if "LOCAL_RANK" not in environ or not torch.cuda.is_available():
        return None
    return f"cuda:{int(environ['LOCAL_RANK']) % torch.cuda.device_count()}"


def wait_for_every_rank(environ: Mapping[str, str] = os.environ) -> None:
    """Under ``torchrun``, return once every rank has called this (a barrier); elsewhere at once.

    ``torchrun`` stops every rank as soon as one exits with an error, and a rank with failed studies
    exits with 1: waiting here first lets the other ranks finish their shards.
    """
    if not all(name in environ for name in TORCHRUN_VARIABLES) or int(environ["WORLD_SIZE"]) < 2:
        return
    import torch.distributed as distributed

    distributed.init_process_group("gloo", timeout=LONGEST_WAIT)
    try:
        distributed.barrier()
    finally:
        distributed.destroy_process_group()
