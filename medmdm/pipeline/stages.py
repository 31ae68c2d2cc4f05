"""The stages of explaining a study, each on typed values and knowing nothing of who calls it.

``read`` (a :class:`~medmdm.io.Study`, its DICOM headers read once) -> ``prepare`` (the bundle's
preprocessing: a :class:`PreparedStudy` whose network input's affine says how to invert it) -> ``explain``
(an :class:`~medmdm.explainers.Explanation` on the network grid) -> ``map_back`` (the map on the source
grid) -> ``write`` (each writer takes the study and the map; none re-reads the source).

:func:`medmdm.pipeline.explain_study`, ``medmdm batch`` and ``medmdm evaluate`` compose these stages.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor

from medmdm.bundle import Bundle
from medmdm.errors import InputError, ModelError
from medmdm.explainers import Explainer, Explanation
from medmdm.geometry import map_to_source
from medmdm.io import Study, load_study
from medmdm.pipeline.result import ExplainedTarget, Output
from medmdm.writers import (
    write_nifti_image,
    write_nifti_overlay,
    write_parametric_map,
    write_preview,
    write_secondary_capture,
    write_segmentation,
)


@dataclass(frozen=True)
class PreparedStudy:
    """A study and the network input its bundle's preprocessing made of it.

    Attributes
    ----------
    study : Study
        The study as read.
    bundle : Bundle
        The bundle whose preprocessing ran.
    network_input : monai.data.MetaTensor
        ``(1, C, *spatial)`` float32; its affine maps its voxels into the study's RAS space, which is how
        :func:`map_back` inverts the preprocessing.
    """

    study: Study
    bundle: Bundle
    network_input: MetaTensor


def read(path: str | Path, series_uid: str | None = None) -> Study:
    """Read a DICOM file, DICOM series folder or NIfTI file (see :func:`medmdm.io.load_study`)."""
    return load_study(path, series_uid=series_uid)


def prepare(study: Study, bundle: Bundle) -> PreparedStudy:
    """Run the bundle's preprocessing on the study.

    Raises
    ------
    InputError
        A study whose dimensionality the bundle does not take, or a failing preprocessing.
    """
    dims = len(study.size)
    if bundle.spatial_dims is not None and bundle.spatial_dims != dims:
        raise InputError(
            f"{study.path}: a {dims}D study; bundle {bundle.name} explains {bundle.spatial_dims}D images"
        )
    return PreparedStudy(study, bundle, bundle.preprocess(study))


def explain(explainer: Explainer, prepared: Sequence[PreparedStudy], target: Any = None) -> Explanation:
    """Explain the network inputs of prepared studies (same input shape) as one batch.

    Parameters
    ----------
    explainer : Explainer
        Made for the studies' bundle's network.
    prepared : sequence of PreparedStudy
        The studies; one map each.
    target : optional
        What to explain (see :func:`medmdm.explainers.as_target`); one class per study is accepted.

    Raises
    ------
    ModelError
        The network fails or the method cannot explain it (the message names the bundle).
    """
    x = torch.cat([p.network_input.as_tensor().float() for p in prepared])
    try:
        return explainer.explain(x, target=target)
    except ModelError as error:
        raise ModelError(f"bundle {prepared[0].bundle.name}: {error}") from error


def map_back(explanation: Explanation, prepared: Sequence[PreparedStudy]) -> list[torch.Tensor]:
    """Each study's map resampled from the network grid onto the study's own grid, ``(*source_spatial)``."""
    return [
        map_to_source(explanation.map[i], p.network_input[0], p.study.image) for i, p in enumerate(prepared)
    ]


def explained_target(explanation: Explanation, class_names: Sequence[str], index: int = 0) -> ExplainedTarget:
    """What was explained for image ``index`` of ``explanation``, named from the bundle's class names."""
    described = dict(explanation.target_description)
    kind = str(described.pop("kind", "class"))
    described.pop("index", None)
    number = int(explanation.target[index]) if explanation.target is not None else None
    named = number is not None and kind != "prototype" and 0 <= number < len(class_names)
    details = {k: v[index] if isinstance(v, list) and len(v) > index else v for k, v in described.items()}
    details.setdefault("score", "logit")
    return ExplainedTarget(kind, number, class_names[number] if named else "", details)


def write(
    folder: Path,
    formats: Sequence[str],
    study: Study,
    saliency: torch.Tensor,
    *,
    method: str,
    target: ExplainedTarget,
    model_name: str,
) -> tuple[list[Output], list[str]]:
    """Write the map of ``study`` in each of ``formats`` (but ``json``, the report) into ``folder``.

    Parameters
    ----------
    folder : Path
        An existing folder.
    formats : sequence of str
        From :data:`medmdm.settings.OUTPUT_FORMATS`.
    study : Study
        The source; the DICOM writers take its headers.
    saliency : torch.Tensor
        ``(*source_spatial)`` map on the study's grid.
    method, model_name : str
        Named in the DICOM series descriptions and the preview's title.
    target : ExplainedTarget
        Named in the Parametric Map and the preview.

    Returns
    -------
    outputs : list of Output
        The files written, relative to ``folder``.
    warnings : list of str
        What was not written, and why.
    """
    outputs: list[Output] = []
    warnings: list[str] = []

    def add(path: Path, kind: str) -> None:
        outputs.append(Output(path.relative_to(folder).as_posix(), kind))

    if "nifti" in formats:
        add(write_nifti_overlay(saliency, study.image, folder / "saliency.nii.gz"), "nifti-overlay")
        if study.kind != "nifti":
            add(write_nifti_image(study.image, folder / "source.nii.gz"), "nifti-image")
    if "dicom-pm" in formats:
        path = folder / "saliency_pm.dcm"
        add(write_parametric_map(saliency, study, path, method=method, target_label=target.label), "dicom-pm")
    if "dicom-sc" in formats:
        for path in write_secondary_capture(saliency, study, folder / "secondary_capture", method=method):
            add(path, "dicom-sc")
    if "dicom-seg" in formats:
        try:
            add(write_segmentation(saliency, study, folder / "saliency_seg.dcm", method=method), "dicom-seg")
        except InputError as error:  # a flat map has no top region: say so, write the rest
            warnings.append(f"no DICOM SEG written: {error}")
    if "png" in formats:
        title = f"{model_name}: {method}, {target.label}"
        add(write_preview(study.image, saliency, folder / "preview.png", title=title), "png")
    return outputs, warnings
