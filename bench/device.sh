#!/usr/bin/env bash
# Run one command on the GPU machine as the benchmarks need it: the wheels carried in .whl/ installed beside the
# machine's torch (it has torch and transformers, not diffusers, av, pydantic, soundfile, sageattention), the hub
# never asked, this checkout on the path. E.g.
#   bash bench/device.sh python3 bench/gpu_plans.py --size full --root /tmp/volume --recovery --switch
# The wheels: `bash bench/fetch_wheels.sh` here first (44 MB into .whl/, which git ignores; carry it).
set -uo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"  # the interpreter that has torch
# Nothing outside the machine answers: never wait on a hub lookup.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
site=""
if compgen -G ".whl/*.whl" >/dev/null && ! "$PYTHON" -c "import diffusers, av, pydantic, soundfile" 2>/dev/null; then
    site=/tmp/ltx2-site
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl ||
        { echo "installing the carried wheels failed" >&2; exit 1; }
fi
export PYTHONPATH="${site:+$site:}$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec "$@"
