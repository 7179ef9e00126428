#!/usr/bin/env bash
# The worker image's Python packages. The Dockerfile runs this script; CI runs the same script in a fresh venv
# (docker/check-install.sh), so a broken dependency line fails CI rather than the image build.
#
#   docker/install.sh deps      every dependency at its constraints.txt version, torch included (the big layer)
#   docker/install.sh project   ltx2cli itself (no dependency resolution), then `pip check`
#   docker/install.sh           both
#
# Uses the `python` first on PATH. torch==2.13.0 (from constraints.txt) is PyPI's CUDA build on Linux; a CPU
# machine with a local torch+cpu wheel on its find-links gets that one from the same line.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

deps() {
    python -m pip install -r "$root/constraints.txt"
}

project() {
    python -m pip install --no-deps "$root"
    python -m pip check
}

case "${1:-all}" in
    deps) deps ;;
    project) project ;;
    all) deps && project ;;
    *) echo "usage: $0 [deps|project|all]" >&2; exit 2 ;;
esac
