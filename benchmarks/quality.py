"""Quality of every method's maps on the two demo bundles, against the phantoms' lesion masks.

Held-out positive phantoms (seeds from the ``held_out_seeds`` that the bundle's training recorded in
its ``configs/metadata.json``, never trained on; negatives skipped) are built in memory and go the way
inference goes: the study MetaTensor that ``medmdm.io.load_study`` gives for their DICOM
(:func:`medmdm.testing.internal.dicom_studies.study_image`), the bundle's preprocessing, the explainer,
and the map mapped back onto the study's grid. Every method explains the lesion class; every metric of
:mod:`medmdm.evaluation` is computed per case (localisation on the study's grid against the mask,
faithfulness on the network input). ``mdm-reference`` runs on the first cases only.

Results go to ``benchmarks/results/``: ``quality_2d.csv`` and ``quality_3d.csv`` (one row per case and
method), ``quality_*d.json`` (the cases and the runs) and ``quality_*d_gallery.npz`` (the gallery's
slices, 8 bits). From all results found there, the script draws ``docs/images/quality_gallery.png``
and ``docs/images/quality_chart.png`` and rewrites the section between ``<!-- quality:start -->`` and
``<!-- quality:end -->`` of ``docs/benchmarks.md`` (appended when absent; the rest is left alone).
``--merge`` adds runs to the stored results of the same cases, so a long benchmark can be run in
parts; ``--report-only`` redraws the figures and the section from the stored results.

Examples
--------
::

    python benchmarks/quality.py --quick                      # a few cases, no mdm-reference
    python benchmarks/quality.py                              # 100 2D and 30 3D cases
    python benchmarks/quality.py --dims 2 --cases-2d 40 --reference-subset 3
    python benchmarks/quality.py --dims 2 --cases-2d 40 --merge --methods hdm \\
        --variants "hdm-d=hdm:deletion_weight=1.0"            # one more run on the same cases
"""

from __future__ import annotations

import argparse
import csv
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
import torch.nn.functional as F
import yaml

from medmdm import __version__, explainers
from medmdm.bundle import Bundle, load_bundle
from medmdm.evaluation import (
    METRICS,
    PreparedCase,
    explain_and_score,
    format_table,
    format_value,
    summarise,
    write_rows,
)
from medmdm.evaluation.scores import DIRECTION, lesion_labels
from medmdm.io import Study
from medmdm.pipeline import prepare
from medmdm.testing.internal.dicom_studies import study_image
from medmdm.testing.internal.phantoms import Case, ct_case, radiograph_case
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
TWO_LESION_MARGIN = 0.05  # the smaller lesion's share of the map: at least dm's + this
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
    "min_lesion_evidence",
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
INTEGER_COLUMNS = ("dims", "target", "lesions")
GALLERY_CASES = {2: (2, 2), 3: (1, 1)}  # one-lesion and two-lesion cases shown per bundle
GALLERY_SIZE = 128  # longest side of a stored gallery slice
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
class Results:
    """What is stored for one bundle: the cases and runs (``info``), the rows, the gallery slices."""

    dims: int
    info: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    gallery: dict[str, np.ndarray] = field(default_factory=dict)  # "seed/image", "seed/mask", "seed/label"

    def runs(self) -> list[Run]:
        """The runs in the order they were added, ``mdm-reference`` last."""
        return [Run(label, **spec) for label, spec in self.info["runs"].items()]


def held_out_start(bundle: Bundle) -> int:
    """First held-out seed the bundle's training recorded (checked to lie past its training seeds)."""
    metadata = json.loads((bundle.root / "configs" / "metadata.json").read_text())
    training = metadata["medmdm_training"]
    start, trained_until = int(training["held_out_seeds"][0]), int(training["training_seeds"][1])
    if start < trained_until:
        raise SystemExit(f"{bundle.name}: held-out seeds start at {start}, inside the training seeds")
    return start


