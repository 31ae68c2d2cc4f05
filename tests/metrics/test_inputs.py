"""Clear errors for wrong shapes and options, and the public surface of medmdm.metrics."""

from __future__ import annotations

import pytest
import torch

from medmdm import InputError, OptionError, metrics
from medmdm.testing import BoxModel


def test_public_names_and_directions() -> None:
    for name in metrics.__all__:
        assert hasattr(metrics, name)
    assert set(metrics.DIRECTION.values()) == {"higher", "lower"}
    assert metrics.DIRECTION["deletion_auc"] == "lower" and metrics.DIRECTION["insertion_auc"] == "higher"
    with pytest.raises(TypeError):
        metrics.DIRECTION["deletion_auc"] = "higher"  # type: ignore[index]


@pytest.mark.parametrize(
    "shape",
    [(2, 2, 16, 16), (1, 1, 16, 16), (2, 1, 16, 15), (2, 16, 16), (2, 1, 16, 16, 16)],
    ids=["channels", "batch", "spatial", "no-channel", "3d-for-2d"],
)
def test_model_metrics_reject_maps_that_do_not_match_x(shape: tuple[int, ...]) -> None:
    model, x = BoxModel(((4, 8), (4, 8))), torch.rand(2, 1, 16, 16)
    for call in (
        lambda: metrics.deletion_curve(model, x, torch.rand(shape)),
        lambda: metrics.insertion_auc(model, x, torch.rand(shape)),
        lambda: metrics.average_drop_increase(model, x, torch.rand(shape)),
    ):
        with pytest.raises(InputError, match="saliency"):
            call()


def test_other_input_and_option_errors() -> None:
    model, x, saliency = BoxModel(((4, 8), (4, 8))), torch.rand(2, 1, 16, 16), torch.rand(2, 1, 16, 16)
    with pytest.raises(InputError, match=r"saliency must be a torch\.Tensor"):
        metrics.deletion_auc(model, x, saliency.numpy())
    with pytest.raises(InputError, match="floating-point"):
        metrics.deletion_auc(model, x, saliency > 0.5)
    with pytest.raises(InputError, match="NaN"):
        metrics.deletion_auc(model, x, saliency / 0 * 0)
    with pytest.raises(InputError, match="x must have shape"):
        metrics.deletion_auc(model, x[0], saliency)
    with pytest.raises(OptionError, match="steps"):
        metrics.deletion_auc(model, x, saliency, steps=0)
    with pytest.raises(OptionError, match="max_batch"):
        metrics.deletion_auc(model, x, saliency, max_batch=0)
    with pytest.raises(OptionError, match="baseline"):
        metrics.deletion_auc(model, x, saliency, baseline="zero")  # type: ignore[arg-type]


def test_localisation_rejects_mismatched_regions_and_bad_options(dims: int) -> None:
    spatial = [8] * dims
    saliency = torch.rand(2, 1, *spatial)
    region = torch.zeros(2, *spatial, dtype=torch.bool)
    for wrong in (region[:1], region[..., :-1], region[:, None, None]):
        for metric in (metrics.pointing_game, metrics.energy_pointing_game, metrics.overlap):
            with pytest.raises(InputError, match="region has shape"):
                metric(saliency, wrong)
    with pytest.raises(InputError, match=r"saliency must have shape"):
        metrics.pointing_game(saliency[:, 0], region)
    with pytest.raises(InputError, match="non-negative"):
        metrics.energy_pointing_game(-saliency, region)
    with pytest.raises(OptionError, match="tolerance"):
        metrics.pointing_game(saliency, region, tolerance=-1)
    with pytest.raises(OptionError, match="percentiles"):
        metrics.overlap(saliency, region, percentiles=(50, 101))


def test_sanity_rejects_mismatched_maps() -> None:
    with pytest.raises(InputError, match="same shape"):
        metrics.spearman(torch.rand(2, 1, 4, 4), torch.rand(2, 1, 4, 5))
    model, x = BoxModel(((4, 8), (4, 8))), torch.rand(2, 1, 16, 16)
    with pytest.raises(InputError, match="saliency"):
        metrics.model_randomisation_check(lambda m: lambda x, t: torch.rand(2, 16, 16), model, x)
