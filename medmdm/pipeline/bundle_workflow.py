"""Explanation as a MONAI Bundle workflow.

medmdm ships a config (:data:`EXPLAIN_CONFIG`) that is read after a bundle's own inference config::

    python -m monai.bundle run \
        --config_file "['DIR/configs/inference.json','<EXPLAIN_CONFIG>']" \
        --bundle_root DIR --study study.dcm --output_dir out

Its ``run`` step builds the bundle's ``network_def`` and ``preprocessing`` as MONAI parsed them, loads the
weights as :func:`medmdm.bundle.load_bundle` does, and calls :func:`medmdm.pipeline.explain_study`, so the
outputs are those of ``medmdm explain study.dcm --bundle DIR --out out``. Settings are overridden with
``--medmdm#method dm``, ``--medmdm#options#seed 0``, ``--medmdm#formats nifti,png,json``,
``--medmdm#target 1``, ``--medmdm#overwrite true``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medmdm.bundle.loader import assemble_bundle

EXPLAIN_CONFIG = Path(__file__).resolve().parent / "configs" / "explain.json"
SETTINGS = ("method", "target", "options", "formats", "device", "overwrite", "allow_random_weights")


def explain_in_bundle_run(
    study: str,
    bundle_root: str,
    network: torch.nn.Module | None,
    preprocessing: Any,
    output_dir: str,
    settings: dict[str, Any] | None = None,
    series_uid: str | None = None,
) -> dict[str, Any]:
    """Explain ``study`` with the parsed bundle and write the outputs into ``output_dir``.

    Parameters
    ----------
    study : str
        DICOM file, DICOM series folder or NIfTI file (``--study``).
    bundle_root : str
        The bundle folder.
    network : torch.nn.Module or None
        The bundle's ``network_def``; None uses ``models/model.ts``.
    preprocessing : callable
        The bundle's ``preprocessing``.
    output_dir : str
        Output folder (``--output_dir``).
    settings : dict, optional
        ``method``, ``target``, ``options``, ``formats``, ``device``, ``overwrite``, ``allow_random_weights``.
    series_uid : str, optional
        The series to read from a folder holding several.

    Returns
    -------
    dict
        The report written to ``report.json``.
    """
    from medmdm.errors import OptionError
    from medmdm.pipeline import explain_study

    settings = dict(settings or {})
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise OptionError(f"unknown medmdm settings {', '.join(unknown)}; valid: {', '.join(SETTINGS)}")
    if not study:
        raise OptionError("no study given: add --study PATH")
    bundle = assemble_bundle(
        bundle_root,
        network,
        preprocessing,
        allow_random_weights=bool(settings.get("allow_random_weights", False)),
    )
    result = explain_study(
        study,
        bundle,
        output_dir,
        method=settings.get("method", "hdm"),
        target=settings.get("target"),
        options=settings.get("options") or {},
        formats=settings.get("formats"),
        device=settings.get("device", "auto"),
        series_uid=series_uid,
        overwrite=bool(settings.get("overwrite", False)),
    )
    return result.report
