"""Explain one study with one bundle and write every output: the path the CLI, the bundle workflow and
batch runs share.

Steps: read the study, run the bundle's preprocessing, explain the network input, map the map back onto the
source grid through the two affines (:func:`medmdm.geometry.map_to_source`), then write the outputs into a
temporary folder beside ``out_dir`` that is renamed to ``out_dir`` only when everything is written. A failed
study leaves no output folder behind.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from medmdm import __version__, explainers
from medmdm.bundle import Bundle, demo_bundle_path, load_bundle
from medmdm.errors import InputError, ModelError, OptionError
from medmdm.explainers.base import Explanation, ProgressEvent
from medmdm.geometry import map_to_source
from medmdm.io import Study, load_study
from medmdm.writers import (
    write_nifti_image,
    write_nifti_overlay,
    write_parametric_map,
    write_preview,
    write_report,
    write_secondary_capture,
    write_segmentation,
)
from medmdm.writers.report import package_versions

OUTPUT_FORMATS = ("nifti", "dicom-pm", "dicom-sc", "dicom-seg", "png", "json")
DICOM_FORMATS = ("dicom-pm", "dicom-sc", "dicom-seg")
REPORT_NAME = "report.json"


@dataclass
class StudyResult:
    """What :func:`explain_study` produced.

    Attributes
    ----------
    out_dir : Path
        The output folder.
    report : dict
        The content of ``report.json``.
    saliency : torch.Tensor
        ``(*source_spatial)`` map on the source grid.
    explanation : Explanation
        The explainer's record, on the network input's grid.
    study : Study
        The study that was read.
    """

    out_dir: Path
    report: dict[str, Any]
    saliency: torch.Tensor
    explanation: Explanation
    study: Study


def parse_formats(formats: str | Iterable[str] | None, study: Study) -> tuple[str, ...]:
    """The output formats to write, checked against the study.

    Parameters
    ----------
    formats : str, iterable of str or None
        Comma-separated text or names from ``OUTPUT_FORMATS``. None: NIfTI, PNG and JSON, plus the DICOM
        Parametric Map and Secondary Capture for a DICOM study.
    study : Study
        DICOM formats need a DICOM study.

    Raises
    ------
    OptionError
        An unknown format.
    InputError
        A DICOM format asked for a NIfTI study.
    """
    if formats is None:
        chosen = ["nifti", "png", "json"] + (["dicom-pm", "dicom-sc"] if study.kind != "nifti" else [])
    else:
        items = formats.split(",") if isinstance(formats, str) else list(formats)
        chosen = [f.strip().lower() for f in items if f.strip()]
    unknown = [f for f in chosen if f not in OUTPUT_FORMATS]
    if unknown:
        raise OptionError(
            f"unknown output format {', '.join(unknown)}; choose from {', '.join(OUTPUT_FORMATS)}"
        )
    dicom = [f for f in chosen if f in DICOM_FORMATS]
    if dicom and study.kind == "nifti":
        raise InputError(f"{study.path}: {', '.join(dicom)} need a DICOM study; this one is NIfTI")
    return tuple(f for f in OUTPUT_FORMATS if f in chosen)


def check_out_dir(out_dir: str | Path, overwrite: bool) -> Path:
    """Refuse an output folder that holds files unless ``overwrite``; return it as a Path."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"{out_dir}: output path exists and is not a folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise InputError(f"{out_dir}: output folder exists and is not empty (use --overwrite to replace it)")
    return out_dir


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None: the first CUDA device when there is one, else the CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as error:
        raise OptionError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"device {device} asked for, but no CUDA device is available")
    return resolved


