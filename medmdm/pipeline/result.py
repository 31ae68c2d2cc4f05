"""What explaining a study produced, as typed values; ``report.json`` is their serialisation
(:func:`medmdm.pipeline.report.study_report`), and nothing reads fields back out of the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from medmdm.bundle import Bundle
    from medmdm.explainers import Explanation
    from medmdm.io import Study
    from medmdm.pacs import SendReport
    from medmdm.settings import Settings


@dataclass(frozen=True)
class Output:
    """One file written for a study.

    Attributes
    ----------
    path : str
        Relative to the study's output folder, with ``/`` separators.
    kind : str
        ``"nifti-overlay"``, ``"nifti-image"``, ``"dicom-pm"``, ``"dicom-pr"``, ``"dicom-sc"``,
        ``"dicom-seg"``, ``"png"``, ``"html"`` or ``"json"``.
    """

    path: str
    kind: str


@dataclass(frozen=True)
class SkippedOutput:
    """An output format that was asked for (or is a default) and could not be written for this study.

    Attributes
    ----------
    kind : str
        ``"dicom-pm"``, ``"dicom-pr"``, ``"dicom-sc"`` or ``"dicom-seg"``.
    reason : str
        Why, in one line.
    """

    kind: str
    reason: str

    def __str__(self) -> str:
        return f"no {self.kind} written: {self.reason}"


@dataclass(frozen=True)
class ExplainedTarget:
    """What was explained for a study.

    Attributes
    ----------
    kind : str
        ``"class"``, ``"prototype"``, ``"region"``...
    index : int or None
        The class, prototype or label explained.
    name : str
        Its name in the bundle's metadata, ``""`` when unnamed.
    details : dict
        The rest of the target's description (``score``, a region's ``voxels``...).
    """

    kind: str
    index: int | None
    name: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The name, else ``"<kind> <index>"``."""
        return self.name or " ".join(str(v) for v in (self.kind, self.index) if v is not None)


@dataclass
class StudyResult:
    """What :func:`medmdm.pipeline.explain_study` (or a batch worker) produced for one study.

    Attributes
    ----------
    out_dir : Path
        The study's output folder.
    study : Study
        The study as read.
    bundle : Bundle
        The bundle that explained it.
    settings : Settings
        The settings it ran with.
    device : torch.device
        Where the explainer computed.
    network_shape : tuple of int
        ``(C, *spatial)`` of the network input.
    explanation : Explanation
        The explainer's record, on the network grid.
    target : ExplainedTarget
        What was explained.
    saliency : torch.Tensor
        ``(*source_spatial)`` map on the study's grid.
    outputs : list of Output
        The files written, ``report.json`` last.
    skipped : list of SkippedOutput
        The formats that could not be written for this study, and why.
    warnings : list of str
        The explainer's warnings, and a line per skipped output.
    timings : dict of str to float
        Seconds per stage (``read``, ``load_bundle``, ``preprocess``, ``explain``, ``map_back``, ``write``)
        and ``total``.
    created : datetime
        When the explanation finished (UTC).
    sent : SendReport or None
        What the PACS of ``Settings.send_to`` accepted of the DICOM outputs; None when nothing was sent.
    studies_in_call : int
        Studies explained in the explainer call that explained this one (``medmdm batch
        --studies-per-call``); above 1, the explanation's samples and the ``explain`` timing are the
        call's divided evenly.
    """

    out_dir: Path
    study: Study
    bundle: Bundle
    settings: Settings
    device: torch.device
    network_shape: tuple[int, ...]
    explanation: Explanation
    target: ExplainedTarget
    saliency: torch.Tensor
    created: datetime
    outputs: list[Output] = field(default_factory=list)
    skipped: list[SkippedOutput] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    sent: SendReport | None = None
    studies_in_call: int = 1
