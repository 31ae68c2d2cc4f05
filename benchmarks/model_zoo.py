"""Explain every bundle of a local MONAI model-zoo checkout on a synthetic study of its modality, as a user
would, with random weights, and write the table at the end of docs/bundles.md.

    python benchmarks/model_zoo.py /path/to/model-zoo/models                 # every bundle, default steps
    python benchmarks/model_zoo.py ZOO_DIR --steps 5 --timeout 300           # quicker
    python benchmarks/model_zoo.py ZOO_DIR --bundle spleen_ct_segmentation   # one bundle (repeatable)
    python benchmarks/model_zoo.py ZOO_DIR --bundle spleen_ct_segmentation --update  # its row in the table

The zoo is never downloaded: ``ZOO_DIR`` is a checkout of https://github.com/Project-MONAI/model-zoo (its
``models`` folder, or the checkout holding it). Weights are not in the checkout either, so each bundle runs
with random weights (``--allow-random-weights``, the same in every run: torch's generator is seeded first):
the table says whether medmdm can explain the bundle as it ships, not what a trained network attends to.

For each bundle (a folder with ``configs/metadata.json``): its task from the metadata (the kind of output:
classification, segmentation, detection, or none of these), a synthetic study of the input's modality,
channels and dimensionality at a realistic size and spacing (:data:`STUDIES`; a study of several channels
named by modality, BraTS' T1c, T1, T2 and FLAIR, is one file per channel), then ``medmdm explain STUDY...
--bundle DIR --allow-random-weights --device cpu --quiet`` at default settings (``--target region:1`` for a
segmentation, ``--target detection:0`` for a detection; a region 1 that the random network does not predict
is replaced by the first label it does, which the refusal lists) in a child process with a time limit.
Recorded: the result (``ok`` when the map lies on the study's grid, shape and affine to 1e-3 mm; ``refused``
with the one-line error of exit code 2; ``failed`` with the error of anything else: another exit code,
several error lines, a map off the grid, the time limit), the wall-clock seconds and the child's peak
resident memory (``ru_maxrss`` of ``os.wait4``: that child's own ``getrusage``, where
``RUSAGE_CHILDREN`` would keep the largest child so far).

The table goes between ``<!-- model-zoo:start -->`` and ``<!-- model-zoo:end -->`` of docs/bundles.md
(appended when absent; the rest of the file is left alone), rewritten after each bundle so that a run cut
short keeps what it found; ``--bundle`` and ``--no-write`` runs only print it, and ``--bundle ... --update``
replaces those bundles' rows and keeps the others'.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from PIL import Image

from medmdm.io import load_study

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "bundles.md"
START, END = "<!-- model-zoo:start -->", "<!-- model-zoo:end -->"
GRID_TOLERANCE = 1e-3  # mm
SHOWN_CHARACTERS = 160  # of an error in the table
# ``medmdm`` with torch's generator seeded first: a bundle's random weights are the same in every run, so that
# a retry on another label sees the labels the first run predicted.
SEEDED_CLI = "import torch; torch.manual_seed(0); from medmdm.cli.main import entry_point; entry_point()"
MRI_SEQUENCES = ("t1", "t1c", "t1ce", "t1gd", "t2", "flair", "pd", "dwi", "adc")


@dataclass(frozen=True)
class Bundle:
    """What a bundle's metadata says about its input and output."""

    name: str
    root: Path
    task: str  # the metadata's own words
    kind: str  # classification, segmentation, detection, or what else the output is
    modality: str
    channels: int
    spatial_dims: int
    channel_names: tuple[str, ...]
    interactive: bool  # an annotation bundle: the image's own channels are one, the rest guidance


@dataclass(frozen=True)
class Outcome:
    """One row of the table."""

    bundle: Bundle
    study: str  # what the synthetic study is
    result: str  # ok, refused or failed
    detail: str
    seconds: float
    peak_gb: float


