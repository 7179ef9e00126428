"""Do a job's LoRAs fit the model? Decided from the LoRA files' headers and the model's transformer config,
before anything loads or renders (the original service shipped an LTX-Video 2B LoRA beside LTX-2 19B)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ModelError, Problem
from ..jobs.spec import SpecPreview
from .header import HeaderError, read_header
from .inspect import lora_header_problems, lora_shape
from .layout import DIFFUSION, lora_module_label, lora_modules

if TYPE_CHECKING:
    from .source import ModelSource

_BLOCK = re.compile(re.escape(DIFFUSION) + r"transformer_blocks\.(\d+)\.")


def model_facts(model_dir: Path) -> tuple[tuple[int, int] | None, set[str] | None, str | None]:
    """What a LoRA must fit, from the weights' headers and configs alone (each file read once): (transformer
    blocks, width), the `<component>.<diffusers name>` of each transformer and text-connector module that owns a
    weight (as layout.lora_modules names them), and the LTX-2 release. None where unreadable."""
    from .layout import LORA_COMPONENTS, split, to_diffusers
    from .versions import detect_version, folder_version

    names: set[str] = set()
    if model_dir.is_file():
        try:
            header = read_header(model_dir)
        except HeaderError:
            return None, None, None
        blocks = {int(m[1]) for k in header.tensors if (m := _BLOCK.match(k))}
        q = header.tensors.get(DIFFUSION + "transformer_blocks.0.attn1.to_q.weight")
        shape = (max(blocks) + 1, q.shape[1]) if blocks and q else None
        parts = split(header.tensors)[0]
        for component in LORA_COMPONENTS:
            names |= {f"{component}.{k}" for k in to_diffusers(component, {k: k for k in parts[component]})}
        version = detect_version(header.metadata, list(header.tensors))[0]
    else:
        shape, version = _folder_shape(model_dir), folder_version(model_dir)
        for component in LORA_COMPONENTS:
            try:
                files = (model_dir / component).glob("*.safetensors")
                names |= {f"{component}.{k}" for f in files for k in read_header(f).tensors}
            except HeaderError:
                pass
    return shape, {n.removesuffix(".weight") for n in names if n.endswith(".weight")} or None, version


def _folder_shape(model_dir: Path) -> tuple[int, int] | None:
    try:
        config = json.loads((model_dir / "transformer" / "config.json").read_text())
        return int(config["num_layers"]), int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


# Lightricks name their LoRAs after the model they were trained on: ltx-2-19b-..., ltx-2.3-22b-...
_LORA_VERSION = (re.compile(r"ltx[-_]?2\.([35])(?!\d)"), re.compile(r"ltx[-_]?2[-_]19b"))


def lora_version(file: Path, metadata: dict[str, str]) -> str | None:
    """The release a LoRA names itself for (file name or metadata), if it does."""
    for text in (file.name.lower(), " ".join(metadata.values()).lower()):
        if m := _LORA_VERSION[0].search(text):
            return f"2.{m[1]}"
        if _LORA_VERSION[1].search(text):
            return "2.0"
    return None


def model_problems(specs: list[SpecPreview], model: str | ModelSource | None, by_path: bool = True) -> list[Problem]:
    """What the jobs need of the weights that they lack, before anything loads: lora_problems and
    upsampler_problems."""
    return lora_problems(specs, model, by_path) + upsampler_problems(specs, model)


def upsampler_problems(specs: list[SpecPreview], model: str | ModelSource | None) -> list[Problem]:
    """One problem per two-stage job when the weights have no latent upsampler for its refine stage (else found
    only after the model has loaded and the prompts are encoded). Nothing when the model cannot be found."""
    from .source import find_upsampler, resolve_model, upsampler_places

    two_stage = [spec for spec in specs if spec.two_stage]
    try:
        model_dir = resolve_model(model) if two_stage else None
    except ModelError:
        return []
    if model_dir is None or find_upsampler(model_dir) is not None:
        return []
    why = "is two-stage: its refine stage needs the latent upsampler, looked for in "
    fix = "; use a one-stage preset (fast, balanced) or add the upsampler there"
    return [
        Problem(spec.source, f"the {spec.preset} preset {why}{upsampler_places(model_dir)}{fix}", job=spec.id,
                field="preset")
        for spec in two_stage
    ]  # fmt: skip


def lora_problems(specs: list[SpecPreview], model: str | ModelSource | None, by_path: bool = True) -> list[Problem]:
    """One problem per job and LoRA that cannot load into `model` (missing file, not a LoRA, another model's
    shape). Nothing is checked when the model itself cannot be found: loading it reports that. `by_path`: as
    weights.lora_files.lora_file."""
    from .lora_files import applied_loras, is_distilled_checkpoint, lora_file
    from .source import resolve_model

    try:
        model_dir = resolve_model(model)
    except ModelError:
        return []
    from ..jobs.releases import DEFAULT

    shape, modules, version = model_facts(model_dir)
    verdicts: dict[Path, str | None] = {}  # file -> why it does not fit (None: it fits)
    problems = []
    for spec in specs:
        for lora in applied_loras(spec.loras, is_distilled_checkpoint(model_dir)):
            try:
                file = lora_file(model_dir, lora, version or DEFAULT, by_path)
            except ModelError as e:
                problems.append(Problem(spec.source, str(e), job=spec.id, field="loras"))
                continue
            if file not in verdicts:
                verdicts[file] = _misfit(file, shape, modules, version)
            if verdicts[file]:
                problems.append(Problem(spec.source, verdicts[file], job=spec.id, field="loras"))
    return problems


def _misfit(file: Path, shape: tuple[int, int] | None, modules: set[str] | None, version: str | None) -> str | None:
    try:
        header = read_header(file)
    except HeaderError as e:
        return f"LoRA {file.name}: {e}"
    if not any(".lora_A." in k or ".lora_down." in k for k in header.tensors):
        return f"{file.name} is not a LoRA (no lora_A / lora_down tensors)"
    if broken := lora_header_problems(header):
        return f"LoRA {file.name} cannot load: {broken[0]}"
    blocks, width, made_for = lora_shape(header)
    # it may touch only some blocks, or none (a text-connector LoRA: no width to compare)
    if shape is not None and not (blocks <= shape[0] and width in (0, shape[1])):
        return (
            f"LoRA {file.name} was made for {made_for}, not the loaded model ({shape[0]} blocks, {shape[1]} wide); "
            "use a LoRA trained for LTX-2 or remove it"
        )
    made = lora_version(file, header.metadata)
    if made and version and made != version:
        from ..jobs.releases import VERSIONS

        return (
            f"LoRA {file.name} was made for {VERSIONS[made].name}, the loaded model is {VERSIONS[version].name}; "
            "use the LoRA released for this model, or a model of that version"
        )
    absent = sorted(set(lora_modules(header.tensors).values()) - modules) if modules else []
    if absent:
        example = lora_module_label(absent[0])
        return (
            f"LoRA {file.name} adapts {len(absent)} modules the loaded model does not have, e.g. {example} (made "
            "for another LTX-2 version?); use a LoRA trained for this model or remove it"
        )
    return None
