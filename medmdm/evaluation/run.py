"""Running explainers over cases and scoring every map: the engine of ``medmdm evaluate`` and of
``benchmarks/quality.py``.

Each case goes through the stages inference uses (:mod:`medmdm.pipeline.stages`): the study is read, the
bundle's preprocessing makes the network input, the explainer explains it, and the map is mapped back onto
the study's grid. Localisation is scored there against the mask; faithfulness on the network input (see
:mod:`medmdm.evaluation.scores`). A case that fails is recorded with its one-line error, and the others go
on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.data import MetaTensor
from torch import nn

from medmdm.bundle import Bundle
from medmdm.devices import resolve_device
from medmdm.errors import failure_line, failure_text
from medmdm.evaluation.cases import EvaluationCase, load_mask
from medmdm.evaluation.scores import (
    faithfulness_scores,
    lesion_labels,
    localisation_scores,
    min_lesion_evidence,
)
from medmdm.explainers.base import Explainer, frozen, model_device
from medmdm.explainers.explanation import Explanation
from medmdm.explainers.perturbation import BaselineKind
from medmdm.geometry import map_to_network
from medmdm.io import Study
from medmdm.pipeline import PreparedStudy, explain, make_explainer, map_back, prepare, read
from medmdm.settings import Settings

Row = dict[str, Any]


@dataclass
class PreparedCase:
    """A case ready to explain.

    Attributes
    ----------
    name : str
        Shown in the rows.
    prepared : PreparedStudy
        The study as read and its network input; the study's grid is where localisation is scored.
    mask : torch.Tensor
        (*source_spatial) bool lesion mask on the study's grid.
    target : int or None
        Class to explain; None for the predicted class.
    """

    name: str
    prepared: PreparedStudy
    mask: torch.Tensor
    target: int | None = None

    @property
    def study(self) -> Study:
        """The study as read."""
        return self.prepared.study

    @property
    def network_input(self) -> MetaTensor:
        """(1, C, *spatial) the bundle's preprocessing of the study, with its affine."""
        return self.prepared.network_input

    @property
    def lesions(self) -> int:
        """Number of lesions (connected components of the mask)."""
        return lesion_labels(self.mask)[1]


@dataclass
class ScoredBatch:
    """What :func:`explain_and_score` returns for a batch of cases explained by one method.

    Attributes
    ----------
    rows : list of dict
        One row per case: ``case``, ``method``, ``status`` (``"ok"``), ``target``, ``lesions``, every
        metric, ``seconds`` and ``samples`` (the batch's, divided by the number of cases).
    explanation : Explanation
        The explainer's record of the batch, on the network grid.
    source_maps : list of torch.Tensor
        Each case's map on its study's grid, ``(*source_spatial)``.
    """

    rows: list[Row]
    explanation: Explanation
    source_maps: list[torch.Tensor]


def prepare_case(case: EvaluationCase, bundle: Bundle) -> PreparedCase:
    """Read a case's study and mask and run the bundle's preprocessing.

    Raises
    ------
    InputError
        An unreadable study or mask, a mask off the study's grid, a study the bundle does not take, a failing
        preprocessing.
    """
    study = read(case.study)
    mask = load_mask(case.mask, study)
    return PreparedCase(case.name, prepare(study, bundle), mask, case.target)


def explain_and_score(
    explainer: Explainer,
    cases: Sequence[PreparedCase],
    method: str = "",
    deletion_baseline: BaselineKind = "mean",
) -> ScoredBatch:
    """Explain a batch of cases (same network input shape) with one explainer and score every map.

    Parameters
    ----------
    explainer : Explainer
        The method, made for the bundle's network.
    cases : sequence of PreparedCase
        Explained together, as one batch.
    method : str
        The name written in the rows (default: the explainer's registry name).
    deletion_baseline : {"mean", "blur", "constant"}
        What the deletion curve replaces voxels with (see :func:`faithfulness_scores`).

    Returns
    -------
    ScoredBatch
    """
    model = explainer.model
    prepared = [case.prepared for case in cases]
    x = torch.cat([p.network_input.as_tensor().float() for p in prepared])
    explanation = explain(explainer, prepared, _targets(model, x, cases))
    targets = explanation.target.tolist()
    source_maps = map_back(explanation, prepared)
    with frozen(model, explainer.device):  # score on the explainer's device, then move the model back
        faithfulness = faithfulness_scores(
            model, x, explanation.map, targets, deletion_baseline=deletion_baseline
        )
        evidence = [
            _min_lesion_evidence(model, case, targets[i], deletion_baseline) for i, case in enumerate(cases)
        ]
    count = len(cases)
    rows = []
    for i, case in enumerate(cases):
        localisation = localisation_scores(source_maps[i][None, None], case.mask[None])
        rows.append(
            {
                "case": case.name,
                "method": method or explanation.method,
                "status": "ok",
                "target": int(targets[i]),
                "lesions": case.lesions,
                **{name: float(values[0]) for name, values in localisation.items()},
                **{name: float(values[i]) for name, values in faithfulness.items()},
                "min_lesion_evidence": evidence[i],
                "seconds": explanation.seconds / count,
                "samples": explanation.samples / count,
            }
        )
    return ScoredBatch(rows, explanation, source_maps)


