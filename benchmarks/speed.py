"""Speed of the default ``hdm`` explainer on MONAI's DenseNet121 (random weights), 2D and 3D.

Prints, per dimensionality: seconds per explanation (first call, and the mean of the following
calls), samples passed through the model per explanation, steps and levels run, and the ratio of
the explainer's forward+backward samples/s to the bare model's at the per-step batch size.

Examples
--------
GPU, the target sizes::

    python benchmarks/speed.py

A quick CPU run at small sizes::

    python benchmarks/speed.py --device cpu --size-2d 64 --size-3d 32 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from monai.networks.nets import DenseNet121

from medmdm import explainers
from medmdm.testing import box_image


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_throughput(
    model: torch.nn.Module, x: torch.Tensor, batch: int, autocast: torch.dtype | None, repeats: int = 20
) -> float:
    """Forward+backward-to-the-input samples/s of the frozen model at ``batch``."""
    inputs = x.expand(batch, *x.shape[1:]).clone().requires_grad_(True)

    def step() -> None:
        with torch.autocast(
            device_type=x.device.type, dtype=autocast or torch.float32, enabled=autocast is not None
        ):
            out = model(inputs)
        out[:, 0].float().sum().backward()
        inputs.grad = None

    for _ in range(3):
        step()
    synchronize(x.device)
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    synchronize(x.device)
    return batch * repeats / (time.perf_counter() - start)


def run(dims: int, size: int, device: torch.device, repeats: int, options: dict) -> dict:
    torch.manual_seed(0)
    model = DenseNet121(spatial_dims=dims, in_channels=1, out_channels=2).to(device).eval()
    for param in model.parameters():
        param.requires_grad_(False)
    spatial = (size,) * dims
    quarter, half = size // 4, size // 2
    x = box_image(spatial, [(quarter, half)] * dims).to(device)
    explainer = explainers.create("hdm", model, **options)

    synchronize(device)
    start = time.perf_counter()
    explainer(x)
    synchronize(device)
    first = time.perf_counter() - start
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        explanation = explainer.explain(x)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    steady = sum(seconds) / len(seconds)
    explanation = explainer.last

    per_step = max(1, round(explanation.samples / int(explanation.steps.sum())))
    autocast = torch.bfloat16 if device.type == "cuda" and dims == 2 else None
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=True):
        bare = bare_throughput(model, x, per_step, autocast)
    achieved = explanation.samples / steady
    return {
        "dims": dims,
        "size": size,
        "device": str(device),
        "seconds_first": round(first, 3),
        "seconds": round(steady, 3),
        "samples": explanation.samples,
        "steps": int(explanation.steps.sum()),
        "levels_run": sum(bool(level.ran[0]) for level in explanation.levels),
        "batch_per_step": per_step,
        "explainer_samples_per_s": round(achieved, 1),
        "bare_samples_per_s": round(bare, 1),
        "throughput_ratio": round(achieved / bare, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--dims", default="2,3", help="2, 3 or 2,3")
    parser.add_argument("--size-2d", type=int, default=224)
    parser.add_argument("--size-3d", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--options", default="{}", help="JSON of hdm options")
    args = parser.parse_args()
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    options = json.loads(args.options)
    for dims in (int(d) for d in args.dims.split(",")):
        size = args.size_2d if dims == 2 else args.size_3d
        print(json.dumps(run(dims, size, device, args.repeats, options)), flush=True)


if __name__ == "__main__":
    main()
