#!/usr/bin/env bash
# The speed check of docs/benchmarks.md, in one command (at most about 8 minutes on a GPU machine).
#
# Prints, for MONAI's DenseNet121 (random weights) at 2D 224^2 and 3D 96^3, one JSON line each from
# benchmarks/speed.py: seconds per default `hdm` explanation, samples, the fraction of the bare
# model's forward+backward throughput at the same batch size, and the peak GPU memory; then the 2D
# line again with the option compile="reduce-overhead" (torch.compile with CUDA graphs; its
# compile_fell_back says whether it ran eagerly instead; with --cpu, the small CNN of the tests, off
# and on, as inductor takes minutes per DenseNet graph on a CPU); then, from benchmarks/batch.py,
# the studies per hour of `medmdm batch` on phantom radiographs and CTs with the demo bundles (NIfTI
# output), with --studies-per-call 1 and auto (4 on CUDA).
# Needs only the README's install; run it from anywhere in the repository.
#
#   bash benchmarks/gpu_check.sh          # on a CUDA machine: the target sizes
#   bash benchmarks/gpu_check.sh --cpu    # on a CPU: 48^2, 32^3, 10 steps, 1 vs 2 studies per call
#                                         # (auto is 1 on the CPU; a few minutes idle)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # the scripts import medmdm from this tree

if [[ "${1:-}" == "--cpu" ]]; then
    device=cpu size_2d=48 size_3d=32 repeats=1 steps=(--steps 10) per_call=(1 2) studies=2
    options='{"steps": 10}' compile_model=small-cnn limits=(600 600 600 600)
    compile_runs=("$options" '{"steps": 10, "compile": "reduce-overhead"}')
elif [[ -z "${1:-}" ]]; then
    python -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: use --cpu')"
    device=cuda size_2d=224 size_3d=96 repeats=2 steps=(--steps 40) per_call=(1 auto) studies=4
    options='{}' compile_model=densenet121 limits=(60 120 180 110)
    compile_runs=('{"compile": "reduce-overhead"}')  # compile off: the first 2D line
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
for dims in 2 3; do
    stage "${limits[dims - 2]}" python benchmarks/speed.py --device "$device" --dims "$dims" \
        --size-2d "$size_2d" --size-3d "$size_3d" --repeats "$repeats" --options "$options"
done
echo "# $compile_model 2D with compile=\"reduce-overhead\" (seconds_first includes compiling; compile_fell_back)"
for compile_options in "${compile_runs[@]}"; do
    stage "${limits[2]}" python benchmarks/speed.py --device "$device" --model "$compile_model" --dims 2 \
        --size-2d "$size_2d" --repeats 1 --options "$compile_options"
done
echo "# medmdm batch on $studies phantom radiographs and $studies CTs with the demo bundles: studies per hour"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
stage "${limits[3]}" python benchmarks/batch.py --devices "$device" --workers 1 --studies "$studies" \
    --studies-per-call "${per_call[@]}" "${steps[@]}" --scratch "$out/batch"
