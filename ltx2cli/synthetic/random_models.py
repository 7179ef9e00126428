"""A `Models` with random weights (what `load_models` returns, without a checkpoint): the full-size LTX-2 for
memory and speed benchmarks, or any folder of configs (the tiny model's)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from ..engine.models.loaded import Models
from ..engine.models.loading import default_device, default_dtype
from ..weights.components import reference_config_dir
from ..weights.source import model_identity
from ..weights.versions import folder_version
from .random_weights import FP8, build_pipeline


def random_models(
    config_dir: Path | str | None = None,
    device: Any = None,
    dtype: Any = None,
    seed: int = 0,
    weights: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Models:
    """A `Models` (what `load_models` returns) with random weights; the full-size LTX-2 unless `config_dir` says else.

    `weights`: None (every weight in `dtype`) or "fp8" (transformer-block Linear weights float8_e4m3fn with per-tensor
    scales; LoRAs cannot be applied to those layers).
    """
    if weights not in (None, FP8):
        raise ValueError(f"weights must be None or {FP8!r}, got {weights!r}")
    path = Path(config_dir).resolve() if config_dir else reference_config_dir()
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    pipe, upsampler = build_pipeline(path, device, dtype, seed, fp8=weights == FP8, progress=progress)
    torch.set_grad_enabled(False)  # as load_models: inference only
    tag = f"random-s{seed}" + (f"-{FP8}" if weights == FP8 else "")
    identity = f"{model_identity(path)}+{tag}"
    return Models(path, pipe, torch.device(device), dtype, upsampler, identity, version=folder_version(path))
