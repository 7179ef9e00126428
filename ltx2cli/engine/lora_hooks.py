"""LoRAs on FP8 transformer blocks. peft wraps nn.Linear layers only, so where the blocks are Fp8Linear each adapted
layer gets a forward hook adding strength * scale * B(A(x)) to its output. Base weights never change: switching
LoRA sets between jobs removes hooks and adds others; each file is read once per process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

Adapter = dict[str, tuple[torch.Tensor, torch.Tensor, float]]  # diffusers module name -> (A, B, alpha / rank)


def read_adapter(path: Path, dtype: torch.dtype, device: Any) -> Adapter:
    """A LoRA file (Lightricks / ComfyUI `diffusion_model.*` or diffusers `transformer.*` names) by module."""
    from safetensors.torch import load_file

    from ..weights.layout import lora_modules
    from ..weights.owned import owned

    tensors = load_file(str(path))
    adapter: Adapter = {}
    for key, module in lora_modules(tensors).items():
        down = tensors[key]
        stem = key[: -len(".weight")].rsplit(".lora_", 1)[0]
        kind = "B" if ".lora_A." in key else "up"
        up = tensors[f"{stem}.lora_{kind}.weight"]
        alpha = tensors.get(f"{stem}.alpha")
        scale = float(alpha) / down.shape[0] if alpha is not None else 1.0  # no alpha: scale 1 (Lightricks)
        adapter[module] = (owned(down, device, dtype), owned(up, device, dtype), scale)
    return adapter


def attach(transformer: Any, adapters: list[tuple[Adapter, float]]) -> list[Any]:
    """Hooks adding every (adapter, strength) to the modules it adapts; returns their handles."""
    per_module: dict[str, list[tuple[torch.Tensor, torch.Tensor, float]]] = {}
    for adapter, strength in adapters:
        for name, (down, up, scale) in adapter.items():
            per_module.setdefault(name, []).append((down, up, scale * strength))
    handles = []
    for name, parts in per_module.items():
        module = transformer.get_submodule(name)

        def hook(_module, args, out, parts=parts):
            x = args[0]
            for down, up, s in parts:
                out = out + s * F.linear(F.linear(x.to(down.dtype), down), up).to(out.dtype)
            return out

        handles.append(module.register_forward_hook(hook))
    return handles
