"""A finished render's sidecar: the JSON beside each MP4 that says how it was made (storage.sinks puts both)."""

from __future__ import annotations

import platform
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from .. import __version__
from ..jobs.job import LoraRef
from ..jobs.releases import AV_CROSS_TIMESTEPS
from ..jobs.spec import RenderSpec
from ..storage.sources import file_sha256


def sidecar(
    spec: RenderSpec,
    *,
    model: str,
    model_version: str,
    inputs: dict[str, Path],
    timings: dict[str, float],
    device: str,
    loras: list[LoraRef] | None = None,
    precision: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything needed to know how a file was made and to make it again. `loras`: those the model applied (the
    spec's by default; a distilled checkpoint skips the distilled LoRA); `precision`: what each component computed
    in (Models.precisions; `model` names it too where FP8 was used)."""
    return {
        "id": spec.id,
        "output": spec.output,
        "spec_hash": spec.spec_hash(),
        "seed": spec.seed,
        "model": model,
        "model_version": model_version,
        "av_cross_timesteps": AV_CROSS_TIMESTEPS,  # the a2v/v2a AdaLN rule the engine applied (models.av_timesteps)
        **({"precision": precision} if precision is not None else {}),
        "loras": [lo.model_dump(exclude_none=True) for lo in (spec.loras if loras is None else loras)],
        "inputs": {src: {"sha256": file_sha256(path)} for src, path in inputs.items()},
        "timings": timings,
        "device": device,
        "versions": {
            "ltx2": __version__,
            "python": platform.python_version(),
            **{lib: version(lib) for lib in ("torch", "diffusers", "transformers")},
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "spec": spec.model_dump(mode="json"),
        **(extra or {}),
    }
