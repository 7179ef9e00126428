"""The LoRA files a job names, by path or by short name beside the weights, and the distilled LoRA that a distilled
checkpoint already holds in its weights (torch-free)."""

from __future__ import annotations

from pathlib import Path

from ..errors import ModelError
from ..jobs.job import LoraRef
from .source import lora_root

LORA_DIR = "loras"  # LoRAs named by short name live in <model>/loras/<file stem>.safetensors


def is_distilled_checkpoint(path: Path) -> bool:
    """Lightricks name their distilled checkpoints so: ltx-2-19b-distilled.safetensors, ...-distilled-fp8...."""
    return path.is_file() and "distilled" in path.stem


def is_distilled_lora(lora: LoraRef) -> bool:
    return lora.name == "distilled"


def applied_loras(loras: list[LoraRef], distilled: bool) -> list[LoraRef]:
    """The LoRAs of `loras` a render applies: not those at strength 0, nor the distilled LoRA on a `distilled`
    checkpoint (its weights have it already)."""
    return [lo for lo in loras if lo.strength != 0 and not (distilled and is_distilled_lora(lo))]


def lora_file(model_dir: Path, lora: LoraRef, version: str, by_path: bool = True) -> Path:
    """The file of a LoRA given by path, or by short name as the weights' release `version` names it. `by_path`:
    the caller may name a file instead (the worker's requests may not), so the errors suggest it."""
    from ..jobs.releases import lora_stems

    if lora.path is not None:
        file = Path(lora.path).expanduser()
    else:
        try:
            stems = lora_stems(lora.name or "", version)
        except KeyError as e:
            raise ModelError(f"{e.args[0]}; remove it" + (" or give a LoRA file by path" if by_path else "")) from None
        folder = lora_root(model_dir) / LORA_DIR
        files = [folder / f"{stem}.safetensors" for stem in stems]
        file = next((f for f in files if f.is_file()), files[0])
    if not file.is_file():
        hint = f" (put {file.name} in {file.parent}{', or give the LoRA by path' if by_path else ''})"
        hint = hint if lora.path is None else ""
        raise ModelError(f"LoRA file not found: {file}{hint}")
    return file
