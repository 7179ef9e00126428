"""The LTX-2 LoRAs that exist, by short name, and resolution of a job's LoRA list.

The original service shipped LoRAs made for LTX-Video 2B 0.9.x, which cannot apply to LTX-2 19B;
here a name maps only to real LTX-2 files, and the engine checks every key and shape on load. Which file a
short name is depends on the loaded model's release (weights.versions: VERSIONS[...].loras).
"""

from __future__ import annotations

from .job import LoraRef
from .releases import VERSIONS

# every short name some release has (a job may name one its model's release lacks: refused against the model)
KNOWN_LORAS: tuple[str, ...] = tuple(dict.fromkeys(name for v in VERSIONS.values() for name in v.loras))
# Any release's file stem names the same LoRA: "distilled" given as ltx-2-19b-distilled-lora-384 is still the
# distilled LoRA of whatever release renders it.
_BY_STEM = {stem: short for v in VERSIONS.values() for short, stems in v.loras.items() for stem in stems}

# IC-LoRAs need a reference video; they are not plain LoRAs and cannot be stacked like one.
IC_LORAS = ("detailer", "ltx-2-19b-ic-lora-detailer")

# The original service's per-LoRA strength fields -> short name.
LEGACY_STRENGTH_FIELDS = {"lora_distilled": "distilled", "lora_camera": "camera-dolly-in"}


def canonical_name(name: str) -> str:
    """Short name for a known LoRA given by short name or file stem; ValueError otherwise."""
    n = name.strip().lower().removesuffix(".safetensors")
    if n in KNOWN_LORAS:
        return n
    if n in _BY_STEM:
        return _BY_STEM[n]
    if n in IC_LORAS:
        raise ValueError(
            f"{name!r} is an IC-LoRA (it needs a reference video), not a plain LoRA; it cannot be used here"
        )
    raise ValueError(f"unknown LoRA {name!r}; known: {', '.join(KNOWN_LORAS)} (or give a path)")


def stack(*layers: list[LoraRef]) -> list[LoraRef]:
    """Merge LoRA lists by identity, later layers winning; strength 0 removes a LoRA."""
    merged: dict[str, LoraRef] = {}
    for layer in layers:
        for ref in layer:
            if ref.name is not None:
                ref = ref.model_copy(update={"name": canonical_name(ref.name)})
            merged[ref.key] = ref
    return [r for r in merged.values() if r.strength != 0.0]


def stage2_loras(loras: list[LoraRef]) -> list[LoraRef]:
    """The refine stage runs the distilled schedule: it needs the distilled LoRA at full strength."""
    return stack(loras, [LoraRef(name="distilled", strength=1.0)])