def explain_study(
    study: str | Path | Study,
    bundle: Bundle | str | Path | None,
    out_dir: str | Path,
    *,
    method: str = "hdm",
    target: Any = None,
    options: dict[str, Any] | None = None,
    formats: str | Sequence[str] | None = None,
    device: str | torch.device | None = "auto",
    series_uid: str | None = None,
    overwrite: bool = False,
    progress: Callable[[ProgressEvent], None] | None = None,
) -> StudyResult:
    """Explain a study with a bundle's classifier and write the outputs into ``out_dir``.

    Parameters
    ----------
    study : path or Study
        A DICOM file, a DICOM series folder, a NIfTI file, or a study already read.
    bundle : Bundle, path or None
        A loaded bundle, a bundle folder, or None for the demo bundle that fits the study (2D or 3D).
    out_dir : path
        Output folder; it must not hold files unless ``overwrite``.
    method : str
        A registered explainer (``medmdm.explainers.available()``).
    target : int, str, target object or None
        What to explain (see :func:`medmdm.explainers.as_target`): None the predicted class, ``K`` or
        ``"class:K"`` class K, ``"prototype:K"``, ``"region:K"`` the predicted region of label K of a
        segmentation network, or a target object.
    options : dict, optional
        Explainer options (``seed``, ``steps``...), over the bundle's ``explain_options``.
    formats : str or sequence of str, optional
        See :func:`parse_formats`; ``report.json`` is always written.
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    series_uid : str, optional
        The series to read from a folder holding several.
    overwrite : bool
        Replace an existing, non-empty ``out_dir``.
    progress : callable, optional
        Receives the explainer's :class:`~medmdm.explainers.base.ProgressEvent`.

    Returns
    -------
    StudyResult
    """
    started = time.perf_counter()
    out_dir = check_out_dir(out_dir, overwrite)
    timings: dict[str, float] = {}
    clock = time.perf_counter()
    if not isinstance(study, Study):
        study = load_study(study, series_uid=series_uid)
    timings["read"] = time.perf_counter() - clock
    chosen = parse_formats(formats, study)
    if not isinstance(bundle, Bundle):
        clock = time.perf_counter()
        bundle = load_bundle(bundle if bundle is not None else demo_bundle_path(len(study.size)))
        timings["load_bundle"] = time.perf_counter() - clock
    options = {**explainers.accepted_options(method, bundle.explain_options), **(options or {})}
    options.setdefault("device", resolve_device(device))
    if progress is not None:
        options["progress"] = progress
    explainer = explainers.create(method, bundle.network, **options)

    clock = time.perf_counter()
    network_input = bundle.preprocess(study)
    timings["preprocess"] = time.perf_counter() - clock
    clock = time.perf_counter()
    try:
        explanation = explainer.explain(network_input.as_tensor(), target=target)
    except ModelError as error:
        raise ModelError(f"bundle {bundle.name}: {error}") from error
    timings["explain"] = time.perf_counter() - clock
    clock = time.perf_counter()
    saliency = map_to_source(explanation.map[0], network_input[0], study.image)
    timings["map_back"] = time.perf_counter() - clock

    report = _report(study, bundle, explanation, network_input, options)
    clock = time.perf_counter()
    with _staging_folder(out_dir, overwrite) as staging:
        outputs = _write_outputs(staging, chosen, study, saliency, explanation.method, bundle, report)
        timings["write"] = time.perf_counter() - clock
        timings["total"] = time.perf_counter() - started
        report["timings"] = {k: round(v, 4) for k, v in timings.items()}
        report["outputs"] = [*outputs, {"path": REPORT_NAME, "kind": "json"}]
        write_report(report, staging / REPORT_NAME)
    return StudyResult(
        out_dir=out_dir, report=report, saliency=saliency, explanation=explanation, study=study
    )


