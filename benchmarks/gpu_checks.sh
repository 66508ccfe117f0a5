#!/usr/bin/env bash
# Every GPU check of the project in one run, for a machine with one CUDA GPU and no network access:
# the CUDA tests, the NodeBacktrack speed table (batch 8 and 64, peak GPU memory), the localisation metrics on the
# GPU against the CPU (identical values required) and the end-to-end evaluate probe. Each step has its own time
# limit, so one slow step cannot take the others' time; a step's failure is reported and the next one runs.
#
#   bash benchmarks/gpu_checks.sh OUT_DIR [WHEEL_DIR]
#
# OUT_DIR receives two files: gpu_checks.log (every step's output and a summary line per step: exit status and
# seconds) and gpu_results.tar.gz (the benchmarks' JSON and Markdown results). WHEEL_DIR (default .whl) holds
# wheels of the packages the GPU machine lacks; with none there, the installed packages are used. To make them on a
# machine with the package index, for the GPU machine's Python (3.12 here):
#
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#       -d .whl captum==0.9.0 zarr==3.1.6 numcodecs==0.16.6 donfig==0.8.1.post1 google-crc32c==1.9.0 \
#       pycocotools==2.0.11
#
# Step limits (seconds) can be changed through the environment: TESTS_S, BACKTRACK_S, METRICS_S, PROBE_S.
set -u
out=${1:?usage: bash benchmarks/gpu_checks.sh OUT_DIR [WHEEL_DIR]}
wheels=${2:-.whl}
mkdir -p "$out"
log="$out/gpu_checks.log"
results=$(mktemp -d)
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD"
if compgen -G "$wheels/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/gpu_site \
        "$wheels"/*.whl >> "$log" 2>&1 || { echo "wheel install failed" | tee -a "$log"; exit 1; }
    export PYTHONPATH="/tmp/gpu_site:$PWD"
fi

step() {  # step NAME LIMIT COMMAND...: run COMMAND under LIMIT seconds, its output appended to the log
    local name=$1 limit=$2 started rc
    shift 2
    echo "=== $name (limit ${limit} s): $*" >> "$log"
    started=$(date +%s)
    timeout "$limit" "$@" >> "$log" 2>&1
    rc=$?
    echo "--- $name: exit $rc after $(( $(date +%s) - started )) s" | tee -a "$log"
}

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
    python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, \
'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
} >> "$log" 2>&1

step cuda_tests "${TESTS_S:-150}" python3 -m pytest -q -m cuda -p no:cacheprovider tests/test_cuda.py
step node_backtrack_speed "${BACKTRACK_S:-200}" python3 benchmarks/bench_node_backtrack.py --speed-only \
    --device cuda --batch 8 64 --out-dir "$results"
step localisation_metrics "${METRICS_S:-90}" python3 benchmarks/bench_localisation_metrics.py --device cuda \
    --size 224 --batch 64 --repeats 3 --out "$results/localisation_metrics_cuda.json"
step evaluate_probe "${PROBE_S:-150}" env N_IMAGES=128 RESULTS_DIR="$results" \
    python3 benchmarks/probe_evaluate_gpu.py
tar -czf "$out/gpu_results.tar.gz" -C "$results" .
