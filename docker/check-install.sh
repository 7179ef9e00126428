#!/usr/bin/env bash
# CI: the image's exact pip steps (docker/install.sh) in a fresh venv, then the worker's entry point started
# once from outside the source tree. Catches a broken dependency line without a Docker engine.
#
#   docker/check-install.sh [VENV_DIR]     (default .venv-image, recreated each time)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
venv="$(realpath -m "${1:-$root/.venv-image}")"  # absolute: the check runs from inside it

rm -rf "$venv"
python3 -m venv "$venv"
PATH="$venv/bin:$PATH" "$root/docker/install.sh"

# From $venv, not the checkout: `python -m` puts the working directory first on sys.path.
cd "$venv"
"$venv/bin/python" - <<'PY'
import runpod, ltx2cli.worker.handler, ltx2cli.engine.render  # noqa: F401  (the worker's whole import graph)
from ltx2cli.jobs.presets import load_presets

presets, problems = load_presets()  # the wheel must carry configs/presets
assert not problems and presets.lookup("fast"), problems
print("imports and presets ok")
PY
# One local job through the SDK (--test_input): a missing model must come back as a one-line E_MODEL error.
out="$(LTX2_MODEL_DIR="$venv/no-model" LTX2_GCS_BUCKET=ltx2-check \
    "$venv/bin/python" -m ltx2cli.worker.handler --test_input '{"input": {"duration": 1}}' 2>&1)" && status=0 || status=$?
if [ "$status" -ne 1 ] || ! grep -q "E_MODEL: model not found" <<<"$out"; then
    echo "$out"
    echo "check-install: the worker did not answer E_MODEL (exit $status)" >&2
    exit 1
fi
echo "check-install: ok (worker entry point answers E_MODEL for a missing model)"