def _min_lesion_evidence(
    model: nn.Module, case: PreparedCase, target: int, deletion_baseline: BaselineKind
) -> float:
    """:func:`min_lesion_evidence` of a case, its lesions resampled onto the network grid."""
    labels, count = lesion_labels(case.mask)
    if count < 2:
        return float("nan")
    network_input, source = case.prepared.network_input, case.prepared.study.image
    lesions = torch.stack(
        [
            map_to_network(torch.from_numpy(labels == label), network_input[0], source)
            for label in range(1, count + 1)
        ]
    )
    x = network_input.as_tensor().float().to(model_device(model) or "cpu")
    return min_lesion_evidence(model, x, lesions, target, deletion_baseline)


def _targets(model: nn.Module, x: torch.Tensor, cases: Sequence[PreparedCase]) -> list[int] | None:
    """Each case's class; the predicted class where a case gives none (None when none gives one)."""
    wanted = [case.target for case in cases]
    if all(t is None for t in wanted):
        return None
    if any(t is None for t in wanted):
        with frozen(model), torch.no_grad():
            predicted = model(x).argmax(1).tolist()
        wanted = [p if t is None else t for t, p in zip(wanted, predicted, strict=True)]
    return wanted


def iter_evaluation(
    cases: Sequence[EvaluationCase],
    bundle: Bundle,
    settings: Sequence[Settings],
    *,
    log: Callable[[str], None] | None = None,
) -> Iterator[Row]:
    """Explain every case with every method, one case at a time, and yield each row as it is scored.

    A case that fails (an unreadable study or mask, a study the bundle does not take, a model that fails on
    it) gives one ``"failed"`` row per method with the one-line ``error``, and the next case goes on.

    Parameters
    ----------
    cases : sequence of EvaluationCase
        From :func:`medmdm.evaluation.find_cases`.
    bundle : Bundle
        The network and its preprocessing.
    settings : sequence of Settings
        One per method (see :func:`medmdm.settings.settings_for_methods`); their device is used.
    log : callable, optional
        Receives a line after each case and method.

    Raises
    ------
    OptionError, ModelError
        A method that cannot be made for the bundle's network, before any case is read.
    """
    made = [
        (each, make_explainer(each, bundle, resolve_device(each.device)), _deletion_baseline(each, bundle))
        for each in settings
    ]
    for number, case in enumerate(cases, start=1):
        where = f"[{number}/{len(cases)}] {case.name}"
        try:
            prepared = prepare_case(case, bundle)
        except Exception as error:  # a case that cannot be read is recorded, and the others go on
            for method_settings, _, _ in made:
                yield _failed(case, method_settings.method, error)
            if log is not None:
                log(f"{where}: failed: {failure_text(error)}")
            continue
        for method_settings, explainer, deletion_baseline in made:
            method = method_settings.method
            try:
                row = explain_and_score(explainer, [prepared], method, deletion_baseline).rows[0]
            except Exception as error:  # recorded in the row; the run goes on
                row = _failed(case, method, error)
            if log is not None and row["status"] == "ok":
                cost = f"{row['seconds']:.1f} s, {row['samples']:.0f} samples"
                log(f"{where}: {method}, class {row['target']}, {cost}")
            elif log is not None:
                log(f"{where}: {method}, failed: {row['error']}")
            yield row


def evaluate_cases(
    cases: Sequence[EvaluationCase],
    bundle: Bundle,
    settings: Sequence[Settings],
    *,
    log: Callable[[str], None] | None = None,
) -> list[Row]:
    """Every row of :func:`iter_evaluation`, as a list.

    Returns
    -------
    list of dict
        One row per case and method (see :class:`ScoredBatch`; failed cases have ``status`` ``"failed"``
        and an ``error``).
    """
    return list(iter_evaluation(cases, bundle, settings, log=log))


def _deletion_baseline(settings: Settings, bundle: Bundle) -> BaselineKind:
    """What the deletion curve removes with: the method's baseline, else the bundle's, else the mean."""
    return settings.options.get("baseline", bundle.explain_options.get("baseline", "mean"))


def _failed(case: EvaluationCase, method: str, error: BaseException) -> Row:
    message = failure_line(error, case.study)
    return {"case": case.name, "method": method, "status": "failed", "error": message, "target": case.target}
