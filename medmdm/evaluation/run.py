"""Running explainers over cases and scoring every map: the engine of ``medmdm evaluate`` and of
``benchmarks/quality.py``.

Each case goes the way inference does (:mod:`medmdm.pipeline`): the study is read, the bundle's
preprocessing makes the network input, the explainer explains it, and the map is mapped back onto
the study's grid. Localisation is scored there against the mask; faithfulness on the network input
(see :mod:`medmdm.evaluation.scores`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from monai.data import MetaTensor
from torch import nn

from medmdm import explainers
from medmdm.bundle import Bundle
from medmdm.errors import InputError, ModelError
from medmdm.evaluation.cases import EvaluationCase, load_mask
from medmdm.evaluation.scores import faithfulness_scores, lesion_labels, localisation_scores
from medmdm.explainers.base import Explainer, Explanation, accepted_options, frozen
from medmdm.explainers.perturbation import BaselineKind
from medmdm.geometry import map_to_source
from medmdm.io import Study, load_study

Row = dict[str, Any]


@dataclass
class PreparedCase:
    """A case ready to explain.

    Attributes
    ----------
    name : str
        Shown in the rows.
    study : Study
        The study as read; its grid is where localisation is scored.
    network_input : monai.data.MetaTensor
        (1, C, *spatial) the bundle's preprocessing of the study, with its affine.
    mask : torch.Tensor
        (*source_spatial) bool lesion mask on the study's grid.
    target : int or None
        Class to explain; None for the predicted class.
    """

    name: str
    study: Study
    network_input: MetaTensor
    mask: torch.Tensor
    target: int | None = None

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
        One row per case: ``case``, ``method``, ``target``, ``lesions``, every metric, ``seconds``
        and ``samples`` (the batch's, divided by the number of cases).
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
        An unreadable study or mask, a mask off the study's grid, a failing preprocessing.
    """
    study = load_study(case.study)
    mask = load_mask(case.mask, study)
    return PreparedCase(case.name, study, bundle.preprocess(study), mask, case.target)


def method_explainer(method: str, model: nn.Module, options: dict[str, Any]) -> Explainer:
    """``explainers.create(method, model, ...)`` with those of ``options`` the method takes.

    ``seed``, ``device`` and the like go to every method; ``steps`` only to the methods that have
    a step budget (the mask optimisers, and the integration points of integrated gradients).
    """
    return explainers.create(method, model, **accepted_options(method, options))


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
    x = torch.cat([case.network_input.as_tensor().float() for case in cases])
    explanation = explainer.explain(x, target=_targets(model, x, cases))
    targets = explanation.target.tolist()
    source_maps = [
        map_to_source(explanation.map[i], case.network_input[0], case.study.image)
        for i, case in enumerate(cases)
    ]
    with frozen(model, explainer.device):  # score on the explainer's device, then move the model back
        faithfulness = faithfulness_scores(
            model, x, explanation.map, targets, deletion_baseline=deletion_baseline
        )
    count = len(cases)
    rows = []
    for i, case in enumerate(cases):
        localisation = localisation_scores(source_maps[i][None, None], case.mask[None])
        rows.append(
            {
                "case": case.name,
                "method": method or explanation.method,
                "target": int(targets[i]),
                "lesions": case.lesions,
                **{name: float(values[0]) for name, values in localisation.items()},
                **{name: float(values[i]) for name, values in faithfulness.items()},
                "seconds": explanation.seconds / count,
                "samples": explanation.samples / count,
            }
        )
    return ScoredBatch(rows, explanation, source_maps)


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


def evaluate_cases(
    cases: Sequence[EvaluationCase],
    bundle: Bundle,
    methods: Sequence[str],
    *,
    options: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> list[Row]:
    """Explain every case with every method, one case at a time, and score each map.

    Parameters
    ----------
    cases : sequence of EvaluationCase
        From :func:`medmdm.evaluation.find_cases`.
    bundle : Bundle
        The classifier and its preprocessing.
    methods : sequence of str
        Registered explainers.
    options : dict, optional
        Options for every method that takes them (``seed``, ``steps``, ``device``...).
    log : callable, optional
        Receives a line after each case and method.

    Returns
    -------
    list of dict
        One row per case and method (see :class:`ScoredBatch`).

    Raises
    ------
    OptionError
        An unknown method or option, before any case is read.
    InputError
        A case that cannot be read, named in the message.
    ModelError
        The bundle's network fails, or a method cannot explain it.
    """
    chosen = {**bundle.explain_options, **(options or {})}
    made = {method: method_explainer(method, bundle.network, chosen) for method in methods}
    deletion_baseline = chosen.get("baseline", "mean")
    rows: list[Row] = []
    for number, case in enumerate(cases, start=1):
        prepared = prepare_case(case, bundle)
        for method, explainer in made.items():
            try:
                batch = explain_and_score(explainer, [prepared], method, deletion_baseline)
            except (ModelError, InputError) as error:
                raise type(error)(f"{case.study}: {method}: {error}") from error
            rows.extend(batch.rows)
            if log is not None:
                row = batch.rows[0]
                log(
                    f"[{number}/{len(cases)}] {case.name}: {method}, class {row['target']}, "
                    f"{row['seconds']:.1f} s, {row['samples']:.0f} samples"
                )
    return rows
