"""Do a job's LoRAs fit the model? Decided from the LoRA files' headers and the model's transformer config,
before anything loads or renders (the original service shipped an LTX-Video 2B LoRA beside LTX-2 19B)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import Problem
from ..spec import RenderSpec
from .header import HeaderError, read_header
from .inspect import lora_shape
from .layout import DIFFUSION

if TYPE_CHECKING:
    from ..engine.models import ModelSource

_BLOCK = re.compile(re.escape(DIFFUSION) + r"transformer_blocks\.(\d+)\.")


def model_shape(model_dir: Path) -> tuple[int, int] | None:
    """(transformer blocks, width) from a diffusers folder's transformer/config.json or a single file's header;
    None if unreadable."""
    if model_dir.is_file():
        try:
            tensors = read_header(model_dir).tensors
        except HeaderError:
            return None
        blocks = {int(m[1]) for k in tensors if (m := _BLOCK.match(k))}
        q = tensors.get(DIFFUSION + "transformer_blocks.0.attn1.to_q.weight")
        return (max(blocks) + 1, q.shape[1]) if blocks and q else None
    try:
        config = json.loads((model_dir / "transformer" / "config.json").read_text())
        return int(config["num_layers"]), int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def model_modules(model_dir: Path) -> set[str] | None:
    """Names (diffusers') of the transformer's modules that own a weight, from the weights' headers alone."""
    from .layout import split, to_diffusers

    try:
        if model_dir.is_file():
            parts, _ = split(read_header(model_dir).tensors)
            names = set(to_diffusers("transformer", {k: k for k in parts["transformer"]}))
        else:
            names = {k for f in (model_dir / "transformer").glob("*.safetensors") for k in read_header(f).tensors}
    except HeaderError:
        return None
    return {n.removesuffix(".weight") for n in names if n.endswith(".weight")} or None


def lora_targets(keys: list[str]) -> set[str]:
    """The transformer modules a LoRA adapts, in diffusers' names (Lightricks/ComfyUI files use ltx-core's)."""
    from .layout import to_diffusers

    targets = {re.sub(r"\.lora_(A|B|down|up)\.weight$", "", k) for k in keys if re.search(r"\.lora_(A|down)\.", k)}
    diffusers_style = {t.removeprefix("transformer.") for t in targets if t.startswith("transformer.")}
    ltx = {t.removeprefix("diffusion_model.") for t in targets if not t.startswith("transformer.")}
    renamed = to_diffusers("transformer", {f"{DIFFUSION}{t}.weight": t for t in ltx}) if ltx else {}
    return diffusers_style | {n.removesuffix(".weight") for n in renamed}


def model_version(model_dir: Path) -> str | None:
    """The LTX-2 release of a folder or single file, from configs or the header; None if unreadable."""
    from .layout import detect_version
    from .versions import folder_version

    if not model_dir.is_file():
        return folder_version(model_dir)
    try:
        header = read_header(model_dir)
    except HeaderError:
        return None
    return detect_version(header.metadata, list(header.tensors))[0]


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


def lora_problems(specs: list[RenderSpec], model: str | ModelSource | None) -> list[Problem]:
    """One problem per job and LoRA that cannot load into `model` (missing file, not a LoRA, another model's
    shape). Nothing is checked when the model itself cannot be found: loading it reports that."""
    from ..engine.models import (
        ModelError,
        is_distilled_checkpoint,
        is_distilled_lora,
        lora_file,
        resolve_model,
    )

    try:
        model_dir = resolve_model(model)
    except ModelError:
        return []
    shape, modules, version = model_shape(model_dir), model_modules(model_dir), model_version(model_dir)
    verdicts: dict[Path, str | None] = {}  # file -> why it does not fit (None: it fits)
    problems = []
    for spec in specs:
        for lora in spec.loras:
            if lora.strength == 0 or (is_distilled_lora(lora) and is_distilled_checkpoint(model_dir)):
                continue  # a distilled checkpoint has the distilled LoRA in its weights
            try:
                file = lora_file(model_dir, lora)
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
    blocks, width, made_for = lora_shape(header)
    if shape is not None and not (blocks <= shape[0] and width == shape[1]):  # it may touch only some blocks
        return (
            f"LoRA {file.name} was made for {made_for}, not the loaded model ({shape[0]} blocks, {shape[1]} wide); "
            "use a LoRA trained for LTX-2 or remove it"
        )
    made = lora_version(file, header.metadata)
    if made and version and made != version:
        from .versions import VERSIONS

        return (
            f"LoRA {file.name} was made for {VERSIONS[made].name}, the loaded model is {VERSIONS[version].name}; "
            "use the LoRA released for this model, or a model of that version"
        )
    absent = sorted(lora_targets(list(header.tensors)) - modules) if modules else []
    if absent:
        return (
            f"LoRA {file.name} adapts {len(absent)} modules the loaded model does not have, e.g. {absent[0]} (made "
            "for another LTX-2 version?); use a LoRA trained for this model or remove it"
        )
    return None
