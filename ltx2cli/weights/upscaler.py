"""The spatial latent upscaler from its single file (`ltx-2-spatial-upscaler-x2-1.0.safetensors` in a ComfyUI
root's latent_upscale_models/), for the two-stage presets' refine stage.

Its tensors already carry diffusers' LTX2LatentUpsamplerModel names. The configuration comes from the file's
`config` metadata where it states a field; the one variant that differs between releases (LTX-2's rational
resampler vs LTX-2.3's plain one) is told apart by building both and keeping the one whose tensors match the
file's exactly, so a file without metadata loads too.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..errors import ModelError
from .header import HeaderError, read_header

FOLDERS = ("latent_upscale_models", "upscale_models")
# ltx-core / diffusers field names -> LTX2LatentUpsamplerModel fields
FIELDS = {
    "in_channels": "in_channels", "mid_channels": "mid_channels", "num_blocks_per_stage": "num_blocks_per_stage",
    "dims": "dims", "spatial_upsample": "spatial_upsample", "temporal_upsample": "temporal_upsample",
    "rational_spatial_scale": "rational_spatial_scale", "spatial_scale": "rational_spatial_scale",
    "use_rational_resampler": "use_rational_resampler", "rational_resampler": "use_rational_resampler",
}  # fmt: skip


def find_upscaler(root: Path) -> Path | None:
    """The spatial x2 upscaler beside a checkpoint: the first *spatial* file of the root's upscaler folders."""
    for folder in FOLDERS:
        files = sorted(p for p in (root / folder).glob("*.safetensors") if "temporal" not in p.name)
        spatial = [p for p in files if "spatial" in p.name] or files
        if spatial:
            return spatial[0]
    return None


def load_upscaler(path: Path, device: Any, dtype: Any) -> Any:
    from safetensors import safe_open

    from .components import construct, reference_config_dir
    from .owned import owned

    try:
        header = read_header(path)
    except HeaderError as e:
        raise ModelError(str(e)) from e
    base = json.loads((reference_config_dir() / "latent_upsampler" / "config.json").read_text())
    meta = header.json_metadata("config") or {}
    config = {k: v for k, v in base.items() if not k.startswith("_")}
    if conv := header.tensors.get("initial_conv.weight"):  # sizes a file without metadata still shows
        blocks = {int(m[1]) for k in header.tensors if (m := re.match(r"res_blocks\.(\d+)\.", k))}
        config |= {"mid_channels": conv.shape[0], "in_channels": conv.shape[1], "num_blocks_per_stage": len(blocks)}
    config |= {FIELDS[k]: v for k, v in meta.items() if k in FIELDS}
    given = {k: t.shape for k, t in header.tensors.items()}
    variants = [config["use_rational_resampler"]] if "use_rational_resampler" in meta else [True, False]
    for rational in variants:
        module = construct(None, "latent_upsampler", dtype, config=config | {"use_rational_resampler": rational})
        own = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        if own == given:
            break
    else:
        missing = sorted(set(own) - set(given)) or sorted(k for k in own if own[k] != given.get(k))
        raise ModelError(f"{path.name}: not an LTX-2 latent upscaler this version knows (e.g. tensor {missing[0]})")
    with safe_open(str(path), framework="pt", device="cpu") as f:
        state = {k: owned(f.get_tensor(k), device, dtype) for k in own}
    module.load_state_dict(state, strict=True, assign=True)
    return module.to(device).eval().requires_grad_(False)
