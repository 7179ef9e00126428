"""A job's LoRAs, resolved: the preset's (those the model's release has), the job's own (by name or a .safetensors
path) and the legacy strength fields', merged in that order by loras.stack (a later one wins)."""

from __future__ import annotations

from ..jobs.job import LoraRef
from ..jobs.loras import LEGACY_STRENGTH_FIELDS, canonical_name, stack
from ..jobs.presets import Preset
from .context import Resolver, version
from .inputs import source


def loras(r: Resolver, preset: Preset | None) -> list[LoraRef]:
    job = r.job
    given: list[LoraRef] = []
    for i, ref in enumerate(job.loras or []):
        if ref.name is not None:
            try:
                canonical_name(ref.name)
            except ValueError as e:
                r.fail(("loras", i, "name"), str(e))
                continue
        else:
            value, local = source(r, ("loras", i, "path"), ref.path or "")
            if local is not None and not local.is_file():
                r.fail(("loras", i, "path"), f"file not found: {local}")
                continue
            if not value.lower().endswith(".safetensors"):
                r.fail(("loras", i, "path"), f"must be a .safetensors file, got {ref.path!r}")
                continue
            ref = ref.model_copy(update={"path": value})
        given.append(ref)
    legacy = [
        LoraRef(name=short, strength=getattr(job, name))
        for name, short in LEGACY_STRENGTH_FIELDS.items()
        if getattr(job, name) is not None
    ]
    return stack(_preset_loras(r, preset), given, legacy)


def _preset_loras(r: Resolver, preset: Preset | None) -> list[LoraRef]:
    """The preset's LoRAs the model's release has: a preset is a recipe for any release, and one whose LoRA the
    release lacks (2.5 has no camera LoRAs) runs without it. A job naming such a LoRA is refused instead."""
    if preset is None:
        return []
    if r.ctx.model_version is None:
        return preset.loras
    release, kept = version(r), []
    for ref in preset.loras:
        name = canonical_name(ref.name) if ref.name is not None else None
        if name is not None and name not in release.loras:
            r.warnings.append(f"the {preset.name} preset's LoRA {name!r} is left out: {release.name} has none")
            continue
        kept.append(ref)
    return kept
