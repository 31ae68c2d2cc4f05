"""Explaining one study with one bundle, from the study's path to its output folder: the stages of
:mod:`medmdm.pipeline.stages` composed.

Outputs are written into a hidden staging folder beside ``out_dir`` that is renamed to ``out_dir`` only when
everything is written (:mod:`medmdm.pipeline.output_folder`): a failed study leaves no output folder behind.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from medmdm import explainers
from medmdm.bundle import Bundle, demo_bundle_path, load_bundle
from medmdm.devices import resolve_device
from medmdm.errors import InputError, OptionError
from medmdm.explainers import Explainer, Explanation, ProgressEvent
from medmdm.io import Study
from medmdm.pipeline.output_folder import check_out_dir, staging_folder
from medmdm.pipeline.report import (
    PAGE_NAME,
    REPORT_NAME,
    review_summary,
    write_study_page,
    write_study_report,
)
from medmdm.pipeline.result import Output, StudyResult
from medmdm.pipeline.stages import (
    PreparedStudy,
    bounded,
    explain,
    explained_target,
    focus,
    map_back,
    needs_focus,
    prepare,
    read,
    send_outputs,
    write,
)
from medmdm.settings import Settings


def make_explainer(
    settings: Settings,
    bundle: Bundle,
    device: torch.device,
    progress: Callable[[ProgressEvent], None] | None = None,
) -> Explainer:
    """The settings' method for the bundle's network run through its inferer, with the bundle's recommended
    options under the user's."""
    options = settings.explainer_options(bundle.explain_options)
    return explainers.create(settings.method, bundle.model, options, device=device, progress=progress)


def explain_study(
    study: str | Path | Sequence[str | Path] | Study,
    bundle: Bundle | str | Path | None,
    out_dir: str | Path,
    *,
    settings: Settings | None = None,
    series_uid: str | None = None,
    study_uid: str | None = None,
    bundle_config: Sequence[str | Path] | None = None,
    allow_random_weights: bool = False,
    region_mask: str | Path | None = None,
    overwrite: bool = False,
    progress: Callable[[ProgressEvent], None] | None = None,
    **setting_values: Any,
) -> StudyResult:
    """Explain a study with a bundle's network and write the outputs into ``out_dir``.

    Parameters
    ----------
    study : path, sequence of paths, or Study
        A DICOM file, a DICOM series folder, a NIfTI file, a PNG/JPEG/TIFF image, several co-registered
        files (the study's channels, in order), or a study already read.
    bundle : Bundle, path or None
        A loaded bundle, a bundle folder, or None for the demo bundle that fits the study (2D or 3D).
    out_dir : path
        Output folder; it must not hold files unless ``overwrite``.
    settings : Settings, optional
        Method, options, formats, device, target; default ``Settings(**setting_values)``.
    series_uid : str, optional
        The series to read from a folder holding several.
    study_uid : str, optional
        The study to read when ``study`` is a PACS URL (``dicomweb://...``, ``dicom://...``; see
        :mod:`medmdm.pacs`).
    bundle_config : sequence of path, optional
        Config files of a bundle folder to read instead of ``configs/inference.json``.
    allow_random_weights : bool
        Load a bundle folder without weights with the network's random weights (smoke tests; the report
        says so).
    region_mask : path, optional
        A mask on the study's grid (nonzero inside): the region a ``region:K`` target explains, instead of
        the one the bundle predicts.
    overwrite : bool
        Replace an existing, non-empty ``out_dir``.
    progress : callable, optional
        Receives the explainer's :class:`~medmdm.explainers.ProgressEvent`.
    **setting_values
        ``method``, ``options``, ``formats``, ``device``, ``target`` (see :class:`~medmdm.settings.Settings`),
        when ``settings`` is not given.

    Returns
    -------
    StudyResult
    """
    started = time.perf_counter()
    if settings is None:
        settings = Settings(**setting_values)
    elif setting_values:
        raise OptionError(f"give settings or {', '.join(sorted(setting_values))}, not both")
    out_dir = check_out_dir(out_dir, overwrite)
    timings: dict[str, float] = {}
    if bundle is not None and not isinstance(bundle, Bundle):
        with _timed(timings, "load_bundle"):
            bundle = load_bundle(
                bundle, config_files=bundle_config, allow_random_weights=allow_random_weights
            )
    with _timed(timings, "read"):
        study = study if isinstance(study, Study) else read(study, series_uid, study_uid=study_uid)
        mask = read(region_mask) if region_mask is not None else None
    settings.formats_for(study)
    if bundle is None:
        with _timed(timings, "load_bundle"):
            bundle = load_bundle(demo_bundle_path(len(study.size)))
    device = resolve_device(settings.device)
    explainer = make_explainer(settings, bundle, device, progress)
    with _timed(timings, "preprocess"):
        prepared = prepare(study, bundle)
    return explain_prepared(
        prepared,
        explainer,
        settings,
        out_dir,
        overwrite=overwrite,
        timings=timings,
        started=started,
        region_mask=mask,
    )


