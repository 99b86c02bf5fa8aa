#!/usr/bin/env bash
# Full-data runs and the GPU benchmark on a GPU machine, inside a fixed time, with everything
# they measured gathered in one folder to bring back.
#
#   bash scripts/gpu.sh ZIP SECONDS RUN...
#
# ZIP: the official archive. SECONDS: the time all of it may take; a run still going then is
# stopped with Ctrl-C (its record says so, with the epochs it finished; `lab train --resume`
# continues it) and no later one starts. RUN: the options of one `lab train`, e.g.
# "--preset best --model resnet18", or `bench [OPTIONS]` for benchmarks/train.py --variants all
# (e.g. "bench --models resnet18,resnet20").
# It needs only torch, torchvision, numpy, pandas and tqdm. Runs go to $RUNS_ROOT (runs/gpu).
# In $OUT (default runs/gpu-out): records.tgz (unpack into results/, then `lab runs`),
# benchmark.txt, log.txt.
set -u -o pipefail
zip=$(realpath "$1") seconds=$2
shift 2
cd "$(dirname "$0")/.."  # the repository's root: `python -m lab.cli` needs no install
out=${OUT:-runs/gpu-out}
mkdir -p "$out"
python=${PYTHON:-python3}  # the GPU image's python3 holds torch
min_left=${MIN_LEFT:-30}  # seconds a run needs left to be worth starting
deadline=$(($(date +%s) + seconds))
export TINY_IMAGENET=$zip LAB_DATA_DIR=${LAB_DATA_DIR:-$HOME/lab-data} PYTHONUNBUFFERED=1
runs_root=${RUNS_ROOT:-runs/gpu}
exec > >(tee -a "$out/log.txt") 2>&1

left() { echo $((deadline - $(date +%s))); }
until_deadline() {  # Ctrl-C at the deadline
  local seconds_left
  seconds_left=$(left)
  [ "$seconds_left" -gt 0 ] || return 124
  timeout -s INT -k 30 "$seconds_left" "$@"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$python" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())'
until_deadline "$python" -m lab.cli data prepare --data "$zip" || exit 1
for run in "$@"; do
  if [ "$(left)" -lt "$min_left" ]; then
    echo "=== not started, out of time: $run"
    continue
  fi
  start=$(date +%s)
  echo "=== $run"
  if [[ $run == bench* ]]; then
    # shellcheck disable=SC2086  # options after `bench`
    until_deadline "$python" benchmarks/train.py --variants all --batch-size 256 --data "$zip" \
      ${run#bench} | tee -a "$out/benchmark.txt"
  else
    # shellcheck disable=SC2086  # a RUN is a list of options
    until_deadline "$python" -m lab.cli train $run --device "${DEVICE:-cuda}" \
      --runs-root "$runs_root" --quiet
  fi
  echo "=== exit $? after $(($(date +%s) - start)) s: $run"
done
"$python" -m lab.cli runs "$runs_root"
"$python" -m lab.cli export "$runs_root" "$out/records" >/dev/null &&
  tar czf "$out/records.tgz" -C "$out" records && rm -rf "$out/records"
