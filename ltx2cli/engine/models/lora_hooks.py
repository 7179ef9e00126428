"""LoRAs on FP8 transformer blocks. peft wraps nn.Linear layers only, so where the blocks are Fp8Linear each adapted
layer gets a forward hook adding strength * scale * B(A(x)) to its output. Base weights never change: switching
LoRA sets between jobs removes hooks and adds others; each file is read once per process. The adapters are plain
tensors the hooks hold, moved in place (`t.data`) with the component they adapt (engine.memory.placement.settle_loras).

Both paths (these hooks, and peft on bf16 weights) name a LoRA's layers as weights.layout.lora_module does
(`transformer.<name>` or `connectors.<name>`), and both refuse a LoRA with a layer that matches no module: skipping
it would render with part of the LoRA and say nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from ...errors import ModelError

Adapter = dict[str, tuple[torch.Tensor, torch.Tensor, float]]  # layout.lora_module name -> (A, B, alpha / rank)


def lora_targets(file: Path, keys: Iterable[str]) -> dict[str, str]:
    """{a LoRA's down-projection key: the module it adapts (layout.lora_module)}; a ModelError for a layer under
    no name LTX-2's LoRA loaders read."""
    from ...weights.layout import LORA_DOWN, lora_modules

    downs = [k for k in keys if LORA_DOWN.match(k)]
    targets = lora_modules(downs)
    if unnamed := [k for k in downs if k not in targets]:
        raise ModelError(
            f"LoRA {file.name}: {len(unnamed)} of its {len(downs)} layers are under no name LTX-2's LoRA loader "
            f"reads, e.g. {unnamed[0]}; use a LoRA trained for this model or remove it"
        )
    return targets


def refuse_unmatched(file: Path, modules: Iterable[str], matched: Callable[[str], bool]) -> None:
    """A ModelError naming `file` and a module of `modules` for which matched(module) is false."""
    from ...weights.layout import lora_module_label

    modules = sorted(set(modules))
    if missing := [m for m in modules if not matched(m)]:
        raise ModelError(
            f"LoRA {file.name}: {len(missing)} of its {len(modules)} layers match no module of the model, e.g. "
            f"{lora_module_label(missing[0])}; use a LoRA trained for this model or remove it"
        )


def find_module(roots: Mapping[str, torch.nn.Module], module: str) -> torch.nn.Module | None:
    """The module a `<component>.<name>` names among the components in `roots`, or None."""
    component, _, name = module.partition(".")
    try:
        return roots[component].get_submodule(name)
    except (KeyError, AttributeError):
        return None


def read_adapter(path: Path, dtype: torch.dtype, device: Any) -> Adapter:
    """A LoRA file (Lightricks / ComfyUI `diffusion_model.*` / `text_embedding_projection.*` or diffusers
    `transformer.*` / `connectors.*` names) by module."""
    from safetensors.torch import load_file

    from ...weights.owned import owned

    tensors = load_file(str(path))
    adapter: Adapter = {}
    for key, module in lora_targets(path, tensors).items():
        down = tensors[key]
        stem = key[: -len(".weight")].rsplit(".lora_", 1)[0]
        kind = "B" if ".lora_A." in key else "up"
        up = tensors[f"{stem}.lora_{kind}.weight"]
        alpha = tensors.get(f"{stem}.alpha")
        scale = float(alpha) / down.shape[0] if alpha is not None else 1.0  # no alpha: scale 1 (Lightricks)
        adapter[module] = (owned(down, device, dtype), owned(up, device, dtype), scale)
    return adapter


def attach(roots: Mapping[str, torch.nn.Module], adapters: list[tuple[Adapter, float]]) -> list[Any]:
    """Hooks adding every (adapter, strength) to the modules it adapts, found among `roots` ({"transformer": ...,
    "connectors": ...}); returns their handles. Every module must exist (Models checks each file as it reads it)."""
    per_module: dict[str, list[tuple[torch.Tensor, torch.Tensor, float]]] = {}
    for adapter, strength in adapters:
        for name, (down, up, scale) in adapter.items():
            per_module.setdefault(name, []).append((down, up, scale * strength))
    handles = []
    for name, parts in per_module.items():
        module = find_module(roots, name)
        if module is None:
            raise KeyError(name)

        def hook(_module, args, out, parts=parts):
            x = args[0]
            for down, up, s in parts:
                out = out + s * F.linear(F.linear(x.to(down.dtype), down), up).to(out.dtype)
            return out

        handles.append(module.register_forward_hook(hook))
    return handles