def explain_prepared(
    prepared: PreparedStudy,
    explainer: Explainer,
    settings: Settings,
    out_dir: Path,
    *,
    overwrite: bool = False,
    timings: dict[str, float] | None = None,
    started: float | None = None,
    region_mask: Study | None = None,
) -> StudyResult:
    """Explain a prepared study, map the map back and write every output and ``report.json`` into
    ``out_dir``: :func:`explain_together` for one study, then :func:`write_explained`.

    Parameters
    ----------
    prepared : PreparedStudy
        From :func:`~medmdm.pipeline.stages.prepare`.
    explainer : Explainer
        From :func:`make_explainer` for the study's bundle.
    settings : Settings
        Target and formats (the method and options are the explainer's).
    out_dir : Path
        The study's output folder.
    overwrite : bool
        Replace an existing, non-empty ``out_dir``.
    timings : dict, optional
        Seconds of the stages already run (``read``, ``preprocess``...), reported with the others.
    started : float, optional
        ``time.perf_counter()`` when the study started; default now.
    region_mask : Study, optional
        The region a ``region:K`` target explains, on the study's grid (see
        :func:`~medmdm.pipeline.stages.focus`).
    """
    started = time.perf_counter() if started is None else started
    timings = dict(timings or {})
    settings.formats_for(prepared.study)  # a format the study cannot carry is refused before the model runs
    with _timed(timings, "explain"):
        [(prepared, explanation)] = explain_together([prepared], explainer, settings.target, region_mask)
    device = explainer.device or torch.device("cpu")
    return write_explained(
        prepared,
        explanation,
        settings,
        out_dir,
        device=device,
        overwrite=overwrite,
        timings=timings,
        started=started,
    )


def explain_together(
    prepared: Sequence[PreparedStudy],
    explainer: Explainer,
    target: Any = None,
    region_mask: Study | None = None,
) -> list[tuple[PreparedStudy, Explanation]]:
    """Explain prepared studies of one bundle and network input shape in one explainer call.

    Each image's map is the one it gets alone (the explainers' contract), so studies may share a call
    (``medmdm batch --studies-per-call``) without changing their outputs.

    Parameters
    ----------
    prepared : sequence of PreparedStudy
        The studies, from :func:`~medmdm.pipeline.stages.prepare`.
    explainer : Explainer
        From :func:`make_explainer` for their bundle.
    target : optional
        What to explain in every study (see :func:`medmdm.explainers.as_target`).
    region_mask : Study, optional
        The region a ``region:K`` target explains, for one study (see
        :func:`~medmdm.pipeline.stages.focus`).

    Returns
    -------
    list of (PreparedStudy, Explanation)
        Each study as explained (a region target crops its network input) and its own explanation
        (:meth:`~medmdm.explainers.Explanation.split`: the call's samples and seconds divided evenly).

    Raises
    ------
    InputError
        Several studies with a target found in each study (:func:`~medmdm.pipeline.stages.needs_focus`).
    """
    if len(prepared) > 1 and needs_focus(target):
        raise InputError(f"a {target} target is found in each study: explain its studies one at a time")
    focused = [focus(p, target, region_mask) for p in prepared]
    studies = [study for study, _ in focused]
    explanation = explain(bounded(explainer, studies[0]), studies, focused[0][1])
    return list(zip(studies, explanation.split(), strict=True))


def write_explained(
    prepared: PreparedStudy,
    explanation: Explanation,
    settings: Settings,
    out_dir: Path,
    *,
    device: torch.device,
    overwrite: bool = False,
    timings: dict[str, float] | None = None,
    started: float | None = None,
    studies_in_call: int = 1,
) -> StudyResult:
    """Map one study's explanation back onto its grid and write every output and ``report.json`` into
    ``out_dir`` (through a staging folder renamed at the end), and send them where the settings say.

    Parameters
    ----------
    prepared : PreparedStudy
        The study as explained (from :func:`explain_together`).
    explanation : Explanation
        Its own explanation, a batch of one.
    settings : Settings
        Target and formats.
    out_dir : Path
        The study's output folder.
    device : torch.device
        Where the explainer computed, for the report.
    overwrite : bool
        Replace an existing, non-empty ``out_dir``.
    timings : dict, optional
        Seconds of the stages already run (``explain``...), reported with the others.
    started : float, optional
        ``time.perf_counter()`` when the study started; default now.
    studies_in_call : int
        Studies explained in the explainer call that explained this one (reported).
    """
    started = time.perf_counter() if started is None else started
    timings = dict(timings or {})
    study, bundle = prepared.study, prepared.bundle
    formats = settings.formats_for(study)
    with _timed(timings, "map_back"):
        saliency = map_back(explanation, [prepared])[0]
    target = explained_target(explanation, bundle.class_names)
    clock = time.perf_counter()
    with staging_folder(out_dir, overwrite) as staging:
        method, model_name = explanation.method, bundle.name
        outputs, skipped = write(
            staging,
            formats,
            study,
            saliency,
            method=method,
            target=target,
            model_name=model_name,
            summary=review_summary(target, explanation),
        )
        if "html" in formats:
            outputs.append(Output(PAGE_NAME, "html"))
        timings["write"] = time.perf_counter() - clock
        sent = send_outputs(settings.send_to, staging, outputs) if settings.send_to else None
        if sent is not None:
            timings["send"] = sent.seconds
        timings["total"] = time.perf_counter() - started
        result = StudyResult(
            out_dir=staging,
            study=study,
            bundle=bundle,
            settings=settings,
            device=device,
            network_shape=tuple(prepared.network_input.shape[1:]),
            explanation=explanation,
            target=target,
            saliency=saliency,
            created=datetime.now(timezone.utc),
            outputs=[*outputs, Output(REPORT_NAME, "json")],
            skipped=skipped,
            warnings=[
                *settings.notes,
                *study.notes,
                *bundle.notes,
                *prepared.notes,
                *explanation.warnings,
                *(str(s) for s in skipped),
            ],
            timings=timings,
            sent=sent,
            studies_in_call=studies_in_call,
        )
        write_study_report(result, staging)
        if "html" in formats:
            write_study_page(result, staging)
    return replace(result, out_dir=out_dir)


@contextlib.contextmanager
def _timed(timings: dict[str, float], stage: str) -> Iterator[None]:
    clock = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - clock
