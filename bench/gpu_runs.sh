#!/usr/bin/env bash
# The runs for a lent GPU machine (about 9 minutes on one H200; see docs/default-model.md):
#   1. bench/gpu_check.py: the shipped model's CUDA path against the CPU's, and GPU generation times;
#   2. stopped (SIGTERM: checkpoint, export) after BUDGET_S seconds: the paper-width recipe
#      (bench/default_model.py), alone on the GPU; with REAL=1 also the cpu preset's defaults on the
#      real-micrograph cases (bench/real_micrographs.py) beside it. Eleven processes on one GPU each got a
#      CPU's speed (CHANGELOG.md, "Experiments not shipped"): keep it to a few;
#   3. bench/gpu_pack.py packs models, configs, events and logs into OUT (15 MiB parts).
# Inputs (runs/ is not in git): runs/default_data and runs/real_data, copied from STAGE when it holds them.
# Usage: OUT=dir BUDGET_S=450 [STAGE=.gpu] [REAL=1] [CASES="sofc_anode ..."] [ONLY="paper real_composite"]
#        bash bench/gpu_runs.sh
# (CASES: the real-micrograph cases REAL=1 trains, default the six of docs/real-micrographs.md.)
# Here: python bench/gpu_pack.py unpack DIR --to runs/gpu_back
set -u
budget=${BUDGET_S:-450}
out=${OUT:-runs/gpu_out}
stage=${STAGE:-.gpu}
python=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}   # several processes share 16 cores
mkdir -p runs/gpu "$out"
for folder in default_data real_data; do
  [ -d "$stage/$folder" ] && cp -r "$stage/$folder" runs/
done
{ date; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc; } > runs/gpu/machine.txt 2>&1
"$python" -c "import torch, numpy, scipy, skimage; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  >> runs/gpu/machine.txt 2>&1
# the CUDA check beside the training runs (it needs the GPU for well under a minute)
timeout 120 "$python" bench/gpu_check.py --json runs/gpu/cuda_check.json > runs/gpu/cuda_check.log 2>&1 &

wanted() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }
launch() {   # name, command...: in the background, stopped after the budget, log in runs/gpu/NAME.log
  local name=$1; shift
  wanted "$name" || return 0
  ( timeout -s TERM -k 90 "$budget" "$@" > "runs/gpu/$name.log" 2>&1; echo "exit $?" >> "runs/gpu/$name.log" ) &
}
launch paper "$python" bench/default_model.py train --recipe paper-widths --run runs/gpu/paper
if [ -n "${REAL:-}" ]; then
  for case in ${CASES:-sofc_anode sem_seg blobs_0.3 blobs_0.5 spheres composite}; do
    launch "real_$case" "$python" bench/real_micrographs.py train "$case" --set threads=2
  done
fi
wait
runs=(runs/gpu/*.log runs/gpu/*.json runs/gpu/machine.txt)
for run in runs/gpu/* runs/real_*; do [ -f "$run/config.json" ] && runs+=("$run"); done
"$python" bench/gpu_pack.py pack "${runs[@]}" --out "$out"
cp runs/gpu/cuda_check.log runs/gpu/machine.txt "$out"/ 2>/dev/null
tail -n 3 runs/gpu/*.log
