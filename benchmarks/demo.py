"""End-to-end time of ``medmdm explain`` on the sample studies with the demo bundles.

Runs the command line as a user would (a fresh process, default settings: ``hdm``, every output format
that fits the study) on each sample study and prints the wall-clock seconds, the explainer's share, the
samples through the model and the class score the map keeps.

Examples
--------
::

    python benchmarks/demo.py                  # CPU (and the GPU, when there is one)
    python benchmarks/demo.py --device cpu --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

SAMPLES = Path(__file__).resolve().parents[1] / "sample_data" / "studies"
STUDIES = {"2D radiograph (DICOM file)": "cr_lesion.dcm", "3D CT (DICOM series)": "ct_nodule"}


def run_once(study: Path, device: str, out: Path) -> tuple[float, float, dict]:
    """Wall seconds, CPU seconds (user + system) and the report of one ``medmdm explain`` process."""
    command = [sys.executable, "-m", "medmdm.cli", "explain", str(study), "--out", str(out)]
    command += ["--device", device, "--quiet"]
    start, cpu_start = time.perf_counter(), _children_cpu_seconds()
    finished = subprocess.run(command, capture_output=True, text=True)
    seconds, cpu_seconds = time.perf_counter() - start, _children_cpu_seconds() - cpu_start
    if finished.returncode != 0:
        raise SystemExit(f"medmdm explain failed on {study}: {finished.stderr.strip()}")
    return seconds, cpu_seconds, json.loads((out / "report.json").read_text())


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", action="append", help="cpu, cuda (default: cpu, and cuda when present)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    devices = args.device or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    cpu = f"{torch.get_num_threads()}-thread CPU"
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    load = os.getloadavg()[0]
    print(f"load average before: {load:.1f} on {os.cpu_count()} cores")
    columns = ("study", "device", "end to end (s)", "CPU time (s)", "explain (s)", "samples", "score kept")
    print("| " + " | ".join(columns) + " |")
    print("|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as scratch:
        for label, name in STUDIES.items():
            for device in devices:
                times, cpu_times, report = [], [], {}
                for repeat in range(args.repeats):
                    seconds, cpu_seconds, report = run_once(
                        SAMPLES / name, device, Path(scratch) / f"{name}-{device}-{repeat}"
                    )
                    times.append(seconds)
                    cpu_times.append(cpu_seconds)
                target = report["target"]
                kept = target["score_masked"] / target["score_original"] if target["score_original"] else 0.0
                print(
                    f"| {label} | {gpu if device.startswith('cuda') else cpu} | {min(times):.1f} | "
                    f"{min(cpu_times):.1f} | {report['timings']['explain']:.1f} | "
                    f"{report['explanation']['samples']} | {kept:.2f} |"
                )


if __name__ == "__main__":
    main()
