"""Speed of the default ``hdm`` explainer against the bare model's forward+backward throughput.

Models (random weights): MONAI's DenseNet121 (one input channel, two classes), 2D and 3D, and the
small three-layer CNN of :func:`medmdm.testing.lesion_cnn` (2D). Prints one JSON line per input:
seconds per explanation (the first call, and the median of the following ones), samples through the
model, steps and levels run, the explainer's samples/s and the bare model's forward+backward (to the
input) samples/s at the explainer's mean per-step batch, their ratio, the peak GPU memory, and the option
``compile`` with whether it fell back to the eager model (``--options '{"compile": "reduce-overhead"}'``).

Explanations and bare passes are interleaved (one explanation, then as many bare passes as it had
steps, ``--repeats`` times) and the medians compared, so that load from other processes on a shared
machine falls on both alike.

``--profile`` adds, from ``torch.profiler``, each part's share of an explanation's time: the model
(forward and backward), the masks (upsampling the grids, composing the masked images and the
gradient back to the grids), the loss, the optimiser, the blur, host syncs (reading the loss back
for early stopping), and the rest (the cascade's bookkeeping and its extra model passes).

Examples
--------
GPU, the target sizes::

    python benchmarks/speed.py

A quick CPU run at small sizes, with the profile::

    python benchmarks/speed.py --device cpu --size-2d 64 --size-3d 32 --repeats 3 --profile
    python benchmarks/speed.py --device cpu --model small-cnn --dims 2 --size-2d 224
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import torch
from monai.networks.nets import DenseNet121
from torch.profiler import ProfilerActivity, profile

from medmdm import explainers
from medmdm.explainers.mask_optimisation import PROFILE_PARTS
from medmdm.testing import box_image, lesion_cnn

MODELS: dict[str, Callable[[int], torch.nn.Module]] = {
    "densenet121": lambda dims: DenseNet121(spatial_dims=dims, in_channels=1, out_channels=2),
    "small-cnn": lambda dims: lesion_cnn(),
}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_pass(model: torch.nn.Module, x: torch.Tensor, batch: int, autocast: torch.dtype | None) -> Callable:
    """One forward+backward-to-the-input pass of the frozen model at ``batch`` samples."""
    inputs = x.expand(batch, *x.shape[1:]).clone().requires_grad_(True)

    def step() -> None:
        with torch.autocast(
            device_type=x.device.type, dtype=autocast or torch.float32, enabled=autocast is not None
        ):
            out = model(inputs)
        out[:, 0].float().sum().backward()
        inputs.grad = None

    return step


def timed(device: torch.device, work: Callable[[], object]) -> float:
    synchronize(device)
    start = time.perf_counter()
    work()
    synchronize(device)
    return time.perf_counter() - start


def profile_shares(explainer: explainers.Explainer, x: torch.Tensor) -> dict[str, float]:
    """Each part's share of one explanation's time (the parts the engine labels, and the rest)."""
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if x.is_cuda else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        explainer(x)
        synchronize(x.device)
        total = time.perf_counter() - start
    seconds = {part: 0.0 for part in PROFILE_PARTS}
    for event in prof.key_averages():
        if event.key in seconds:
            seconds[event.key] += event.cpu_time_total / 1e6
    shares = {part.removeprefix("medmdm."): round(value / total, 3) for part, value in seconds.items()}
    shares["rest"] = round(1 - sum(shares.values()), 3)
    return shares


def run(
    model_name: str, dims: int, size: int, device: torch.device, repeats: int, options: dict, profiled: bool
) -> dict:
    torch.manual_seed(0)
    model = MODELS[model_name](dims).to(device).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    spatial = (size,) * dims
    quarter, half = size // 4, size // 2
    x = box_image(spatial, [(quarter, half)] * dims).to(device)
    explainer = explainers.create("hdm", model, **options)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    first = timed(device, lambda: explainer(x))
    explanation = explainer.last
    steps = int(explanation.steps.sum())
    per_step = max(1, round(explanation.samples / steps))
    mixed = explainer.options.mixed_precision
    autocast = torch.bfloat16 if mixed or (mixed is None and device.type == "cuda" and dims == 2) else None
    bare = bare_pass(model, x, per_step, autocast)
    for _ in range(3):
        bare()
    seconds, bare_seconds = [], []
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=device.type == "cuda"):
        for _ in range(repeats):
            seconds.append(timed(device, lambda: explainer(x)))
            bare_seconds.append(timed(device, lambda: [bare() for _ in range(steps)]) / steps)
    steady, bare_step = statistics.median(seconds), statistics.median(bare_seconds)
    achieved, bare_rate = explanation.samples / steady, per_step / bare_step
    row = {
        "model": model_name,
        "dims": dims,
        "size": size,
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"cpu x{torch.get_num_threads()}",
        "seconds_first": round(first, 3),
        "seconds": round(steady, 3),
        "samples": explanation.samples,
        "steps": steps,
        "levels_run": sum(bool(level.ran[0]) for level in explanation.levels),
        "batch_per_step": per_step,
        "explainer_samples_per_s": round(achieved, 1),
        "bare_samples_per_s": round(bare_rate, 1),
        "throughput_ratio": round(achieved / bare_rate, 3),
        "compile": explainer.options.compile,
        "compile_fell_back": any("torch.compile" in note for note in explanation.warnings),
        "peak_gpu_memory_gib": (
            round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None
        ),
    }
    if profiled:
        row["profile"] = profile_shares(explainer, x)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--model", default="densenet121", choices=sorted(MODELS))
    parser.add_argument("--dims", default="2,3", help="2, 3 or 2,3 (the small CNN is 2D only)")
    parser.add_argument("--size-2d", type=int, default=224)
    parser.add_argument("--size-3d", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timed explanations")
    parser.add_argument("--options", default="{}", help="JSON of hdm options")
    parser.add_argument("--profile", action="store_true", help="add each part's share of the time")
    args = parser.parse_args()
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    options = json.loads(args.options)
    for dims in (int(d) for d in args.dims.split(",")):
        size = args.size_2d if dims == 2 else args.size_3d
        row = run(args.model, dims, size, device, args.repeats, options, args.profile)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
