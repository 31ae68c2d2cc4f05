"""What one explanation records: the map, the scores, one record per cascade level, and progress
events; :meth:`Explanation.split` turns the explanation of a batch into each image's own."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch


@dataclass(frozen=True)
class ProgressEvent:
    """What a progress callback receives, a few times per optimisation stage.

    Attributes
    ----------
    level : int
        Cascade level, starting at 1.
    stage : str
        ``"benchmark"``, ``"auxiliary"`` or ``"multiscale"``.
    step : int
        Steps run so far in this stage.
    max_steps : int
        The stage's step budget.
    loss : float
        Mean loss over the images still optimising.
    retention : float
        Mean fraction of the target score kept by the masked images (1 = all of it).
    """

    level: int
    stage: str
    step: int
    max_steps: int
    loss: float
    retention: float


ProgressCallback = Callable[[ProgressEvent], None]


@dataclass
class LevelRecord:
    """One level of a cascade (a single-level method has one).

    Attributes
    ----------
    map : torch.Tensor
        (B, 1, *spatial) saliency found at this level, in [0, 1]; zeros where the level did not run.
    ran : torch.Tensor
        (B,) bool, whether the level ran for each image.
    weight : torch.Tensor
        (B,) weight of this level in the fused map.
    score_input : torch.Tensor
        (B,) target score of the image this level explained.
    score_masked : torch.Tensor
        (B,) target score of the original image with only this level's map kept.
    score_remaining : torch.Tensor
        (B,) target score of the image left after removing what this and earlier levels found.
    steps : torch.Tensor
        (B,) optimisation steps run for each image at this level.
    """

    map: torch.Tensor
    ran: torch.Tensor
    weight: torch.Tensor
    score_input: torch.Tensor
    score_masked: torch.Tensor
    score_remaining: torch.Tensor
    steps: torch.Tensor


@dataclass
class Explanation:
    """The result of one call, with everything a report needs.

    Attributes
    ----------
    map : torch.Tensor
        (B, 1, *spatial) saliency in [0, 1], 1 = most important, on the input's device.
    target : torch.Tensor or None
        (B,) long: the class, prototype or output channel explained for each image; None for a
        callable target.
    score_original : torch.Tensor
        (B,) target score of the original images.
    score_baseline : torch.Tensor
        (B,) target score of the baseline images (everything removed).
    score_masked : torch.Tensor
        (B,) target score of the original image with only the final map kept
        (``map * x + (1 - map) * baseline``).
    score_remaining : torch.Tensor
        (B,) target score of the original image with the final map removed.
    levels : list of LevelRecord
        Per-level maps and scores.
    steps : torch.Tensor
        (B,) optimisation steps run for each image, all levels and stages together.
    samples : int
        Samples passed through the model, all images together.
    seconds : float
        Wall-clock time of the call.
    method : str
        Registry name of the explainer.
    options : dict
        Every option of the explainer, as used (:meth:`ExplainerOptions.to_dict`, JSON-ready).
    warnings : list of str
        What makes this explanation less trustworthy (also issued as Python warnings); one about some
        images of the batch names them as ``image(s) [0, 2]``.
    target_description : dict
        The target in plain Python: ``kind`` ("class", "prototype", "region", "callable"),
        ``index`` per image, ``score``, and what the kind adds (a region's source and voxel count,
        a function's name).
    baselines : list of str
        The baseline each image was perturbed towards (``"mean"``, ``"minimum"``, ...; what
        ``baseline="auto"`` chose); empty for methods without one.
    """

    map: torch.Tensor
    target: torch.Tensor | None
    score_original: torch.Tensor
    score_baseline: torch.Tensor
    score_masked: torch.Tensor
    score_remaining: torch.Tensor
    levels: list[LevelRecord] = field(default_factory=list)
    steps: torch.Tensor | None = None
    samples: int = 0
    seconds: float = 0.0
    method: str = ""
    options: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    target_description: dict[str, Any] = field(default_factory=dict)
    baselines: list[str] = field(default_factory=list)

    def split(self) -> list[Explanation]:
        """Each image's own explanation, a batch of one as if it had been explained alone.

        The maps, targets, scores, levels, steps, baselines and target descriptions are the image's;
        a warning naming images is kept for those it names (as ``image(s) [0]``); the samples and
        seconds of the call, which are not counted per image, are divided evenly among the images.
        """
        count = self.map.shape[0]
        return [
            replace(
                self,
                map=self.map[i : i + 1],
                target=_rows(self.target, i),
                score_original=self.score_original[i : i + 1],
                score_baseline=self.score_baseline[i : i + 1],
                score_masked=self.score_masked[i : i + 1],
                score_remaining=self.score_remaining[i : i + 1],
                levels=[
                    LevelRecord(**{f.name: getattr(level, f.name)[i : i + 1] for f in fields(level)})
                    for level in self.levels
                ],
                steps=_rows(self.steps, i),
                samples=self.samples // count + (i < self.samples % count),
                seconds=self.seconds / count,
                options=dict(self.options),
                warnings=[note for note in (_image_note(text, i) for text in self.warnings) if note],
                target_description={
                    key: [value[i]] if isinstance(value, list) and len(value) == count else value
                    for key, value in self.target_description.items()
                },
                baselines=self.baselines[i : i + 1],
            )
            for i in range(count)
        ]

    def summary(self) -> dict[str, Any]:
        """Plain-Python summary (no maps) for JSON reports."""

        def values(t: torch.Tensor | None) -> list | None:
            return None if t is None else t.detach().cpu().tolist()

        return {
            "method": self.method,
            "options": dict(self.options),
            "target": values(self.target),
            "target_description": dict(self.target_description),
            "baselines": list(self.baselines),
            "score_original": values(self.score_original),
            "score_baseline": values(self.score_baseline),
            "score_masked": values(self.score_masked),
            "score_remaining": values(self.score_remaining),
            "levels": [
                {
                    "ran": values(level.ran),
                    "weight": values(level.weight),
                    "score_input": values(level.score_input),
                    "score_masked": values(level.score_masked),
                    "score_remaining": values(level.score_remaining),
                    "steps": values(level.steps),
                }
                for level in self.levels
            ],
            "steps": values(self.steps),
            "samples": self.samples,
            "seconds": self.seconds,
            "warnings": list(self.warnings),
        }


def _rows(values: torch.Tensor | None, index: int) -> torch.Tensor | None:
    """Row ``index`` of a per-image tensor, as a batch of one; None stays None."""
    return None if values is None else values[index : index + 1]


_IMAGES = re.compile(r"image\(s\) \[([0-9, ]*)\]")  # how a warning names the images it is about


def _image_note(note: str, index: int) -> str:
    """A warning as image ``index`` alone gets it: as it is when it names no images, its images
    renumbered to ``[0]`` when it names ``index``, else "" (it is about other images)."""
    named = _IMAGES.search(note)
    if named is None:
        return note
    if index not in [int(i) for i in named.group(1).split(",") if i.strip()]:
        return ""
    return note[: named.start()] + "image(s) [0]" + note[named.end() :]
