#!/usr/bin/env bash
# The speed check of docs/benchmarks.md, in one command (at most about 8 minutes on a GPU machine).
#
# Prints, for MONAI's DenseNet121 (random weights) at 2D 224^2 and 3D 96^3, one JSON line each from
# benchmarks/speed.py: seconds per default `hdm` explanation, samples, the fraction of the bare
# model's forward+backward throughput at the same batch size, and the peak GPU memory; then the
# studies per hour of `medmdm batch` over sample_data/studies with the demo bundles (NIfTI output).
# Needs only the README's install; run it from anywhere in the repository.
#
#   bash benchmarks/gpu_check.sh          # on a CUDA machine: the target sizes
#   bash benchmarks/gpu_check.sh --cpu    # on a CPU: 48^2, 32^3 and 10 steps (a few minutes idle)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the scripts import medmdm from this tree

if [[ "${1:-}" == "--cpu" ]]; then
    device=cpu size_2d=48 size_3d=32 repeats=1 steps=(--steps 10) limits=(600 600 600)
elif [[ -z "${1:-}" ]]; then
    python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: use --cpu')"
    device=cuda size_2d=224 size_3d=96 repeats=3 steps=() limits=(150 200 120)
else
    echo "usage: bash benchmarks/gpu_check.sh [--cpu]" >&2
    exit 2
fi

python - "$device" <<'PYTHON'
import os, sys, torch
import medmdm
device = sys.argv[1]
name = torch.cuda.get_device_name(0) if device == "cuda" else f"CPU, {torch.get_num_threads()} torch threads"
print(f"medmdm {medmdm.__version__}, torch {torch.__version__}, {name}, {os.cpu_count()} cores", flush=True)
PYTHON

# Each part has its own time limit, so that the whole stays under 8 minutes on a GPU.
stage() {
    local limit=$1
    shift
    if ! timeout "$limit" "$@"; then
        echo "{\"failed_or_over_${limit}_s\": \"$*\"}"
    fi
}

echo "# hdm on DenseNet121: seconds per explanation, samples, ratio to bare throughput, peak memory"
options=$([[ $device == cpu ]] && echo '{"steps": 10}' || echo '{}')
for dims in 2 3; do
    stage "${limits[dims - 2]}" python benchmarks/speed.py --device "$device" --dims "$dims" \
        --size-2d "$size_2d" --size-3d "$size_3d" --repeats "$repeats" --options "$options"
done
echo "# medmdm batch on sample_data/studies with the demo bundles: studies per hour"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
start=$(date +%s.%N)
stage "${limits[2]}" python -m medmdm.cli batch sample_data/studies --out "$out/batch" --devices "$device" \
    --format nifti --quiet "${steps[@]}"
python - "$out/batch" "$start" "$(date +%s.%N)" <<'PYTHON'
import json, sys
from pathlib import Path
folder, start, end = Path(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
done = len(list(folder.glob("*/saliency.nii.gz")))
seconds = end - start
print(json.dumps({"studies": done, "seconds": round(seconds, 1), "studies_per_hour": round(done * 3600 / seconds, 1)}))
PYTHON
