"""Quality of every method's maps on the two demo bundles, against the phantoms' lesion masks.

Held-out positive phantoms (seeds from the ``held_out_seeds`` the bundle's training recorded in its
``configs/metadata.json``, never trained on) are built in memory and go the way inference goes: the
study MetaTensor that ``medmdm.io.load_study`` gives for their DICOM
(:func:`medmdm.testing.dicom_studies.study_image`), the bundle's preprocessing, the explainer, and
the map mapped back onto the study's grid. Every method explains the lesion class; every metric of
:mod:`medmdm.evaluation` is computed per case (localisation on the study's grid against the mask,
faithfulness on the network input). ``mdm-reference`` runs on the first cases only.

Writes ``benchmarks/results/quality_2d.csv`` and ``quality_3d.csv`` (one row per case and method),
``docs/images/quality_gallery.png`` and ``docs/images/quality_chart.png``, and rewrites the section
between ``<!-- quality:start -->`` and ``<!-- quality:end -->`` of ``docs/benchmarks.md`` (appended
when absent; the rest of the file is left alone).

Examples
--------
::

    python benchmarks/quality.py --quick                      # a few cases, no mdm-reference
    python benchmarks/quality.py                              # 100 2D and 30 3D cases
    python benchmarks/quality.py --cases-2d 40 --cases-3d 12 --reference-subset 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import yaml

from medmdm import __version__, explainers
from medmdm.bundle import Bundle, load_bundle
from medmdm.evaluation import (
    METRICS,
    PreparedCase,
    explain_and_score,
    format_table,
    format_value,
    method_explainer,
    summarise,
    write_rows,
)
from medmdm.evaluation.scores import DIRECTION, lesion_labels
from medmdm.io import Study
from medmdm.testing.dicom_studies import study_image
from medmdm.testing.phantoms import Case, ct_case, radiograph_case
from medmdm.writers.atomic import atomic_path

REPOSITORY = Path(__file__).resolve().parents[1]
BUNDLES = {2: "radiograph_lesion_2d", 3: "ct_nodule_3d"}
PHANTOMS: dict[int, Callable[[int], Case]] = {2: radiograph_case, 3: ct_case}
LESION_CLASS = 1
REFERENCE = "mdm-reference"
BASELINES = ("saliency", "integrated_gradients", "occlusion", "rise", "gradcam", "gradcampp")
START, END = "<!-- quality:start -->", "<!-- quality:end -->"
TARGET_METRICS = ("energy_pointing_game", "pointing_game", "deletion_auc", "dice_p95")
TWO_LESION_METRICS = ("min_lesion_share", "lesions_found")
MAX_SAMPLES_2D = 3000
MAIN_COLUMNS = (
    "energy_pointing_game",
    "pointing_game",
    "dice_p95",
    "iou_p95",
    "deletion_auc",
    "insertion_auc",
    "average_drop",
    "average_increase",
    "seconds",
    "samples",
)
TWO_LESION_COLUMNS = (
    "min_lesion_share",
    "lesions_found",
    "energy_pointing_game",
    "pointing_game",
    "dice_p95",
    "deletion_auc",
    "samples",
)
REFERENCE_COLUMNS = (
    "energy_pointing_game",
    "pointing_game",
    "dice_p95",
    "deletion_auc",
    "seconds",
    "samples",
)
CSV_COLUMNS = ("dims", "case", "method", "target", "lesions", "probability", *METRICS)
GALLERY_CASES = {2: (2, 2), 3: (1, 1)}  # one-lesion and two-lesion cases shown per bundle
COLOURS = {"hdm": "tab:red", "dm": "tab:orange", "mdm": "tab:orange", REFERENCE: "tab:gray"}


@dataclass(frozen=True)
class Run:
    """A method as the benchmark runs it: its label in the tables, the registered method, options."""

    label: str
    method: str
    options: dict[str, Any] = field(default_factory=dict)


def parse_variants(text: str) -> list[Run]:
    """``label=method:key=value,key=value;...`` as runs (values read as YAML scalars)."""
    runs = []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        label, _, spec = item.partition("=")
        method, _, settings = spec.partition(":")
        options = {}
        for setting in filter(None, (s.strip() for s in settings.split(","))):
            key, _, value = setting.partition("=")
            options[key.strip()] = yaml.safe_load(value)
        runs.append(Run(label.strip(), method.strip(), options))
    return runs


@dataclass
class Phantom:
    """A held-out case: its seed, ground truth and network input."""

    seed: int
    case: Case
    prepared: PreparedCase
    probability: float = math.nan  # the bundle's probability of the lesion class


@dataclass
class DimsResult:
    """Everything measured on one bundle."""

    dims: int
    bundle: Bundle
    seeds: tuple[int, int]
    phantoms: list[Phantom]
    rows: list[dict[str, Any]] = field(default_factory=list)
    maps: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)  # (seed, method) -> source map
    reference_seeds: list[int] = field(default_factory=list)


def held_out_start(bundle: Bundle) -> tuple[int, int]:
    """First held-out seed the bundle's training recorded, and the end of its training seeds."""
    metadata = json.loads((bundle.root / "configs" / "metadata.json").read_text())
    training = metadata["medmdm_training"]
    start, trained_until = int(training["held_out_seeds"][0]), int(training["training_seeds"][1])
    if start < trained_until:
        raise SystemExit(f"{bundle.name}: held-out seeds start at {start}, inside the training seeds")
    return start, trained_until


