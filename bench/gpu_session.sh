#!/usr/bin/env bash
# The GPU session of issue 14 as ONE command (device time is short): installs the wheels carried in .whl/ (the
# GPU machine has torch and transformers but not diffusers, av, pydantic, soundfile), prints the card, then runs
# bench/gpu_session.py with its log and results under $OUT (default ./gpu-session-out). Extra arguments go to
# gpu_session.py, e.g. the CPU smoke run:
#   OUT=/tmp/s bash bench/gpu_session.sh --model tiny --device cpu --width 96 --height 64 --seconds 1
# Wheels (here, once; see the device tool's notes): pip download --no-deps --only-binary=:all: for cp312
# manylinux of diffusers==0.42.1 av pydantic pydantic_core annotated-types typing-inspection typing_extensions
# soundfile cffi pycparser, and sageattention==1.0.6 (py3-none-any), into .whl/ (git ignores it; carry it).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-session-out}"
PYTHON="${PYTHON:-python3}"  # the interpreter that has torch
mkdir -p "$OUT"
# Nothing outside the machine answers: never wait on a hub lookup.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
site=""
if compgen -G ".whl/*.whl" >/dev/null && ! "$PYTHON" -c "import diffusers, av, pydantic, sageattention" 2>/dev/null; then
    site=/tmp/ltx2-site
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl ||
        { echo "installing the carried wheels failed" >&2; exit 1; }
fi
export PYTHONPATH="${site:+$site:}$PWD${PYTHONPATH:+:$PYTHONPATH}"
{
    date -u
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version,clocks.sm,clocks.max.sm --format=csv
    "$PYTHON" -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
} 2>&1 | tee "$OUT/session.log"
"$PYTHON" bench/gpu_session.py --out "$OUT" "$@" 2>&1 | tee -a "$OUT/session.log"
