"""``report.json``: the serialisation of a :class:`~medmdm.pipeline.result.StudyResult`, made here once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medmdm import __version__
from medmdm.explainers import Explanation
from medmdm.pipeline.result import ExplainedTarget, StudyResult
from medmdm.writers import write_html_report, write_report
from medmdm.writers.display import score_sentences
from medmdm.writers.report import package_versions

REPORT_NAME = "report.json"
PAGE_NAME = "report.html"
RESEARCH_ONLY = "Model explanation for research; not for diagnosis."


def study_report(result: StudyResult) -> dict[str, Any]:
    """The JSON-ready report of one explained study."""
    study, summary = result.study, result.explanation.summary()
    target = result.target
    return {
        "medmdm_version": __version__,
        "created": result.created.isoformat(timespec="seconds"),
        "research_only": RESEARCH_ONLY,
        "input": {
            "path": "" if result.settings.redact_paths else str(study.path),
            "kind": study.kind,
            "series_uid": study.series_uid,
            "modality": study.modality,
            "description": study.description,
            "size": list(study.size),
            "spacing": [round(s, 6) for s in study.spacing],
            "orientation": study.orientation,
            "channels": int(study.image.shape[0]),
            "pixel_space": not study.patient_geometry,
            "channel_files": [] if result.settings.redact_paths else [str(p) for p in study.channel_files],
        },
        "model": {**result.bundle.summary(), "input_shape": list(result.network_shape)},
        "method": {
            "name": result.explanation.method,
            "options": summary["options"],
            # What the images were perturbed towards (what baseline="auto" chose); None: no baseline.
            "baseline": summary["baselines"][0] if summary["baselines"] else None,
        },
        "target": {
            "kind": target.kind,
            "index": target.index,
            "name": target.name,
            **target.details,
            "score_original": summary["score_original"][0],
            "score_masked": summary["score_masked"][0],
            "score_remaining": summary["score_remaining"][0],
            "score_baseline": summary["score_baseline"][0],
        },
        "explanation": {
            "samples": summary["samples"],
            "steps": summary["steps"][0] if summary["steps"] else None,
            "levels": summary["levels"],
            "seconds": round(summary["seconds"], 4),
            "studies_in_call": result.studies_in_call,
        },
        "device": str(result.device),
        "environment": package_versions(),
        "warnings": list(result.warnings),
        "timings": {k: round(v, 4) for k, v in result.timings.items()},
        "outputs": [{"path": o.path, "kind": o.kind} for o in result.outputs],
        "skipped_outputs": [{"kind": s.kind, "reason": s.reason} for s in result.skipped],
        **({"sent": result.sent.summary()} if result.sent is not None else {}),
    }


def write_study_report(result: StudyResult, folder: Path) -> Path:
    """Write ``report.json`` of ``result`` into ``folder`` (atomically)."""
    return write_report(study_report(result), folder / REPORT_NAME)


def write_study_page(result: StudyResult, folder: Path) -> Path:
    """Write ``report.html`` of ``result`` into ``folder`` (atomically): the report, the study and its map."""
    return write_html_report(study_report(result), result.study, result.saliency, folder / PAGE_NAME)


def review_summary(target: ExplainedTarget, explanation: Explanation) -> list[str]:
    """The target and the scores of the first image of ``explanation`` in words, for the preview."""
    summary = explanation.summary()
    scores = [summary[f"score_{k}"][0] for k in ("original", "masked", "remaining", "baseline")]
    named = f" ({target.kind} {target.index})" if target.name and target.index is not None else ""
    lines = [f"Target: {target.label}{named}"]
    if all(isinstance(s, int | float) for s in scores):
        lines += score_sentences(*scores, score=str(target.details.get("score", "logit")))
    return lines
