"""Evaluating explanations against lesion masks: cases, metrics per case, summaries.

``medmdm evaluate`` and ``benchmarks/quality.py`` use it the same way::

    from medmdm.bundle import load_bundle
    from medmdm.evaluation import METRICS, evaluate_cases, find_cases, summarise
    from medmdm.settings import settings_for_methods

    settings = settings_for_methods(["hdm", "gradcam"], {"seed": 0})
    rows = evaluate_cases(find_cases("cases/"), load_bundle("bundle/"), settings)
    summary = summarise([row for row in rows if row["status"] == "ok"], METRICS)

Localisation metrics are computed on the study's own grid against its mask, after the map is mapped
back through the affines; faithfulness metrics on the network input, the model's own grid (see
:mod:`medmdm.evaluation.scores`). A case without a lesion has NaN localisation metrics.
"""

from __future__ import annotations

from medmdm.evaluation.cases import EvaluationCase, find_cases, load_mask, read_manifest
from medmdm.evaluation.run import (
    PreparedCase,
    ScoredBatch,
    evaluate_cases,
    explain_and_score,
    iter_evaluation,
    prepare_case,
)
from medmdm.evaluation.scores import (
    COST_METRICS,
    DIRECTION,
    EVIDENCE_METRICS,
    FAITHFULNESS_METRICS,
    LOCALISATION_METRICS,
    METRICS,
    faithfulness_scores,
    lesion_labels,
    localisation_scores,
    min_lesion_evidence,
)
from medmdm.evaluation.summary import RowLog, format_table, format_value, summarise, write_rows

__all__ = [
    "COST_METRICS",
    "DIRECTION",
    "EVIDENCE_METRICS",
    "FAITHFULNESS_METRICS",
    "LOCALISATION_METRICS",
    "METRICS",
    "EvaluationCase",
    "PreparedCase",
    "RowLog",
    "ScoredBatch",
    "evaluate_cases",
    "explain_and_score",
    "faithfulness_scores",
    "find_cases",
    "format_table",
    "format_value",
    "iter_evaluation",
    "lesion_labels",
    "load_mask",
    "localisation_scores",
    "min_lesion_evidence",
    "prepare_case",
    "read_manifest",
    "summarise",
    "write_rows",
]
