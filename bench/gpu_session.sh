#!/usr/bin/env bash
# The GPU session of issue 14 as ONE command (device time is short): prints the card, then runs bench/gpu_session.py
# through bench/device.sh (which installs the wheels carried in .whl/), its log and results under $OUT (default
# ./gpu-session-out). Extra arguments go to gpu_session.py, e.g. the CPU smoke run:
#   OUT=/tmp/s bash bench/gpu_session.sh --model tiny --device cpu --width 96 --height 64 --seconds 1
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-session-out}"
PYTHON="${PYTHON:-python3}"  # the interpreter that has torch
mkdir -p "$OUT"
{
    date -u
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm,clocks.max.sm --format=csv
    "$PYTHON" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
} 2>&1 | tee "$OUT/session.log"
PYTHON="$PYTHON" bash bench/device.sh "$PYTHON" bench/gpu_session.py --out "$OUT" "$@" 2>&1 | tee -a "$OUT/session.log"