def phantom_study(case: Case, dims: int, seed: int) -> Study:
    """The Study that ``load_study`` gives for the case's DICOM, built in memory."""
    return Study(
        image=study_image(case),
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
            mask = torch.from_numpy(case.mask != 0)
            prepared = PreparedCase(str(seed), prepare(study, bundle), mask, LESION_CLASS)
            phantoms.append(Phantom(seed, case, prepared))
        seed += 1
    with torch.no_grad():
        for phantom in phantoms:
            logits = bundle.network.eval()(phantom.prepared.network_input.as_tensor().float())
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
) -> Results:
    """Every run over ``count`` positive held-out phantoms, ``mdm-reference`` over the first few."""
    phantoms = positive_phantoms(dims, bundle, count, held_out_start(bundle))
    metadata = json.loads((bundle.root / "configs" / "metadata.json").read_text())
    plan = [(run, phantoms) for run in runs]
    if reference_count > 0:
        plan.append((Run(REFERENCE, REFERENCE), phantoms[:reference_count]))
    results = Results(
        dims,
        {
            "bundle": bundle.name,
            "class_name": bundle.class_names[LESION_CLASS],
            "accuracy": metadata.get("medmdm_training", {}).get("accuracy"),
            "explain_options": bundle.explain_options,
            "network_shape": list(phantoms[0].prepared.network_input.shape[2:]),
            "source_shape": list(phantoms[0].case.image.shape),
            "cases": [p.seed for p in phantoms],
            "first_seed": held_out_start(bundle),
            "reference_cases": [p.seed for p in phantoms[:reference_count]],
            "runs": {run.label: {"method": run.method, "options": run.options} for run, _ in plan},
            "seed": seed,
        },
    )
    shown = gallery_phantoms(phantoms, dims)
    shown_seeds = {phantom.seed for phantom in shown}
    for phantom in shown:
        results.gallery[f"{phantom.seed}/image"] = gallery_slice(phantom, phantom.case.image, image=True)
        results.gallery[f"{phantom.seed}/mask"] = gallery_slice(phantom, phantom.case.mask.astype(float))
    for run, chosen in plan:
        options = {"seed": seed, **bundle.explain_options, **run.options}
        taken = explainers.accepted_options(run.method, options)
        explainer = explainers.create(run.method, bundle.network, taken)
        started = time.perf_counter()
        for first in range(0, len(chosen), batch):
            group = chosen[first : first + batch]
            deletion_baseline = bundle.explain_options.get("baseline", "mean")
            scored = explain_and_score(explainer, [p.prepared for p in group], run.label, deletion_baseline)
            for phantom, row, source_map in zip(group, scored.rows, scored.source_maps, strict=True):
                results.rows.append({"dims": dims, "probability": phantom.probability, **row})
                if phantom.seed in shown_seeds:
                    results.gallery[f"{phantom.seed}/{run.label}"] = gallery_slice(
                        phantom, source_map.numpy()
                    )
        seconds = time.perf_counter() - started
        print(f"{dims}D {run.label}: {len(chosen)} cases in {seconds:.0f} s", file=sys.stderr, flush=True)
    return results


def gallery_phantoms(phantoms: Sequence[Phantom], dims: int) -> list[Phantom]:
    """The phantoms shown in the gallery: the first one-lesion and the first two-lesion cases."""
    ones = [p for p in phantoms if p.case.lesions == 1][: GALLERY_CASES[dims][0]]
    twos = [p for p in phantoms if p.case.lesions == 2][: GALLERY_CASES[dims][1]]
    return ones + twos