def read_bundle(root: Path) -> Bundle:
    """The bundle's task, modality, channels and dimensionality from ``configs/metadata.json``."""
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    formats = meta.get("network_data_format", {})
    inputs = next(iter(formats.get("inputs", {}).values()), {})
    outputs = next(iter(formats.get("outputs", {}).values()), {})
    spatial = inputs.get("spatial_shape") or [96, 96, 96]
    channel_def = inputs.get("channel_def") or {}
    return Bundle(
        name=root.name,
        root=root,
        task=str(meta.get("task", "")),
        kind=output_kind(inputs, outputs),
        modality=str(inputs.get("modality") or "").lower(),
        channels=int(inputs.get("num_channels") or 1),
        spatial_dims=len(spatial),
        channel_names=tuple(str(channel_def[k]) for k in sorted(channel_def, key=str)),
        interactive="annotation" in f"{root.name} {meta.get('task', '')}".lower(),
    )


def output_kind(inputs: dict[str, Any], outputs: dict[str, Any]) -> str:
    """What the network gives, from its metadata: a class vector, a map, boxes, or something else."""
    given, shape = str(outputs.get("type", "")), outputs.get("spatial_shape") or []
    if str(inputs.get("type", "")) in ("noise", "tuples") or not inputs:
        return "generation"
    if given == "object":
        return "detection"
    if given == "tuples":
        return "landmarks"
    if len(shape) == 2 and str(shape[0]) == "1":
        return "classification"
    if int(inputs.get("num_channels") or 1) == 2 and given == "image":
        return "registration"
    return "segmentation"


def ct_volume(shape: tuple[int, ...], rng: np.random.Generator, contrast: float = 0.0) -> np.ndarray:
    """An abdomen-like CT in Hounsfield units: air, a body ellipse of soft tissue, a spine, two organs."""
    grid = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    x, y, z = grid
    volume = np.full(shape, -1000.0)
    body = (x / 0.85) ** 2 + (y / 0.65) ** 2 < 1
    volume[body] = 40.0 + contrast * 0.3
    volume[(x**2 + (y + 0.45) ** 2) < 0.01] = 700.0  # spine
    volume[((x - 0.4) / 0.18) ** 2 + ((y + 0.1) / 0.14) ** 2 + (z / 0.5) ** 2 < 1] = 60.0 + contrast  # spleen
    volume[((x + 0.35) / 0.3) ** 2 + ((y - 0.1) / 0.25) ** 2 + (z / 0.7) ** 2 < 1] = 55.0 + contrast  # liver
    return volume + rng.normal(0, 10, shape) * body


def mr_volume(shape: tuple[int, ...], rng: np.random.Generator, weighting: int = 0) -> np.ndarray:
    """A head-like MR: skull, grey and white matter, ventricles and a lesion, intensities by sequence."""
    x, y, z = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    radius = (x / 0.8) ** 2 + (y / 0.9) ** 2 + (z / 0.85) ** 2
    tissue = np.array([[0, 200, 600, 450, 300, 800], [0, 150, 400, 550, 900, 500]])[weighting % 2]
    volume = np.zeros(shape)  # background, skull, white, grey, ventricles, lesion
    volume[radius < 1] = tissue[1]
    volume[radius < 0.85] = tissue[3]
    volume[radius < 0.6] = tissue[2]
    volume[(x / 0.12) ** 2 + (y / 0.3) ** 2 + (z / 0.2) ** 2 < 1] = tissue[4]
    volume[((x - 0.35) / 0.15) ** 2 + ((y - 0.2) / 0.15) ** 2 + (z / 0.15) ** 2 < 1] = tissue[5] * (
        1 + weighting / 4
    )
    return volume + rng.normal(0, 15, shape) * (radius < 1)


def rgb_image(size: tuple[int, int], rng: np.random.Generator, palette: str) -> np.ndarray:
    """``(rows, cols, 3)`` uint8: H&E-like nuclei on pink, or a reddish endoscopy frame with a bright tool."""
    cols, rows = size
    y, x = np.mgrid[0:rows, 0:cols] / max(rows, cols)
    if palette == "pathology":
        image = np.empty((rows, cols, 3))
        image[:] = (230, 170, 200)
        for cx, cy in rng.uniform(0, 1, (40, 2)) * (cols / max(rows, cols), rows / max(rows, cols)):
            image[(x - cx) ** 2 + (y - cy) ** 2 < 0.0015] = (90, 50, 140)
    else:
        image = np.stack([200 - 80 * y, 90 - 30 * y + 20 * x, 80 - 20 * x], -1)
        image[(np.abs(y - 0.6 * x - 0.2) < 0.04) & (x > 0.5)] = (200, 200, 210)  # a tool
    return np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)


