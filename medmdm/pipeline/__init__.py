"""Explaining studies: the stages (``read`` -> ``prepare`` -> ``explain`` -> ``map_back`` -> ``write``) and
their composition for one study, :func:`explain_study`, which the CLI, ``batch``, ``evaluate`` and the
MONAI Bundle workflow share.

Examples
--------
>>> from medmdm.pipeline import explain_study  # doctest: +SKIP
>>> result = explain_study("study.dcm", "bundle/", "out/", options={"seed": 0})  # doctest: +SKIP
>>> result.target.label, [o.path for o in result.outputs]  # doctest: +SKIP
"""

from __future__ import annotations

from medmdm.pipeline.output_folder import check_out_dir
from medmdm.pipeline.report import REPORT_NAME, study_report
from medmdm.pipeline.result import ExplainedTarget, Output, StudyResult
from medmdm.pipeline.stages import PreparedStudy, explain, map_back, prepare, read, write
from medmdm.pipeline.study import (
    explain_prepared,
    explain_study,
    explain_together,
    make_explainer,
    write_explained,
)

__all__ = [
    "REPORT_NAME",
    "ExplainedTarget",
    "Output",
    "PreparedStudy",
    "StudyResult",
    "check_out_dir",
    "explain",
    "explain_prepared",
    "explain_study",
    "explain_together",
    "make_explainer",
    "map_back",
    "prepare",
    "read",
    "study_report",
    "write",
    "write_explained",
]