def gallery_slice(phantom: Phantom, volume: np.ndarray, image: bool = False) -> np.ndarray:
    """What the gallery shows of a (*spatial) array, as 8 bits: the image (rows down) or, in 3D, the
    axial slice through the first lesion's centre; at most ``GALLERY_SIZE`` pixels a side.

    Images are windowed to their 1st and 99th percentiles; maps and masks (in [0, 1]) are scaled.
    """
    if volume.ndim == 3:
        labels, _ = lesion_labels(torch.from_numpy(phantom.case.mask))
        volume = volume[:, :, int(np.round(np.argwhere(labels == 1)[:, 2].mean()))]
    plane = torch.from_numpy(np.ascontiguousarray(volume.T, dtype=np.float32))[None, None]
    factor = max(1, math.ceil(max(plane.shape[2:]) / GALLERY_SIZE))
    plane = F.avg_pool2d(plane, factor)[0, 0].numpy() if factor > 1 else plane[0, 0].numpy()
    low, high = np.percentile(plane, [1, 99]) if image else (0.0, 1.0)
    return np.round(255 * np.clip((plane - low) / max(high - low, 1e-12), 0, 1)).astype(np.uint8)


# Storing and merging results


def result_paths(folder: Path, dims: int) -> tuple[Path, Path, Path]:
    """The rows (CSV), the cases and runs (JSON) and the gallery (NPZ) of one bundle."""
    return (
        folder / f"quality_{dims}d.csv",
        folder / f"quality_{dims}d.json",
        folder / f"quality_{dims}d_gallery.npz",
    )


def save_results(results: Results, folder: Path) -> None:
    """Write one bundle's results (atomically, each file)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows_path, info_path, gallery_path = result_paths(folder, results.dims)
    write_rows(results.rows, rows_path, CSV_COLUMNS)
    with atomic_path(info_path) as tmp:
        tmp.write_text(json.dumps(results.info, indent=1) + "\n")
    with atomic_path(gallery_path) as tmp, tmp.open("wb") as handle:
        np.savez_compressed(handle, **results.gallery)


def load_results(folder: Path, dims: int) -> Results | None:
    """One bundle's stored results, or None when there are none."""
    rows_path, info_path, gallery_path = result_paths(folder, dims)
    if not (rows_path.is_file() and info_path.is_file()):
        return None
    with rows_path.open(newline="") as handle:
        rows = [_typed(row) for row in csv.DictReader(handle)]
    gallery = dict(np.load(gallery_path)) if gallery_path.is_file() else {}
    return Results(dims, json.loads(info_path.read_text()), rows, gallery)


def _typed(row: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"case": row["case"], "method": row["method"]}
    for column in CSV_COLUMNS:
        if column in out:
            continue
        text = row.get(column, "")  # a column added since the results were stored is NaN
        out[column] = int(text) if column in INTEGER_COLUMNS else float(text) if text else math.nan
    return out


def merge_results(old: Results, new: Results) -> Results:
    """The stored results with the new runs added (a run of the same label replaced).

    Raises
    ------
    SystemExit
        When the two were not measured on the same cases.
    """
    if old.info["cases"] != new.info["cases"]:
        raise SystemExit(
            f"--merge: the stored {new.dims}D results hold other cases ({len(old.info['cases'])} from seed "
            f"{old.info['cases'][0]}); rerun without --merge, or with the same number of cases"
        )
    labels = set(new.info["runs"])
    info = dict(old.info)
    info["runs"] = {k: v for k, v in old.info["runs"].items() if k not in labels} | new.info["runs"]
    if REFERENCE in labels:
        info["reference_cases"] = new.info["reference_cases"]
    rows = [row for row in old.rows if row["method"] not in labels] + new.rows
    gallery = {k: v for k, v in old.gallery.items() if k.split("/", 1)[1] not in labels} | new.gallery
    return Results(new.dims, info, rows, gallery)


# Comparisons


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


def target_lines(results: Results) -> list[str]:
    """The targets of the project issue, checked on one bundle's numbers for hdm and its variants."""
    rows = select(results.rows, method=lambda m: m != REFERENCE)
    summary = summarise(rows, METRICS)
    runs = results.runs()
    baselines = [run.label for run in runs if run.label in BASELINES]
    lines = []
    for candidate in [run.label for run in runs if run.method == "hdm"]:
        lines += _candidate_lines(results.dims, rows, summary, candidate, baselines)
    return lines