def save_nifti(data: np.ndarray, spacing: float, path: Path) -> Path:
    """Save as a NIfTI in LPS-flipped orientation (as scanners' DICOM converts write it)."""
    affine = np.diag([-spacing, -spacing, spacing, 1.0])
    affine[:3, 3] = (110.0, 130.0, -60.0)  # mm, somewhere in a scanner
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), path)
    return path


def ct_study(bundle: Bundle, folder: Path, rng: np.random.Generator) -> tuple[str, list[Path]]:
    """A 160 x 160 x 80 CT at 1.5 mm; several channels: one file per contrast phase."""
    shape = (160, 160, 80)
    if bundle.channels == 1 or bundle.interactive:
        path = save_nifti(ct_volume(shape, rng), 1.5, folder / "ct.nii.gz")
        return "CT 160 x 160 x 80, 1.5 mm (NIfTI)", [path]
    phases = [
        save_nifti(ct_volume(shape, rng, 150.0 * i), 1.5, folder / f"phase{i}.nii.gz")
        for i in range(bundle.channels)
    ]
    return f"{bundle.channels} x CT 160 x 160 x 80, 1.5 mm (a NIfTI per phase)", phases


def mr_study(bundle: Bundle, folder: Path, rng: np.random.Generator) -> tuple[str, list[Path]]:
    """A 144 x 144 x 96 head MR at 1 mm (a 256 x 256 slice at 1.4 mm for a 2D bundle); one file per named
    sequence when the bundle takes several."""
    if bundle.spatial_dims == 2:
        slice_ = mr_volume((256, 256, 3), rng)[..., 1:2]
        return "MR slice 256 x 256, 1.4 mm (NIfTI)", [save_nifti(slice_, 1.4, folder / "mr.nii.gz")]
    shape = (144, 144, 96)
    names = [n for n in bundle.channel_names if n.lower() in MRI_SEQUENCES]
    if bundle.channels > 1 and len(names) == bundle.channels:
        paths = [
            save_nifti(mr_volume(shape, rng, i), 1.0, folder / f"{n.lower()}.nii.gz")
            for i, n in enumerate(names)
        ]
        return f"{len(paths)} x MR 144 x 144 x 96, 1 mm ({', '.join(names)}: a NIfTI each)", paths
    return "MR 144 x 144 x 96, 1 mm (NIfTI)", [save_nifti(mr_volume(shape, rng), 1.0, folder / "mr.nii.gz")]


def colour_study(bundle: Bundle, folder: Path, rng: np.random.Generator) -> tuple[str, list[Path]]:
    """An endoscopy frame (736 x 480) or a pathology or microscopy patch (256 x 256), RGB PNG."""
    palette = "endoscopy" if "endoscop" in bundle.name else "pathology"
    size = (736, 480) if palette == "endoscopy" else (256, 256)
    path = folder / f"{palette}.png"
    Image.fromarray(rgb_image(size, rng, palette)).save(path)
    return f"RGB PNG {size[0]} x {size[1]} ({palette})", [path]


def grey_study(bundle: Bundle, folder: Path, rng: np.random.Generator) -> tuple[str, list[Path]]:
    """A mammogram (16-bit grey PNG, 832 x 1024) or a grey 2D image (8-bit PNG, 256 x 256)."""
    if "mammo" in bundle.modality:
        y, x = np.mgrid[0:1024, 0:832]
        breast = ((x / 700.0) ** 2 + ((y - 512) / 480.0) ** 2 < 1) * 30000.0
        pixels = np.clip(breast + rng.normal(0, 2000, breast.shape) * (breast > 0), 0, 65535).astype(
            np.uint16
        )
        path = folder / "mammogram.png"
        Image.fromarray(pixels).save(path)
        return "mammogram, 16-bit grey PNG 832 x 1024", [path]
    y, x = np.mgrid[0:256, 0:256] / 256
    pixels = np.clip(100 + 80 * ((x - 0.5) ** 2 + (y - 0.5) ** 2 < 0.05) + rng.normal(0, 10, x.shape), 0, 255)
    path = folder / "image.png"
    Image.fromarray(pixels.astype(np.uint8)).save(path)
    return "grey PNG 256 x 256", [path]


