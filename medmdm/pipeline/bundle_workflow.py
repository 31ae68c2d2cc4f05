"""Explanation as a MONAI Bundle workflow.

medmdm ships a config (:data:`EXPLAIN_CONFIG`) that is read after a bundle's own inference config::

    python -m monai.bundle run \
        --config_file "['DIR/configs/inference.json','<EXPLAIN_CONFIG>']" \
        --bundle_root DIR --study study.dcm --output_dir out

Its ``run`` step builds the bundle's ``network_def``, ``preprocessing``, ``inferer`` and ``postprocessing``
as MONAI parsed them (a config without an ``inferer`` or ``postprocessing`` names none with
``--inferer '$None'``), loads the weights as :func:`medmdm.bundle.load_bundle` does, and calls
:func:`medmdm.pipeline.explain_study`, so the outputs are those of
``medmdm explain study.dcm --bundle DIR --out out``. The ``medmdm`` section holds
:class:`medmdm.settings.Settings` (``method``, ``options``, ``formats``, ``device``, ``target``) and
``overwrite`` and ``allow_random_weights``; override them with ``--medmdm#method dm``,
``--medmdm#options#seed 0``, ``--medmdm#formats nifti,png,json``, ``--medmdm#target 1``,
``--medmdm#overwrite true``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from medmdm.bundle.loader import assemble_bundle
from medmdm.errors import OptionError
from medmdm.pipeline.report import study_report
from medmdm.pipeline.study import explain_study
from medmdm.settings import Settings

EXPLAIN_CONFIG = Path(__file__).resolve().parent / "configs" / "explain.json"
RUN_SETTINGS = ("overwrite", "allow_random_weights")


def explain_in_bundle_run(
    study: str,
    bundle_root: str,
    network: torch.nn.Module | None,
    preprocessing: Any,
    output_dir: str,
    settings: dict[str, Any] | None = None,
    series_uid: str | None = None,
    inferer: Any = None,
    postprocessing: Any = None,
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
        The ``medmdm`` section: :class:`~medmdm.settings.Settings` fields, ``overwrite`` and
        ``allow_random_weights``.
    series_uid : str, optional
        The series to read from a folder holding several.
    inferer : monai.inferers.Inferer, optional
        The bundle's ``inferer``: the network runs through it, as in ``medmdm explain --bundle``.
    postprocessing : callable, optional
        The bundle's ``postprocessing``: what a region is (its saving and inverting steps are not run).

    Returns
    -------
    dict
        The report written to ``report.json``.
    """
    section = dict(settings or {})
    run = {name: bool(section.pop(name, False)) for name in RUN_SETTINGS}
    explain_settings = Settings.from_mapping(section, where="medmdm settings (--medmdm#...)")
    if not study:
        raise OptionError("no study given: add --study PATH")
    bundle = assemble_bundle(
        bundle_root,
        network,
        preprocessing,
        allow_random_weights=run["allow_random_weights"],
        inferer=inferer,
        postprocessing=postprocessing,
    )
    result = explain_study(
        study,
        bundle,
        output_dir,
        settings=explain_settings,
        series_uid=series_uid,
        overwrite=run["overwrite"],
    )
    return study_report(result)
