"""Write constraints.txt: exact versions of everything `ltx2cli[runpod]` needs, as installed in this environment.

    python docker/freeze_constraints.py > constraints.txt

The image (docker/install.sh) and CI install with `-c constraints.txt`, so both get these versions. Local version
labels are dropped (torch 2.13.0+cpu here pins torch==2.13.0, which PyPI serves as its CUDA build on Linux);
torch's own CUDA dependencies (nvidia-*, triton) are pinned exactly by torch itself.
"""

from __future__ import annotations

import sys
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = "ltx2cli"
EXTRAS = ("runpod",)


def closure(name: str, extras: tuple[str, ...], seen: dict[str, str]) -> None:
    dist = distribution(name)
    key = canonicalize_name(dist.metadata["Name"])
    seen.setdefault(key, dist.version)
    for line in dist.requires or []:
        req = Requirement(line)
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
            continue
        try:
            installed = distribution(req.name)
        except PackageNotFoundError:
            sys.exit(f"{req.name} (needed by {name}) is not installed: install '.[runpod]' first")
        child = canonicalize_name(installed.metadata["Name"])
        if child not in seen or req.extras:
            closure(req.name, tuple(sorted(req.extras)), seen)


def main() -> None:
    seen: dict[str, str] = {}
    closure(ROOT, EXTRAS, seen)
    seen.pop(ROOT, None)
    print("# Exact versions of ltx2cli[runpod]'s dependencies, shared by the Docker image and CI (docker/install.sh).")
    print("# Regenerate from a venv with '.[runpod]' installed: python docker/freeze_constraints.py > constraints.txt")
    for name in sorted(seen):
        print(f"{name}=={seen[name].split('+')[0]}")


if __name__ == "__main__":
    main()
