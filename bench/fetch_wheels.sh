#!/usr/bin/env bash
# The wheels a device run carries in .whl/ (git ignores it; pass carry [".whl"]): what the GPU machine lacks beside
# its torch and transformers, for its Python 3.12, downloaded here where the package index answers. Extra
# requirements go to the same download, e.g. `bash bench/fetch_wheels.sh fa3-fwd==0.0.3 einops` (the machine's own
# torch must be the one FA3's build expects; the carry is 64 MiB in all).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp --abi cp312 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_24_x86_64 -d .whl \
    diffusers==0.42.1 av pydantic pydantic_core annotated-types typing-inspection typing_extensions soundfile cffi \
    pycparser sageattention==1.0.6 "$@"
du -ch .whl/*.whl | tail -1
