"""The stages of explaining a study, each on typed values and knowing nothing of who calls it.

``read`` (a :class:`~medmdm.io.Study`, its DICOM headers read once) -> ``prepare`` (the bundle's
preprocessing: a :class:`PreparedStudy` whose network input's affine says how to invert it) -> ``explain``
(an :class:`~medmdm.explainers.Explanation` on the network grid) -> ``map_back`` (the map on the source
grid) -> ``write`` (each writer takes the study and the map; none re-reads the source).

:func:`medmdm.pipeline.explain_study`, ``medmdm batch`` and ``medmdm evaluate`` compose these stages.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor

from medmdm import explainers, pacs
from medmdm.bundle import Bundle
from medmdm.bundle.inference import AMPLE_BATCH, max_batch_for
from medmdm.errors import InputError, ModelError, own_warning
from medmdm.explainers import Explainer, Explanation, RegionTarget, as_target
from medmdm.geometry import map_to_source
from medmdm.io import Study, load_study
from medmdm.pipeline.result import ExplainedTarget, Output, SkippedOutput
from medmdm.settings import DICOM_FORMATS
from medmdm.writers import (
    dicom_output_problem,
    write_colour_presentation,
    write_nifti_image,
    write_nifti_overlay,
    write_parametric_map,
    write_preview,
    write_secondary_capture,
    write_segmentation,
)
from medmdm.writers.display import caption, grey_window


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
    notes : tuple of str
        What preparing changed that the report should say (a channel conversion).
    """

    study: Study
    bundle: Bundle
    network_input: MetaTensor
    notes: tuple[str, ...] = ()


def read(
    path: str | Path | Sequence[str | Path], series_uid: str | None = None, *, study_uid: str | None = None
) -> Study:
    """Read a DICOM file, DICOM series folder, NIfTI file or PNG/JPEG/TIFF image, or several co-registered
    files as the channels of one study (see :func:`medmdm.io.load_study`); what the reader warned about
    (resampled slices, a default spacing, no patient geometry) is kept in ``Study.notes`` and warned again.
    A PACS URL (:mod:`medmdm.pacs`) is read from a temporary copy of its study ``study_uid``; the study's
    ``path`` is then the URL of what was read, without user information."""
    if pacs.is_pacs_url(path):
        return _read_from_pacs(path, study_uid or "", series_uid)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        study = load_study(path, series_uid=series_uid)
    for record in caught:
        warnings.warn_explicit(record.message, record.category, record.filename, record.lineno)
    notes = (" ".join(str(r.message).split()) for r in caught if own_warning(r))
    return replace(study, notes=tuple(dict.fromkeys(notes)))


def _read_from_pacs(url: str, study_uid: str, series_uid: str | None) -> Study:
    """:func:`read` of a study retrieved from a PACS into a temporary folder, named by its URL."""
    named = pacs.study_url(url, study_uid, series_uid)
    with pacs.retrieved(url, study_uid, series_uid) as folder:
        try:
            return replace(read(folder, series_uid), path=named)
        except InputError as error:  # the URL, not the temporary folder, names the study
            raise InputError(str(error).replace(str(folder), named)) from None


def prepare(study: Study, bundle: Bundle) -> PreparedStudy:
    """Run the bundle's preprocessing on the study.

    A grey study given to a network that takes 3 channels is repeated into them, and an RGB study given to
    one that takes 1 is turned grey by luminance (ITU-R BT.601), with a warning; other channel counts that
    differ from the network's are refused.

    Raises
    ------
    InputError
        A study whose dimensionality or channels the bundle does not take, or a failing preprocessing.
    """
    dims = len(study.size)
    if bundle.spatial_dims is not None and bundle.spatial_dims != dims:
        raise InputError(
            f"{study.path}: a {dims}D study; bundle {bundle.name} explains {bundle.spatial_dims}D images"
        )
    network_input = bundle.preprocess(study)
    given, wanted = int(network_input.shape[1]), bundle.input_channels
    if wanted is None or given == wanted:
        return PreparedStudy(study, bundle, network_input)
    channels = int(study.image.shape[0])
    conversion = CHANNEL_CONVERSIONS.get((channels, wanted))
    if conversion is None:
        raise InputError(
            f"{study.path}: the study has {channels} channel(s) and gives bundle {bundle.name}'s network "
            f"{given}; the network takes {wanted}"
        )
    name, convert = conversion
    note = f"{study.path}: {name} for bundle {bundle.name}, whose network takes {wanted} channel(s)"
    warnings.warn(note, stacklevel=2)
    converted = replace(study, image=convert(study.image))
    return PreparedStudy(study, bundle, bundle.preprocess(converted), (note,))


