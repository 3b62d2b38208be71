#!/usr/bin/env bash
# The GPU check: the CUDA tests, the benchmark on CUDA, the README's sampling command, and its
# flow-class and ddpm-class fast-recipe training commands on the GPU, each scored by `evaluate`.
# Run from the repository root on a CUDA machine with a Python that has the lab's requirements
# (W&B and Streamlit are not needed; diffusers only for the DeepFloyd IF tests):
#   make gpu-check     (or, with any Python: PYTHON=python3 bash tests/device_check.sh)
# Every part runs even when one fails; the exit status says whether any did. Text and JSON (eight
# files) go to $OUT (default test-artifacts/device), the runs to a temporary folder. A few minutes
# on a current GPU.
set -uo pipefail
py=${PYTHON:-python3}
out=${OUT:-test-artifacts/device}
runs=$(mktemp -d)
trap 'rm -rf "$runs"' EXIT
mkdir -p "$out"
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0} PYTHONUNBUFFERED=1
failed=0

part() {  # part NAME FILE COMMAND...: COMMAND's output appended to $out/FILE, with its seconds
  local name=$1 file=$2 start=$SECONDS
  shift 2
  echo "== $name" | tee -a "$out/$file"
  "$@" >>"$out/$file" 2>&1 || { failed=1; echo "FAILED: $name" | tee -a "$out/$file"; }
  echo "== $name: $((SECONDS - start)) s" | tee -a "$out/$file"
}

part "GPU" gpu.txt nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
part "torch" gpu.txt "$py" -c "import torch; print('torch', torch.__version__, 'CUDA', \
torch.version.cuda, torch.cuda.get_device_name(0), 'bf16', torch.cuda.is_bf16_supported())"
part "CUDA tests" pytest-cuda.txt "$py" -m pytest -m cuda -q -p no:cacheprovider \
  tests/test_cuda.py tests/training/test_resume.py tests/training/test_bundled_runs.py \
  tests/test_bench_smoke.py tests/samplers/test_cli.py
part "bench" bench.txt "$py" -m tests.bench --quick --device cuda \
  --sections peak,training,preview,sampling --out "$out/bench.json"
for attempt in 1 2; do  # the README's sampling command; the first pays for CUDA's start-up
  part "sample command ($attempt)" sample.txt "$py" -m training sample \
    training/pretrained_runs/flow-class-d32 --per-class 50 --guidance-scale 5 --sampler heun \
    --steps 50 --device cuda --out "$runs/sample.npz"
done
for experiment in flow-class ddpm-class; do
  part "$experiment --recipe fast" fast-recipe.txt "$py" -m training "$experiment" --recipe fast \
    --dataset mnist-5k --seed 0 --device cuda --wandb-mode disabled --name "$experiment" \
    --runs-dir "$runs"
  part "evaluate $experiment" fast-recipe.txt "$py" -m training evaluate "$runs/$experiment" \
    --guidance 1 5 --repeats 2 --device cuda
  cp "$runs/$experiment/summary.json" "$out/summary-$experiment.json" 2>/dev/null
  cp "$runs/$experiment/evaluation.json" "$out/evaluation-$experiment.json" 2>/dev/null
done
exit "$failed"