def phantom_study(case: Case, dims: int, seed: int) -> Study:
    """The Study that ``load_study`` gives for the case's DICOM, built in memory."""
    image = study_image(case)
    return Study(
        image=image,
        path=Path(f"phantom-{dims}d-{seed}"),
        kind="dicom-file" if dims == 2 else "dicom-series",
        spacing=tuple(case.spacing),
        size=tuple(case.image.shape),
    )


def positive_phantoms(dims: int, bundle: Bundle, count: int, start: int) -> list[Phantom]:
    """The first ``count`` held-out seeds from ``start`` whose phantom has a lesion."""
    phantoms, seed = [], start
    while len(phantoms) < count:
        case = PHANTOMS[dims](seed)
        if case.label == LESION_CLASS:
            study = phantom_study(case, dims, seed)
            prepared = PreparedCase(
                str(seed), study, bundle.preprocess(study), torch.from_numpy(case.mask != 0), LESION_CLASS
            )
            phantoms.append(Phantom(seed, case, prepared))
        seed += 1
    network = bundle.network.eval()
    with torch.no_grad():
        for phantom in phantoms:
            logits = network(phantom.prepared.network_input.as_tensor().float())
            phantom.probability = float(logits.softmax(1)[0, LESION_CLASS])
    return phantoms