def _report(
    study: Study,
    bundle: Bundle,
    explanation: Explanation,
    network_input: torch.Tensor,
    options: dict[str, Any],
) -> dict[str, Any]:
    summary = explanation.summary()
    names = bundle.class_names
    target = _target_summary(explanation, names)
    target.update(
        score_original=summary["score_original"][0],
        score_masked=summary["score_masked"][0],
        score_remaining=summary["score_remaining"][0],
        score_baseline=summary["score_baseline"][0],
    )
    device = options.get("device")
    return {
        "medmdm_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "research_only": "Model explanation for research; not for diagnosis.",
        "input": {
            "path": str(study.path),
            "kind": study.kind,
            "series_uid": study.series_uid,
            "modality": study.modality,
            "description": study.description,
            "size": list(study.size),
            "spacing": [round(s, 6) for s in study.spacing],
            "orientation": study.orientation,
            "channels": int(study.image.shape[0]),
        },
        "model": {**bundle.summary(), "input_shape": list(network_input.shape[1:])},
        "method": {
            "name": explanation.method,
            "options": {k: v for k, v in summary["options"].items() if k not in ("progress", "device")},
        },
        "target": target,
        "explanation": {
            "samples": summary["samples"],
            "steps": summary["steps"][0] if summary["steps"] else None,
            "levels": summary["levels"],
            "seconds": round(summary["seconds"], 4),
        },
        "device": str(device) if device is not None else "",
        "environment": package_versions(),
        "warnings": summary["warnings"],
    }


def _target_summary(explanation: Explanation, names: list[str]) -> dict[str, Any]:
    """What was explained, for one study: kind, index, its name in the bundle's metadata, how it is scored."""
    described = dict(explanation.target_description)
    kind = str(described.get("kind", "class"))
    index = int(explanation.target[0]) if explanation.target is not None else None
    target: dict[str, Any] = {"kind": kind, "index": index}
    target["name"] = (
        names[index] if index is not None and kind != "prototype" and 0 <= index < len(names) else ""
    )
    for key, value in described.items():
        if key not in ("kind", "index"):
            target[key] = value[0] if isinstance(value, list) and len(value) == 1 else value
    target.setdefault("score", "logit")
    return target


def _write_outputs(
    folder: Path,
    formats: tuple[str, ...],
    study: Study,
    saliency: torch.Tensor,
    method: str,
    bundle: Bundle,
    report: dict[str, Any],
) -> list[dict[str, str]]:
    outputs: list[dict[str, str]] = []

    def add(path: Path, kind: str) -> None:
        outputs.append({"path": path.relative_to(folder).as_posix(), "kind": kind})

    if "nifti" in formats:
        add(write_nifti_overlay(saliency, study.image, folder / "saliency.nii.gz"), "nifti-overlay")
        if study.kind != "nifti":
            add(write_nifti_image(study.image, folder / "source.nii.gz"), "nifti-image")
    target = report["target"]
    label = target["name"] or " ".join(str(v) for v in (target["kind"], target["index"]) if v is not None)
    if "dicom-pm" in formats:
        pm = write_parametric_map(
            saliency, study, folder / "saliency_pm.dcm", method=method, target_label=label
        )
        add(pm, "dicom-pm")
    if "dicom-sc" in formats:
        for path in write_secondary_capture(saliency, study, folder / "secondary_capture", method=method):
            add(path, "dicom-sc")
    if "dicom-seg" in formats:
        try:
            add(write_segmentation(saliency, study, folder / "saliency_seg.dcm", method=method), "dicom-seg")
        except InputError as error:  # a flat map has no top region: say so, write the rest
            report["warnings"].append(f"no DICOM SEG written: {error}")
    if "png" in formats:
        title = f"{bundle.name}: {method}, {label}"
        add(write_preview(study.image, saliency, folder / "preview.png", title=title), "png")
    return outputs


@contextlib.contextmanager
def _staging_folder(out_dir: Path, overwrite: bool) -> Iterator[Path]:
    """A temporary folder beside ``out_dir`` that becomes ``out_dir`` if the block succeeds."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        yield staging
        staging.chmod(0o755)
        _replace_folder(staging, out_dir, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _replace_folder(staging: Path, out_dir: Path, overwrite: bool) -> None:
    if not out_dir.exists():
        staging.rename(out_dir)
        return
    if not any(out_dir.iterdir()):
        out_dir.rmdir()
        staging.rename(out_dir)
        return
    if not overwrite:
        raise InputError(f"{out_dir}: output folder exists and is not empty (use --overwrite to replace it)")
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    old.rmdir()
    out_dir.rename(old)
    staging.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)