def study_maker(bundle: Bundle) -> Callable[[Bundle, Path, np.random.Generator], tuple[str, list[Path]]]:
    """Which synthetic study suits the bundle's modality, channels and dimensionality."""
    if bundle.modality == "ct":
        return ct_study
    if bundle.modality.startswith("mr"):
        return mr_study
    if bundle.spatial_dims == 3:
        return ct_study if "ct" in bundle.task.lower() else mr_study
    return colour_study if bundle.channels >= 3 and "mammo" not in bundle.modality else grey_study


STUDIES = (  # what each maker makes, for the table's header
    "CT 160 x 160 x 80 at 1.5 mm (several channels: a file per phase)",
    "MR 144 x 144 x 96 at 1 mm (BraTS-like: a file per sequence), a 256 x 256 slice at 1.4 mm in 2D",
    "RGB PNG: endoscopy 736 x 480, pathology 256 x 256",
    "mammogram 16-bit PNG 832 x 1024, or grey PNG 256 x 256",
)


def target_args(bundle: Bundle) -> list[str]:
    """``--target`` for the bundle's output kind: a region for a map, a class for boxes, none otherwise."""
    return {"segmentation": ["--target", "region:1"], "detection": ["--target", "detection:0"]}.get(
        bundle.kind, []
    )


def run_child(command: list[str], timeout: float, log: Path) -> tuple[int | None, float, float]:
    """Run ``command`` with its output in ``log``; ``(exit code or None when killed at the time limit,
    seconds, peak resident memory of the child in GB)``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    killed = threading.Event()
    started = time.perf_counter()
    with log.open("wb") as output:
        child = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

        def kill() -> None:
            killed.set()
            os.killpg(child.pid, signal.SIGKILL)

        timer = threading.Timer(timeout, kill)
        timer.start()
        _, status, usage = os.wait4(child.pid, 0)  # this child's own rusage (RUSAGE_CHILDREN is cumulative)
        timer.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    return (None if killed.is_set() else child.returncode), seconds, usage.ru_maxrss / 2**20  # KiB on Linux


def explain_bundle(bundle: Bundle, work: Path, steps: int | None, timeout: float) -> Outcome:
    """Make the bundle's study, run ``medmdm explain`` on it and judge the result; a segmentation whose
    region 1 is empty (random weights) runs again on the first other label it predicts."""
    what, paths = study_maker(bundle)(bundle, work, np.random.default_rng(0))
    steps_given = ["--steps", str(steps)] if steps else []
    first = run_explain(bundle, what, paths, work, [*target_args(bundle), *steps_given], timeout)
    predicted = (
        re.search(r"predicts labels \[([\d, ]+)\]", first.detail) if first.result == "refused" else None
    )
    label = next((int(n) for n in predicted.group(1).split(",") if int(n)), 0) if predicted else 0
    if not label:
        return first
    again = run_explain(bundle, what, paths, work, ["--target", f"region:{label}", *steps_given], timeout)
    detail = f"region 1 empty, region {label}: {again.detail}"
    seconds, peak = first.seconds + again.seconds, max(first.peak_gb, again.peak_gb)
    return Outcome(bundle, what, again.result, detail, seconds, peak)


def run_explain(
    bundle: Bundle, what: str, paths: list[Path], work: Path, options: list[str], timeout: float
) -> Outcome:
    """``medmdm explain`` of the study's files with the bundle and ``options``, judged."""
    out = work / "out"
    command = [
        sys.executable, "-c", SEEDED_CLI, "explain", *map(str, paths), "--bundle", str(bundle.root),
        "--allow-random-weights", "--device", "cpu", "--out", str(out), "--quiet", "--overwrite", *options,
    ]  # fmt: skip
    code, seconds, peak = run_child(command, timeout, work / "log.txt")
    lines = [line for line in (work / "log.txt").read_text(errors="replace").splitlines() if line.strip()]
    errors = [line.removeprefix("medmdm: error: ") for line in lines if line.startswith("medmdm: error:")]
    if code is None:
        result, detail = "failed", f"over the time limit of {timeout:g} s"
    elif code == 0:
        problem = off_grid(out / "saliency.nii.gz", paths[0])
        result, detail = ("failed", problem) if problem else ("ok", explained_part(out / "report.json"))
    elif code == 2 and len(errors) == 1:
        result, detail = "refused", errors[0]
    else:
        shown = errors[-1] if errors else (lines[-1] if lines else "no output")
        result, detail = "failed", f"exit {code}: {shown}"
    return Outcome(bundle, what, result, detail.replace(f"{work}/", ""), seconds, peak)