def run_bundle(
    dims: int,
    bundle: Bundle,
    runs: Sequence[Run],
    count: int,
    reference_count: int,
    batch: int,
    seed: int,
) -> DimsResult:
    """Every run over ``count`` positive held-out phantoms, ``mdm-reference`` over the first few."""
    start, _ = held_out_start(bundle)
    phantoms = positive_phantoms(dims, bundle, count, start)
    result = DimsResult(dims, bundle, (start, phantoms[-1].seed + 1), phantoms)
    gallery = set(gallery_seeds(phantoms, dims))
    plan = [(run, phantoms) for run in runs]
    if reference_count > 0:
        result.reference_seeds = [p.seed for p in phantoms[:reference_count]]
        plan.append((Run(REFERENCE, REFERENCE), phantoms[:reference_count]))
    for run, chosen in plan:
        explainer = method_explainer(run.method, bundle.network, {"seed": seed, **run.options})
        started = time.perf_counter()
        for first in range(0, len(chosen), batch):
            group = chosen[first : first + batch]
            scored = explain_and_score(explainer, [p.prepared for p in group], run.label)
            for phantom, row, source_map in zip(group, scored.rows, scored.source_maps, strict=True):
                result.rows.append({"dims": dims, "probability": phantom.probability, **row})
                if phantom.seed in gallery:
                    result.maps[phantom.seed, run.label] = source_map.numpy()
        print(
            f"{dims}D {run.label}: {len(chosen)} cases in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return result


def gallery_seeds(phantoms: Sequence[Phantom], dims: int) -> list[int]:
    """Seeds shown in the gallery: the first one-lesion and the first two-lesion cases."""
    ones = [p.seed for p in phantoms if p.case.lesions == 1][: GALLERY_CASES[dims][0]]
    twos = [p.seed for p in phantoms if p.case.lesions == 2][: GALLERY_CASES[dims][1]]
    return ones + twos


def select(rows: Sequence[dict[str, Any]], **wanted: Any) -> list[dict[str, Any]]:
    """The rows whose columns have the wanted values (a callable value is a test)."""
    return [
        row
        for row in rows
        if all(value(row[key]) if callable(value) else row[key] == value for key, value in wanted.items())
    ]


def paired_difference(
    rows: Sequence[dict[str, Any]], method: str, other: str, metric: str
) -> tuple[float, float, int]:
    """Mean of ``method - other`` over the cases both have, its 95% half-width, and the count."""
    values = {row["case"]: row[metric] for row in select(rows, method=other)}
    differences = [
        row[metric] - values[row["case"]]
        for row in select(rows, method=method)
        if row["case"] in values and math.isfinite(row[metric]) and math.isfinite(values[row["case"]])
    ]
    n = len(differences)
    if n == 0:
        return math.nan, math.nan, 0
    mean = float(np.mean(differences))
    half = 1.96 * float(np.std(differences, ddof=1)) / math.sqrt(n) if n > 1 else math.nan
    return mean, half, n


def target_lines(result: DimsResult, runs: Sequence[Run]) -> list[str]:
    """The targets of the project issue, checked on one bundle's numbers for hdm and its variants."""
    rows = select(result.rows, method=lambda m: m != REFERENCE)
    summary = summarise(rows, METRICS)
    lines = []
    baselines = [run.label for run in runs if run.label in BASELINES]
    for candidate in [run.label for run in runs if run.method == "hdm"]:
        lines += _candidate_lines(result, rows, summary, candidate, baselines)
    return lines


def _candidate_lines(
    result: DimsResult,
    rows: Sequence[dict[str, Any]],
    summary: dict[str, Any],
    candidate: str,
    baselines: Sequence[str],
) -> list[str]:
    lines = []
    for metric in TARGET_METRICS if baselines else ():
        better = max if DIRECTION[metric] == "higher" else min
        best = better(baselines, key=lambda m: summary[m][metric]["mean"])
        mine, other = summary[candidate][metric]["mean"], summary[best][metric]["mean"]
        met = mine >= other if DIRECTION[metric] == "higher" else mine <= other
        difference, half, n = paired_difference(rows, candidate, best, metric)
        lines.append(
            f"- {metric}: {candidate} {format_value(metric, mine)}, best baseline {best} "
            f"{format_value(metric, other)} (paired difference {difference:+.3f} ± {half:.3f}, "
            f"95% CI, {n} cases): **{'met' if met else 'not met'}**"
        )
    two = select(rows, lesions=2)
    if "dm" in summary and two:
        for metric in TWO_LESION_METRICS:
            difference, half, n = paired_difference(two, candidate, "dm", metric)
            clearly = difference - half > 0
            lines.append(
                f"- two-lesion cases, {metric}: {candidate} - dm = {difference:+.3f} ± {half:.3f} (95% CI, "
                f"{n} cases): **{'clearly better' if clearly else 'not clearly better'}**"
            )
    if result.dims == 2:
        samples = [row["samples"] for row in select(rows, method=candidate)]
        within = max(samples) <= MAX_SAMPLES_2D
        lines.append(
            f"- samples per 2D case: {candidate} mean {np.mean(samples):.0f}, largest {max(samples):.0f} "
            f"(target at most {MAX_SAMPLES_2D}): **{'met' if within else 'not met'}**"
        )
    return lines


def bundle_lines(result: DimsResult) -> list[str]:
    """What was explained on one bundle: the cases, their lesions and the model's answers."""
    lesions = [p.case.lesions for p in result.phantoms]
    detected = sum(p.probability > 0.5 for p in result.phantoms)
    metadata = json.loads((result.bundle.root / "configs" / "metadata.json").read_text())
    accuracy = metadata.get("medmdm_training", {}).get("accuracy")
    shape = "x".join(str(s) for s in result.phantoms[0].prepared.network_input.shape[2:])
    source = "x".join(str(s) for s in result.phantoms[0].case.image.shape)
    held_out = f", held-out accuracy {accuracy:.1%} in its training run" if accuracy is not None else ""
    return [
        f"`{result.bundle.name}` (network input {shape}, source grid {source}{held_out}): "
        f"{len(lesions)} positive held-out phantoms, seeds {result.seeds[0]} to {result.seeds[1] - 1} "
        f"(negatives skipped), {lesions.count(1)} with one lesion and {lesions.count(2)} with two; the "
        f"bundle calls {detected} of them positive (probability > 0.5). Every map explains class "
        f"{LESION_CLASS} ({result.bundle.class_names[LESION_CLASS]})."
    ]


def bundle_section(result: DimsResult, runs: Sequence[Run]) -> list[str]:
    """Markdown of one bundle: cases, tables, mdm-reference subset, targets."""
    rows = select(result.rows, method=lambda m: m != REFERENCE)
    dims = result.dims
    out = [f"### {dims}D: `{result.bundle.name}`", "", *bundle_lines(result), ""]
    out += [f"All {len(result.phantoms)} cases (mean ± standard deviation over cases):", ""]
    out += [format_table(summarise(rows, METRICS), MAIN_COLUMNS), ""]
    for lesions, title in ((1, "One-lesion cases"), (2, "Two-lesion cases")):
        chosen = select(rows, lesions=lesions)
        if not chosen:
            continue
        count = len({row["case"] for row in chosen})
        columns = MAIN_COLUMNS if lesions == 1 else TWO_LESION_COLUMNS
        out += [f"{title} ({count}):", "", format_table(summarise(chosen, METRICS), columns), ""]
    if result.reference_seeds:
        subset = select(result.rows, case=lambda c: int(c) in result.reference_seeds)
        compared = [run.label for run in runs if run.method in ("hdm", "dm", "mdm")] + [REFERENCE]
        subset = [row for row in subset if row["method"] in compared]
        out += [
            f"`{REFERENCE}` against the dynamic-mask methods on the first {len(result.reference_seeds)} "
            f"case(s) (seeds {', '.join(str(s) for s in result.reference_seeds)}):",
            "",
            format_table(summarise(subset, METRICS), REFERENCE_COLUMNS),
            "",
        ]
    lines = target_lines(result, runs)
    if lines:
        out += [f"Targets, {dims}D:", "", *lines, ""]
    return out


def markdown_section(results: Sequence[DimsResult], runs: Sequence[Run], command: str) -> str:
    """The whole generated section, markers included."""
    threads = torch.get_num_threads()
    out = [
        START,
        "## Quality on the demo bundles",
        "",
        f"`{command}` ({platform.machine()} CPU, {os.cpu_count()} cores, {threads} torch threads, "
        f"medmdm {__version__}, torch {torch.__version__.split('+')[0]}). Written by "
        "`benchmarks/quality.py`; per-case rows in `benchmarks/results/quality_2d.csv` and "
        "`quality_3d.csv`.",
        "",
        "Every method runs with its default options (seed 0) on held-out positive phantoms, explaining "
        "the lesion class. Localisation is scored on the study's own grid against the lesion mask, "
        "after the map is mapped back through the affines: energy-based pointing game (share of the "
        "map's mass in the lesions), pointing game (the map's peak within 15 voxels at 224 of a lesion, "
        "scaled with the grid), Dice and IoU of the map's top 5% (95th percentile), `min_lesion_share` "
        "(the smaller share of the two lesions' masses; 0 when a map finds one lesion only) and "
        "`lesions_found` (the fraction of lesions where the map reaches half its maximum). "
        "Faithfulness is scored on the network input: deletion and insertion AUC (20 steps, probability "
        "of the lesion class), average drop and increase in confidence. Seconds and samples (images "
        "through the model) are per case; cases are explained in batches, so seconds are a batch's time "
        "divided by its size, on a CPU shared with other jobs.",
        "",
    ]
    variants = [run for run in runs if run.label != run.method or run.options]
    if variants:
        described = "; ".join(
            f"`{run.label}` is `{run.method}` with "
            + ", ".join(f"`{key}={value}`" for key, value in run.options.items())
            for run in variants
        )
        out += [f"Variants measured for comparison (not registered methods): {described}.", ""]
    for result in results:
        out += bundle_section(result, runs)
    out += [
        "![maps on held-out cases](images/quality_gallery.png)",
        "",
        "![target metrics per method](images/quality_chart.png)",
        "",
        "The gallery shows each method's map (mapped back to the study's grid) over the image, the "
        "lesion masks outlined in green; 3D cases at the axial slice through the first lesion's centre. "
        "The chart shows the means of the target metrics with 95% confidence intervals.",
        END,
    ]
    return "\n".join(out) + "\n"


def replace_section(text: str, section: str) -> str:
    """``text`` with the part between the quality markers replaced by ``section``, or it appended."""
    if START in text and END in text:
        before, rest = text.split(START, 1)
        after = rest.split(END, 1)[1]
        return before + section.rstrip("\n") + after
    return text.rstrip("\n") + "\n\n" + section


def display_slice(result: DimsResult, phantom: Phantom, volume: np.ndarray) -> np.ndarray:
    """What the gallery shows of a (*spatial) array: rows down the image (2D), or an axial slice (3D)."""
    if result.dims == 2:
        return volume.T
    labels, _ = lesion_labels(torch.from_numpy(phantom.case.mask))
    z = int(np.round(np.argwhere(labels == 1)[:, 2].mean()))
    return volume[:, :, z].T


def gallery_figure(results: Sequence[DimsResult], methods: Sequence[str], path: Path) -> Path:
    """Maps of every method on the gallery cases, over the image, lesions outlined."""
    shown = [(r, p) for r in results for p in r.phantoms if any((p.seed, m) in r.maps for m in methods)]
    columns = ["image", *methods]
    fig, axes = plt.subplots(
        len(shown), len(columns), figsize=(1.6 * len(columns), 1.7 * len(shown)), squeeze=False
    )
    for row, (result, phantom) in enumerate(shown):
        image = display_slice(result, phantom, phantom.case.image)
        mask = display_slice(result, phantom, phantom.case.mask.astype(float))
        low, high = np.percentile(image, [1, 99])
        for column, name in enumerate(columns):
            ax = axes[row, column]
            ax.imshow(image, cmap="gray", vmin=low, vmax=high)
            if name != "image" and (phantom.seed, name) in result.maps:
                saliency = display_slice(result, phantom, result.maps[phantom.seed, name])
                ax.imshow(saliency, cmap="inferno", alpha=0.6, vmin=0, vmax=1)
            if mask.any():
                ax.contour(mask, levels=[0.5], colors="lime", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=7)
            if column == 0:
                label = f"{result.dims}D {phantom.seed}\n{phantom.case.lesions} lesion(s)"
                ax.set_ylabel(label, fontsize=6)
    fig.tight_layout(pad=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def chart_figure(results: Sequence[DimsResult], methods: Sequence[str], path: Path) -> Path:
    """Bars of the target metrics per method and bundle, with 95% confidence intervals of the mean."""
    size = (3.2 * len(TARGET_METRICS), 2.6 * len(results))
    fig, axes = plt.subplots(len(results), len(TARGET_METRICS), figsize=size, squeeze=False)
    for row, result in enumerate(results):
        summary = summarise(select(result.rows, method=lambda m: m != REFERENCE), METRICS)
        names = [m for m in methods if m in summary]
        for column, metric in enumerate(TARGET_METRICS):
            ax = axes[row, column]
            means = [summary[m][metric]["mean"] or 0.0 for m in names]
            errors = [
                1.96 * (summary[m][metric]["std"] or 0.0) / math.sqrt(max(1, summary[m][metric]["n"]))
                for m in names
            ]
            colours = [COLOURS.get(m, "tab:blue") for m in names]
            ax.bar(range(len(names)), means, yerr=errors, color=colours, capsize=2)
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
            arrow = "↑" if DIRECTION[metric] == "higher" else "↓"
            ax.set_title(f"{result.dims}D {metric} {arrow}", fontsize=8)
            ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write the CSVs, the figures and the docs section."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases-2d", type=int, default=100, help="positive 2D cases (default 100)")
    parser.add_argument("--cases-3d", type=int, default=30, help="positive 3D cases (default 30)")
    parser.add_argument(
        "--reference-subset", type=int, default=10, help=f"cases that {REFERENCE} explains (default 10)"
    )
    parser.add_argument(
        "--reference-subset-3d", type=int, help="the same for 3D (default: --reference-subset)"
    )
    parser.add_argument("--quick", action="store_true", help=f"4 2D and 2 3D cases, no {REFERENCE}")
    parser.add_argument(
        "--methods",
        default=",".join(m for m in explainers.available() if m != REFERENCE),
        help=f"comma-separated methods run on every case (default: all but {REFERENCE})",
    )
    parser.add_argument(
        "--variants",
        default="",
        help="extra runs, label=method:option=value,...;... (e.g. 'hdm-d=hdm:deletion_weight=1')",
    )
    parser.add_argument("--batch", type=int, default=8, help="cases explained together (default 8)")
    parser.add_argument("--dims", default="2,3", help="bundles to run: 2, 3 or 2,3")
    parser.add_argument("--bundles", type=Path, default=REPOSITORY / "sample_data" / "bundles")
    parser.add_argument("--results", type=Path, default=REPOSITORY / "benchmarks" / "results")
    parser.add_argument("--docs", type=Path, default=REPOSITORY / "docs" / "benchmarks.md")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every method (default 0)")
    args = parser.parse_args(argv)
    if args.quick:
        args.cases_2d, args.cases_3d, args.reference_subset, args.reference_subset_3d = 4, 2, 0, 0
    reference_3d = args.reference_subset if args.reference_subset_3d is None else args.reference_subset_3d
    runs = [Run(m.strip(), m.strip()) for m in args.methods.split(",") if m.strip()]
    runs += parse_variants(args.variants)
    labels = [run.label for run in runs]
    torch.set_num_threads(args.threads)
    counts = {2: (args.cases_2d, args.reference_subset), 3: (args.cases_3d, reference_3d)}

    results = []
    for dims in (int(d) for d in args.dims.split(",")):
        bundle = load_bundle(args.bundles / BUNDLES[dims])
        count, reference = counts[dims]
        result = run_bundle(dims, bundle, runs, count, min(reference, count), args.batch, args.seed)
        results.append(result)
        args.results.mkdir(parents=True, exist_ok=True)
        write_rows(result.rows, args.results / f"quality_{dims}d.csv", CSV_COLUMNS)
        for line in target_lines(result, runs):
            print(f"{dims}D {line[2:]}", flush=True)

    images = args.docs.parent / "images"
    images.mkdir(parents=True, exist_ok=True)
    shown = [*labels, *([REFERENCE] if any(r.reference_seeds for r in results) else [])]
    gallery_figure(results, shown, images / "quality_gallery.png")
    chart_figure(results, labels, images / "quality_chart.png")
    command = "python benchmarks/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    section = markdown_section(results, runs, command.strip())
    text = args.docs.read_text() if args.docs.exists() else "# Benchmarks\n"
    with atomic_path(args.docs) as tmp:
        tmp.write_text(replace_section(text, section))
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