def _to_grey(image: MetaTensor) -> MetaTensor:
    weights = torch.tensor(LUMINANCE, dtype=image.dtype).reshape(3, *([1] * (image.ndim - 1)))
    return (image * weights).sum(0, keepdim=True)


def _to_rgb(image: MetaTensor) -> MetaTensor:
    return image.repeat(3, *([1] * (image.ndim - 1)))


LUMINANCE = (0.299, 0.587, 0.114)
CHANNEL_CONVERSIONS = {
    (3, 1): ("an RGB image turned grey by luminance", _to_grey),
    (1, 3): ("a grey image repeated into 3 channels", _to_rgb),
}


def focus(
    prepared: PreparedStudy, target: Any, region_mask: Study | None = None
) -> tuple[PreparedStudy, Any]:
    """A region target ``region:K`` made concrete by the bundle (:meth:`medmdm.bundle.Bundle.focus`): the
    region its postprocessing predicts, or ``region_mask`` (a mask on the study's grid, resampled onto the
    network grid), and the network input cropped to the inferer's windows that cover it. Other targets pass
    as given.

    Raises
    ------
    InputError
        An empty region (the message lists the labels predicted), or a region mask without a region target.
    """
    if not needs_focus(target):
        if region_mask is not None:
            raise InputError(f"{region_mask.path}: a region mask needs a region target (region:K)")
        return prepared, target
    wanted = as_target(target)
    mask = None
    if region_mask is not None:
        mask = map_to_source(region_mask.image[:1], region_mask.image, prepared.network_input[0]) > 0.5
    focused = prepared.bundle.focus(prepared.network_input, wanted.label, mask)
    notes = (*prepared.notes, focused.note)
    return replace(prepared, network_input=focused.network_input, notes=notes), replace(
        focused.target, score=wanted.score
    )


def needs_focus(target: Any) -> bool:
    """Whether :func:`focus` makes ``target`` concrete for each study (a region ``region:K`` that the bundle
    finds); the studies of such a target are explained one at a time."""
    wanted = as_target(target)
    return isinstance(wanted, RegionTarget) and wanted.region is None and isinstance(wanted.label, int)