def _candidate_lines(
    dims: int,
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
    if "dm" in summary and candidate != "dm" and two:
        for metric in TWO_LESION_METRICS:
            difference, half, n = paired_difference(two, candidate, "dm", metric)
            wanted = TWO_LESION_MARGIN if metric == "min_lesion_share" else 0.0
            verdict = "met" if difference >= wanted else "not met"
            lines.append(
                f"- two-lesion cases, {metric}: {candidate} - dm = {difference:+.3f} ± {half:.3f} (95% CI, "
                f"{n} cases; target at least {wanted:+.2f}): **{verdict}**"
            )
        evidence = [row["min_lesion_evidence"] for row in select(two, method=candidate)]
        shares = [row["min_lesion_share"] for row in select(two, method=candidate)]
        lines.append(
            f"- two-lesion cases: the smaller lesion holds {np.nanmean(evidence):.2f} of the evidence "
            f"(removing each lesion), and {np.mean(shares):.2f} of {candidate}'s map"
        )
    if dims == 2:
        samples = [row["samples"] for row in select(rows, method=candidate)]
        within = max(samples) <= MAX_SAMPLES_2D
        lines.append(
            f"- samples per 2D case: {candidate} mean {np.mean(samples):.0f}, largest {max(samples):.0f} "
            f"(target at most {MAX_SAMPLES_2D}): **{'met' if within else 'not met'}**"
        )
    return lines


# The report


def bundle_section(results: Results) -> list[str]:
    """Markdown of one bundle: cases, tables, mdm-reference subset, targets."""
    info, dims = results.info, results.dims
    rows = select(results.rows, method=lambda m: m != REFERENCE)
    first = {row["case"]: row for row in rows}
    lesions = [first[str(seed)]["lesions"] for seed in info["cases"]]
    detected = sum(first[str(seed)]["probability"] > 0.5 for seed in info["cases"])
    accuracy = f", held-out accuracy {info['accuracy']:.1%} in its training run" if info["accuracy"] else ""
    out = [
        f"### {dims}D: `{info['bundle']}`",
        "",
        f"Network input {'x'.join(map(str, info['network_shape']))}, source grid "
        f"{'x'.join(map(str, info['source_shape']))}{accuracy}. {len(lesions)} positive held-out "
        f"phantoms (seeds {info['first_seed']} to {max(info['cases'])}, negatives skipped), "
        f"{lesions.count(1)} with one lesion and {lesions.count(2)} with two; the bundle calls {detected} "
        f"of them positive (probability > 0.5). Every map explains class {LESION_CLASS} "
        f"({info['class_name']}), with the bundle's options `{json.dumps(info.get('explain_options', {}))}`.",
        "",
        f"All {len(lesions)} cases (mean ± standard deviation over cases):",
        "",
        format_table(summarise(rows, METRICS), MAIN_COLUMNS),
        "",
    ]
    for count, title in ((1, "One-lesion cases"), (2, "Two-lesion cases")):
        chosen = select(rows, lesions=count)
        if chosen:
            columns = MAIN_COLUMNS if count == 1 else TWO_LESION_COLUMNS
            out += [
                f"{title} ({lesions.count(count)}):",
                "",
                format_table(summarise(chosen, METRICS), columns),
                "",
            ]
    reference = [str(seed) for seed in info["reference_cases"]]
    if reference and select(results.rows, method=REFERENCE):
        compared = [run.label for run in results.runs() if run.method in ("hdm", "dm", "mdm", REFERENCE)]
        subset = select(results.rows, case=lambda c: c in reference, method=lambda m: m in compared)
        out += [
            f"`{REFERENCE}` and the dynamic-mask methods on the first {len(reference)} case(s) "
            f"(seeds {', '.join(reference)}):",
            "",
            format_table(summarise(subset, METRICS), REFERENCE_COLUMNS),
            "",
        ]
    lines = target_lines(results)
    if lines:
        out += [f"Targets, {dims}D:", "", *lines, ""]
    return out


def markdown_section(stored: Sequence[Results]) -> str:
    """The whole generated section, markers included."""
    commands = dict.fromkeys(f"`{c}`" for results in stored for c in results.info.get("commands", []))
    machine = stored[0].info.get("machine", "") if stored else ""
    out = [
        START,
        "## Quality on the demo bundles",
        "",
        f"Written by `benchmarks/quality.py` ({', '.join(commands)}; {machine}); per-case rows in "
        "`benchmarks/results/quality_2d.csv` and `quality_3d.csv`.",
        "",
        "Every method runs with its default options (seed 0) and the bundle's `explain_options` "
        "(`configs/metadata.json`, each bundle's below; every method that has the option takes it) on "
        "held-out positive phantoms, explaining "
        "the lesion class. Localisation is scored on the study's own grid against the lesion mask, "
        "after the map is mapped back through the affines: energy-based pointing game (share of the "
        "map's mass in the lesions), pointing game (the map's peak within 15 voxels at 224 of a lesion, "
        "scaled with the grid), Dice and IoU of the map's top 5% (95th percentile), `min_lesion_share` "
        "(the smaller share of the two lesions' masses; 0 when a map finds one lesion only) and "
        "`lesions_found` (the fraction of lesions where the map reaches half its maximum). "
        "Faithfulness is scored on the network input: deletion (to the bundle's baseline) and insertion "
        "(from the blur) AUC (20 steps, probability of the lesion class), average drop and increase in "
        "confidence. Seconds and samples (images through the model) are per case; cases are explained "
        "in batches, so seconds are a batch's time "
        "divided by its size, on a CPU shared with other jobs.",
        "",
    ]
    variants = {
        run.label: run
        for results in stored
        for run in results.runs()
        if run.label != run.method or run.options
    }
    if variants:
        described = "; ".join(
            f"`{run.label}` is `{run.method}` with "
            + ", ".join(f"`{key}={value}`" for key, value in run.options.items())
            for run in variants.values()
        )
        out += [f"Variants measured for comparison (not registered methods): {described}.", ""]
    for results in stored:
        out += bundle_section(results)
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


def gallery_figure(stored: Sequence[Results], path: Path) -> Path:
    """Maps of every run on the gallery cases, over the image, lesions outlined."""
    labels = list(dict.fromkeys(label for results in stored for label in results.info["runs"]))
    shown = [
        (results, key.split("/")[0])
        for results in stored
        for key in results.gallery
        if key.endswith("/image")
    ]
    columns = ["image", *labels]
    size = (1.5 * len(columns), 1.6 * len(shown))
    fig, axes = plt.subplots(len(shown), len(columns), figsize=size, squeeze=False)
    for row, (results, seed) in enumerate(shown):
        image, mask = results.gallery[f"{seed}/image"], results.gallery[f"{seed}/mask"]
        lesions = select(results.rows, case=seed)[0]["lesions"]
        for column, name in enumerate(columns):
            ax = axes[row, column]
            ax.imshow(image, cmap="gray", vmin=0, vmax=255)
            if f"{seed}/{name}" in results.gallery:
                ax.imshow(results.gallery[f"{seed}/{name}"], cmap="inferno", alpha=0.6, vmin=0, vmax=255)
            ax.contour(mask, levels=[127], colors="lime", linewidths=0.6)
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(name, fontsize=7)
            if column == 0:
                ax.set_ylabel(f"{results.dims}D {seed}\n{lesions} lesion(s)", fontsize=6)
    fig.tight_layout(pad=0.3)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def chart_figure(stored: Sequence[Results], path: Path) -> Path:
    """Bars of the target metrics per run and bundle, with 95% confidence intervals of the mean."""
    size = (3.2 * len(TARGET_METRICS), 2.6 * len(stored))
    fig, axes = plt.subplots(len(stored), len(TARGET_METRICS), figsize=size, squeeze=False)
    for row, results in enumerate(stored):
        summary = summarise(select(results.rows, method=lambda m: m != REFERENCE), METRICS)
        names = list(summary)
        for column, metric in enumerate(TARGET_METRICS):
            ax = axes[row, column]
            stats = [summary[name][metric] for name in names]
            means = [s["mean"] if s["mean"] is not None else 0.0 for s in stats]
            errors = [1.96 * (s["std"] or 0.0) / math.sqrt(max(1, s["n"])) for s in stats]
            colours = [
                COLOURS.get(name, "tab:green" if name.startswith("hdm") else "tab:blue") for name in names
            ]
            ax.bar(range(len(names)), means, yerr=errors, color=colours, capsize=2)
            ax.set_xticks(range(len(names)))
            ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
            arrow = "↑" if DIRECTION[metric] == "higher" else "↓"
            ax.set_title(f"{results.dims}D {metric} {arrow}", fontsize=8)
            ax.tick_params(axis="y", labelsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def write_report(folder: Path, docs: Path) -> str:
    """Draw the figures and rewrite the docs section from every stored result; return the section."""
    stored = [results for dims in BUNDLES if (results := load_results(folder, dims)) is not None]
    if not stored:
        raise SystemExit(f"no results in {folder}; run the benchmark first")
    images = docs.parent / "images"
    images.mkdir(parents=True, exist_ok=True)
    gallery_figure(stored, images / "quality_gallery.png")
    chart_figure(stored, images / "quality_chart.png")
    section = markdown_section(stored)
    text = docs.read_text() if docs.exists() else "# Benchmarks\n"
    with atomic_path(docs) as tmp:
        tmp.write_text(replace_section(text, section))
    return section


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, store the results, and write the figures and the docs section."""
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
    parser.add_argument("--merge", action="store_true", help="add these runs to the stored results")
    parser.add_argument("--report-only", action="store_true", help="only redraw the figures and the section")
    parser.add_argument("--bundles", type=Path, default=REPOSITORY / "sample_data" / "bundles")
    for dims, name in BUNDLES.items():
        parser.add_argument(
            f"--bundle-{dims}d",
            default=name,
            help=f"the {dims}D bundle, a folder of --bundles (default {name}); another classifier "
            "of the same phantoms (e.g. vit_lesion_2d) with its own --results and --docs",
        )
    parser.add_argument("--results", type=Path, default=REPOSITORY / "benchmarks" / "results")
    parser.add_argument("--docs", type=Path, default=REPOSITORY / "docs" / "benchmarks.md")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of every method (default 0)")
    args = parser.parse_args(argv)
    if args.quick:
        args.cases_2d, args.cases_3d, args.reference_subset, args.reference_subset_3d = 4, 2, 0, 0
    torch.set_num_threads(args.threads)
    reference_3d = args.reference_subset if args.reference_subset_3d is None else args.reference_subset_3d
    counts = {2: (args.cases_2d, args.reference_subset), 3: (args.cases_3d, reference_3d)}
    runs = [Run(m.strip(), m.strip()) for m in args.methods.split(",") if m.strip()]
    runs += parse_variants(args.variants)
    command = " ".join(["python benchmarks/quality.py", *(sys.argv[1:] if argv is None else argv)])
    machine = (
        f"{platform.machine()} CPU, {os.cpu_count()} cores, {args.threads} torch threads, "
        f"medmdm {__version__}, torch {torch.__version__.split('+')[0]}"
    )

    for dims in [] if args.report_only else [int(d) for d in args.dims.split(",")]:
        bundle = load_bundle(args.bundles / getattr(args, f"bundle_{dims}d"))
        count, reference = counts[dims]
        results = run_bundle(dims, bundle, runs, count, min(reference, count), args.batch, args.seed)
        results.info |= {"commands": [command], "machine": machine}
        old = load_results(args.results, dims) if args.merge else None
        if old is not None:
            results = merge_results(old, results)
            results.info["commands"] = [*old.info.get("commands", []), command]
        save_results(results, args.results)
        for line in target_lines(results):
            print(f"{dims}D {line[2:]}", flush=True)
    print(write_report(args.results, args.docs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