def off_grid(saliency: Path, source: Path) -> str:
    """Why the map is not on the study's grid (shape, affine to 1e-3 mm), or ``""`` when it is."""
    with warnings.catch_warnings():  # the explain run said them already
        warnings.simplefilter("ignore")
        study = load_study(source)
    overlay = nib.load(saliency)
    if tuple(overlay.shape[: len(study.size)]) != tuple(study.size):
        return f"map of shape {overlay.shape} on a study of {study.size}"
    offset = float(np.abs(overlay.affine - study.affine.numpy()).max())
    return f"map affine off the study's by {offset:.3g} mm" if offset > GRID_TOLERANCE else ""


def explained_part(report: Path) -> str:
    """The target explained, as the report names it."""
    target = json.loads(report.read_text()).get("target", {})
    return f"{target.get('kind', '?')} {target.get('index', '')}".strip()


def shown(text: str) -> str:
    """A table cell: one line, no pipe, at most :data:`SHOWN_CHARACTERS`."""
    text = re.sub(r"\s+", " ", text).replace("|", "/")
    return text if len(text) <= SHOWN_CHARACTERS else text[: SHOWN_CHARACTERS - 1] + "…"


def table(outcomes: list[Outcome], steps: int | None, timeout: float, machine: str, total: int) -> str:
    """The Markdown section, between the markers, of the first ``len(outcomes)`` of ``total`` bundles."""
    counts = Counter(o.result for o in outcomes)
    scope = [o for o in outcomes if o.bundle.kind in ("classification", "segmentation")]
    scoped = Counter(o.result for o in scope)
    so_far = f" (the first {len(outcomes)} of {total}; the run goes on)" if len(outcomes) < total else ""
    steps_said = f"`--steps {steps}` (reduced, for time)" if steps else "default steps"
    lines = [
        START,
        "## The MONAI model zoo, bundle by bundle",
        "",
        f"Written by `benchmarks/model_zoo.py` ({machine}; random weights, `medmdm explain` at default "
        f"settings but {steps_said}, a time limit of {timeout:g} s per bundle). Each bundle ran on a "
        "synthetic study of its modality: " + "; ".join(STUDIES) + ". Segmentations explain `region:1`, "
        "detections `detection:0`. `ok`: a map on the study's grid (shape and affine to 1e-3 mm); "
        "`refused`: exit code 2 and one line; `failed`: anything else. Peak memory is the child process's "
        "resident set.",
        "",
        f"{len(outcomes)} bundles{so_far}: {counts['ok']} ok, {counts['refused']} refused, "
        f"{counts['failed']} failed; of the {len(scope)} classification and segmentation bundles: "
        f"{scoped['ok']} ok, {scoped['refused']} refused, {scoped['failed']} failed.",
        "",
        "| bundle | task | input | result | seconds | peak memory (GB) |",
        "|---|---|---|---|---:|---:|",
    ]
    for o in outcomes:
        result = o.result if o.result == "ok" and not o.detail else f"{o.result}: {shown(o.detail)}"
        task = f"{o.bundle.kind} ({shown(o.bundle.task)})"
        lines.append(
            f"| {o.bundle.name} | {task} | {o.study} | {result} | {o.seconds:.0f} | {o.peak_gb:.1f} |"
        )
    return "\n".join([*lines, END]) + "\n"


