"""Faithfulness per pass: every dynamic-mask method on models whose right answer is known.

Two analytic models (``medmdm.testing``), in 2D and 3D, over several placements and sizes:

- box: the class score depends only on the mean intensity inside one box;
- two regions: the score is the larger of the evidence in region A and in region B.

Prints a Markdown table: share of the saliency mass inside the evidence (box: the box; two
regions: the smaller of the two regions' shares, which is 0 when a method finds only one),
how often the map's peak lies inside, and samples through the model per case (for time, see
``speed.py``).

Examples
--------
::

    python benchmarks/faithfulness.py                      # all methods, mdm-reference included
    python benchmarks/faithfulness.py --methods dm,hdm,mdm
"""

from __future__ import annotations

import argparse
import statistics

import torch

from medmdm import explainers
from medmdm.testing import BoxModel, EitherRegionModel, box_image, region_mask

BOX_CASES = [
    ((64, 64), ((24, 40), (20, 36))),
    ((64, 64), ((5, 13), (40, 48))),
    ((96, 80), ((50, 70), (10, 22))),
    ((128, 128), ((70, 100), (20, 44))),
    ((32, 32, 32), ((4, 12), (16, 24), (16, 24))),
    ((40, 40, 24), ((10, 22), (20, 32), (6, 14))),
]
TWO_REGION_CASES = [
    ((64, 64), ((10, 22), (10, 22)), ((40, 52), (36, 48))),
    ((96, 96), ((8, 28), (60, 80)), ((60, 76), (10, 26))),
    ((32, 32, 32), ((4, 12), (4, 12), (4, 12)), ((18, 28), (18, 28), (18, 28))),
    ((40, 40, 24), ((4, 14), (4, 14), (4, 12)), ((24, 36), (22, 34), (12, 22))),
]


def share(saliency: torch.Tensor, region: torch.Tensor) -> float:
    return float((saliency * region).sum() / saliency.sum().clamp_min(1e-12))


def evaluate(name: str, dims: int) -> dict[str, float]:
    """Mean scores of method ``name`` over the cases of one dimensionality."""
    rows = []
    for spatial, box in (c for c in BOX_CASES if len(c[0]) == dims):
        rows.append(("box", BoxModel(box), box_image(spatial, box), [region_mask(spatial, box)]))
    for spatial, a, b in (c for c in TWO_REGION_CASES if len(c[0]) == dims):
        regions = [region_mask(spatial, a), region_mask(spatial, b)]
        rows.append(("two", EitherRegionModel(a, b), box_image(spatial, a, b), regions))
    out: dict[str, list[float]] = {"box": [], "box_peak": [], "two": [], "two_peak": [], "samples": []}
    for kind, model, x, regions in rows:
        explainer = explainers.create(name, model)
        saliency = explainer(x)[0, 0]
        out["samples"].append(explainer.last.samples)
        union = torch.stack(regions).any(0)
        out[kind].append(min(share(saliency, region) for region in regions))
        out[f"{kind}_peak"].append(float(union.flatten()[saliency.flatten().argmax()]))
    return {key: statistics.fmean(values) for key, values in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default="dm,hdm,mdm,mdm-reference")
    parser.add_argument("--dims", default="2,3")
    args = parser.parse_args()
    print(
        "| method | dims | box: mass inside | box: peak inside | two regions: smaller share "
        "| two regions: peak inside | samples / case |"
    )
    print("|---|---|---|---|---|---|---|")
    for dims in (int(d) for d in args.dims.split(",")):
        for name in args.methods.split(","):
            r = evaluate(name, dims)
            print(
                f"| {name} | {dims}D | {r['box']:.2f} | {r['box_peak']:.0%} | {r['two']:.2f} "
                f"| {r['two_peak']:.0%} | {r['samples']:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