def bounded(explainer: Explainer, prepared: PreparedStudy) -> Explainer:
    """The explainer with ``max_batch`` no larger than what fits a share of its device's free memory for this
    network input, estimated before the run (:func:`medmdm.bundle.inference.max_batch_for`). Where more than
    :data:`~medmdm.bundle.inference.AMPLE_BATCH` samples fit, the explainer is left as it is, so that the
    maps do not depend on how much memory happens to be free.

    Raises
    ------
    ModelError
        When one sample does not fit.
    """
    bundle = prepared.bundle
    device = explainer.device or torch.device("cpu")
    fits = max_batch_for(bundle.model, prepared.network_input, device, bundle.name)
    given = explainer.options.max_batch
    if (given is not None and given <= fits) or (given is None and fits > AMPLE_BATCH):
        return explainer
    options = explainer.options.replace(max_batch=fits)
    return explainers.create(
        explainer.name, explainer.model, options, device=explainer.device, progress=explainer.progress
    )


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
        The network fails or the method cannot explain it (the message names the studies and the bundle,
        and the channel counts when they differ).
    """
    x = torch.cat([p.network_input.as_tensor().float() for p in prepared])
    try:
        return explainer.explain(x, target=target)
    except ModelError as error:
        studies = ", ".join(str(p.study.path) for p in prepared)
        hint = _channel_hint(prepared[0].bundle.network, int(x.shape[1]))
        raise ModelError(f"{studies}: bundle {prepared[0].bundle.name}: {error}{hint}") from error


def _channel_hint(network: torch.nn.Module, given: int) -> str:
    """Why a network may have failed: its first convolution takes another number of channels."""
    first = next((m for m in network.modules() if isinstance(m, torch.nn.Conv2d | torch.nn.Conv3d)), None)
    if first is None or first.in_channels == given:
        return ""
    return f" (the study gives {given} channel(s); the network's first convolution takes {first.in_channels})"


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
    summary: Sequence[str] = (),
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
    summary : sequence of str
        Lines under the preview's title (:func:`medmdm.pipeline.report.review_summary`).

    Returns
    -------
    outputs : list of Output
        The files written, relative to ``folder``.
    skipped : list of SkippedOutput
        The DICOM formats this study or map cannot carry, and why; the other formats are still written.
    """
    outputs: list[Output] = []
    skipped: list[SkippedOutput] = []

    def add(path: Path, kind: str) -> None:
        outputs.append(Output(path.relative_to(folder).as_posix(), kind))

    if "nifti" in formats:
        add(write_nifti_overlay(saliency, study.image, folder / "saliency.nii.gz"), "nifti-overlay")
        if study.kind != "nifti":
            add(write_nifti_image(study.image, folder / "source.nii.gz"), "nifti-image")

    def parametric_map() -> Path:
        """The Parametric Map written above, which the colour presentation state references."""
        if not any(o.kind == "dicom-pm" for o in outputs):
            raise InputError("the colour presentation state shows the Parametric Map; ask for dicom-pm too")
        return folder / "saliency_pm.dcm"

    dicom_writers = {
        "dicom-pm": lambda: [
            write_parametric_map(
                saliency, study, folder / "saliency_pm.dcm", method=method, target_label=target.label
            )
        ],
        "dicom-pr": lambda: [
            write_colour_presentation(
                parametric_map(), study, folder / "saliency_pm_colour.dcm", method=method
            )
        ],
        "dicom-sc": lambda: write_secondary_capture(
            saliency, study, folder / "secondary_capture", method=method
        ),
        "dicom-seg": lambda: [
            write_segmentation(saliency, study, folder / "saliency_seg.dcm", method=method)
        ],
    }
    for kind, write_kind in dicom_writers.items():
        if kind not in formats:
            continue
        problem = dicom_output_problem(study, kind)
        try:
            if problem is None:
                for path in write_kind():
                    add(path, kind)
        except InputError as error:  # what only the map or highdicom can tell (a flat map has no SEG)
            problem = str(error)
        if problem is not None:
            skipped.append(SkippedOutput(kind, problem))
    if "png" in formats:
        title = f"{model_name}: {method}, {target.label}"
        window = grey_window(study.headers, study.image.detach().as_tensor().cpu().numpy())
        preview = write_preview(
            study.image,
            saliency,
            folder / "preview.png",
            title=title,
            view=caption(study),
            summary=summary,
            window=window,
        )
        add(preview, "png")
    return outputs, skipped


def send_outputs(url: str, folder: Path, outputs: Sequence[Output]) -> pacs.SendReport:
    """Send the DICOM ``outputs`` (Parametric Map, Secondary Captures, SEG) in ``folder`` to the PACS at
    ``url`` (STOW-RS or C-STORE, :func:`medmdm.pacs.send`); what it accepted, per object."""
    return pacs.send(url, folder, [o.path for o in outputs if o.kind in DICOM_FORMATS])