ROW = re.compile(
    r"^\| (?P<name>[^|]+?) \| [^|]* \| (?P<study>[^|]*?) \| "
    r"(?P<result>ok|refused|failed)(?:: (?P<detail>[^|]*?))? \| (?P<seconds>[\d.]+) \| (?P<peak>[\d.]+) \|$",
    flags=re.MULTILINE,
)


def recorded(text: str, roots: list[Path]) -> dict[str, Outcome]:
    """The rows of the table in ``text`` for the bundles of ``roots``, by bundle name."""
    bundles = {root.name: root for root in roots}
    return {
        row["name"]: Outcome(
            read_bundle(bundles[row["name"]]),
            row["study"],
            row["result"],
            row["detail"] or "",
            float(row["seconds"]),
            float(row["peak"]),
        )
        for row in ROW.finditer(text)
        if row["name"] in bundles
    }


def with_section(text: str, section: str) -> str:
    """``text`` with its model-zoo section replaced by ``section``, or ``section`` appended."""
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END) + r"\n?", flags=re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: section, text, count=1)
    return text.rstrip("\n") + "\n\n" + section


def bundle_roots(zoo: Path, names: list[str] | None) -> list[Path]:
    """The bundle folders of a checkout (its ``models`` folder, or the checkout), or those named."""
    models = zoo / "models" if (zoo / "models").is_dir() else zoo
    roots = sorted(p for p in models.iterdir() if (p / "configs" / "metadata.json").is_file())
    if names:
        unknown = sorted(set(names) - {p.name for p in roots})
        if unknown:
            raise SystemExit(f"model_zoo: no bundle {', '.join(unknown)} in {models}")
        roots = [p for p in roots if p.name in names]
    if not roots:
        raise SystemExit(f"model_zoo: no bundle (a folder with configs/metadata.json) in {models}")
    return roots


def main(argv: list[str] | None = None) -> int:
    """Run the bundles, print the table and write it into docs/bundles.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "zoo", type=Path, help="a local checkout of the MONAI model zoo (or its models folder)"
    )
    parser.add_argument("--bundle", action="append", help="only this bundle (repeatable)")
    parser.add_argument("--steps", type=int, help="optimisation steps per stage (fewer: quicker, coarser)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per bundle (default 900)")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    parser.add_argument(
        "--update", action="store_true", help="with --bundle: replace those rows of the table, keep the rest"
    )
    parser.add_argument(
        "--machine",
        default=f"{platform.machine()}, {os.cpu_count()} cores, CPU",
        help="the machine, as the table's header says it",
    )
    args = parser.parse_args(argv)
    outcomes: list[Outcome] = []
    roots = bundle_roots(args.zoo, args.bundle)
    write = not args.no_write and (args.update or not args.bundle)  # a part of the zoo does not replace it
    everything = bundle_roots(args.zoo, None) if args.update else roots
    kept = recorded(DOC.read_text(), everything) if args.update else {}
    for number, root in enumerate(roots, start=1):
        bundle = read_bundle(root)
        with tempfile.TemporaryDirectory(prefix=f"zoo-{root.name}-") as work:
            outcome = explain_bundle(bundle, Path(work), args.steps, args.timeout)
        outcomes.append(outcome)
        print(
            f"[{number}/{len(roots)}] {root.name} ({bundle.kind}): {outcome.result} {outcome.seconds:.0f} s "
            f"{outcome.peak_gb:.1f} GB {outcome.detail}",
            file=sys.stderr,
            flush=True,
        )
        rows = [kept.get(root.name) for root in everything] if args.update else outcomes
        merged = {o.bundle.name: o for o in [*filter(None, rows), *outcomes]}
        shown_rows = [merged[root.name] for root in everything if root.name in merged]
        section = table(shown_rows, args.steps, args.timeout, args.machine, len(everything))
        if write:  # after each bundle, so that a run cut short leaves what it found
            DOC.write_text(with_section(DOC.read_text(), section))
    print(section)
    return 1 if any(o.result == "failed" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
