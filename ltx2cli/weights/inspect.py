"""What a weights path holds, from headers alone: `ltx2 models inspect`.

Kinds: a diffusers folder (model_index.json), a ComfyUI models root (checkpoints/, text_encoders/, loras/, ...),
and single files: an LTX-2 checkpoint in Lightricks' layout, a LoRA, a text encoder, a latent upscaler. Nothing
but the JSON headers is read, so a 26 GB checkpoint inspects as fast as a 2 KB one; diffusers is not imported.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from typing import Any

from ..jobs.releases import AV_CROSS_TIMESTEPS, VERSIONS
from .header import Header, HeaderError, read_header
from .layout import COMPONENTS, is_scale, split
from .versions import detect_version, folder_version, unknown_version, version_contradiction

COMFY_DIRS = ("checkpoints", "diffusion_models", "text_encoders", "loras", "latent_upscale_models", "upscale_models")
LORA_MARKERS = (".lora_A.", ".lora_B.", ".lora_down.", ".lora_up.")
# ComfyUI's "fp8_scaled" files: a `scaled_fp8` marker tensor and per-layer scales under these names.
COMFY_FP8 = ("scaled_fp8", ".scale_weight", ".scale_input", ".comfy_quant")
UPSCALER_KEYS = ("initial_conv.weight", "res_blocks.0.conv1.weight")
# Transformers LoRAs can be made for: (blocks, width) -> name. LTX-Video 13B has LTX-2's block count and width.
LORA_TARGETS = {
    (48, 4096): "LTX-2 / LTX-2.3 (48 blocks, 4096 wide)",
    (28, 2048): "LTX-Video 0.9.x 2B (28 blocks, 2048 wide)",
}


def inspect_path(path: str | Path) -> dict[str, Any]:
    """A report: {"path", "kind", ...kind-specific facts..., "problems": [one-line strings]}."""
    path = Path(path).expanduser()
    if path.is_dir():
        if (path / "model_index.json").is_file():
            return _diffusers_folder(path)
        if any((path / d).is_dir() for d in COMFY_DIRS):
            return _comfy_root(path)
        return _report(path, "unknown", problems=["a folder with neither model_index.json nor ComfyUI's subfolders"])
    if not path.exists():
        return _report(path, "missing", problems=[f"{path} does not exist"])
    try:
        header = read_header(path)
    except HeaderError as e:
        return _report(path, "unknown", problems=[str(e)])
    return inspect_header(header)


def inspect_header(header: Header) -> dict[str, Any]:
    keys = list(header.tensors)
    if any(m in k for k in keys for m in LORA_MARKERS):
        return _lora(header)
    parts, unknown = split(header.tensors)
    if _is_text_encoder(keys) and not parts["transformer"]:  # ltx-core's packed Gemma 4 holds a text projection too
        return _text_encoder(header)
    if any(parts[name] for name in COMPONENTS):
        return _checkpoint(header, parts, unknown)
    if all(k in header.tensors for k in UPSCALER_KEYS):
        return _upscaler(header)
    return _report(header.path, "unknown", tensors=len(keys), problems=["no LTX-2 component, LoRA or encoder keys"])


def _report(path: Path, kind: str, **facts: Any) -> dict[str, Any]:
    return {"path": str(path), "kind": kind, **facts, "problems": facts.pop("problems", [])}


def _count(tensors: dict) -> dict[str, Any]:
    """Parameters (scales left out), dtypes and FP8-ness of a group of tensors."""
    params = sum(t.numel for k, t in tensors.items() if not is_scale(k))
    dtypes = Counter(t.dtype for k, t in tensors.items() if not is_scale(k))
    fp8 = sum(1 for t in tensors.values() if t.is_fp8)
    scales = sum(1 for k in tensors if is_scale(k))
    return {
        "params": params,
        "params_b": round(params / 1e9, 3),
        "dtypes": dict(dtypes.most_common()),
        "fp8_tensors": fp8,
        "scale_tensors": scales,
    }


def _checkpoint(header: Header, parts: dict[str, dict], unknown: dict) -> dict[str, Any]:
    keys = list(header.tensors)
    version, how = detect_version(header.metadata, keys)
    components = {name: _count(tensors) for name, tensors in parts.items() if tensors}
    problems = [f"component missing: {name}" for name in COMPONENTS if not parts[name]]
    if unknown:
        problems.append(f"{len(unknown)} tensors outside the LTX-2 layout, e.g. {next(iter(unknown))}")
    fp8 = [name for name, c in components.items() if c["fp8_tensors"]]
    for name in fp8:
        c = components[name]
        if c["scale_tensors"] < c["fp8_tensors"]:
            problems.append(f"{name}: {c['fp8_tensors']} float8 tensors but only {c['scale_tensors']} scales")
    problems += [p for p in (unknown_version(header.metadata), version_contradiction(header.metadata, keys)) if p]
    config = header.json_metadata("config")
    if bad := header.json_error("config"):
        problems.append(f"{bad}: loading it fails")
    elif config is None:
        problems.append("no `config` in the header metadata: the shipped reference configs would be used")
    return _report(
        header.path, "single-file checkpoint", version=version, version_name=VERSIONS[version].name,
        version_from=how, av_cross_timesteps=AV_CROSS_TIMESTEPS, preset_loras=preset_loras(version), fp8=fp8,
        config_sections=sorted(config) if config else [], components=components, problems=problems,
    )  # fmt: skip


_BLOCK = re.compile(r"(?:^|\.)transformer_blocks\.(\d+)\.")


_CONNECTOR_LORA = re.compile(r"^(?:connectors|text_embedding_projection)\.|_embeddings_connector\.")
_WIDE_INPUT = re.compile(r"\.(?:attn1\.to_[qkv]|ff\.net\.0\.proj)\.")  # video-stream layers the model's width enters


def lora_shape(header: Header) -> tuple[int, int, str]:
    """(transformer blocks, model width, the model those fit) of a LoRA, from its header: the highest transformer
    block index it touches and the input width of its video self-attention or FFN down-projections (0: it adapts
    none; the text connectors' layers are not counted)."""
    down = {k: t for k, t in header.tensors.items() if ".lora_A." in k or ".lora_down." in k}
    own = {k for k in header.tensors if not _CONNECTOR_LORA.search(k)}
    blocks = {int(m[1]) for k in own if (m := _BLOCK.search(k))}
    n_blocks = max(blocks) + 1 if blocks else 0
    widths = Counter(t.shape[1] for k, t in down.items() if k in own and _WIDE_INPUT.search(k) and len(t.shape) == 2)
    width = widths.most_common(1)[0][0] if widths else 0
    return n_blocks, width, LORA_TARGETS.get((n_blocks, width), f"an unknown model ({n_blocks} blocks, {width} wide)")


# What diffusers' LTX-2 LoRA loader reads (LTX2LoraLoaderMixin): Lightricks' / ComfyUI's names, diffusers' own,
# and the text connectors' in either naming; a tensor under any other name is dropped, unnoticed until peft fails.
LORA_PREFIXES = ("diffusion_model.", "transformer.", "text_embedding_projection.", "connectors.")
_DOWN = re.compile(r"^(.+)\.lora_(A|down)\.weight$")


def lora_header_problems(header: Header) -> list[str]:
    """What keeps a LoRA file from loading into any model, from its header: tensors under no name the loader reads,
    down-projections without their up-projection, ranks that disagree (lora_A's rows, lora_B's columns)."""
    problems = []
    if stray := [k for k in header.tensors if not k.startswith(LORA_PREFIXES)]:
        problems.append(
            f"{len(stray)} of its {len(header.tensors)} tensors have no prefix LTX-2's LoRA loader reads "
            f"({', '.join(LORA_PREFIXES)}), e.g. {stray[0]}"
        )
    unpaired, disagree = [], []
    for key, down in header.tensors.items():
        if not (m := _DOWN.match(key)):
            continue
        up_name = "B" if m[2] == "A" else "up"
        up = header.tensors.get(f"{m[1]}.lora_{up_name}.weight")
        if up is None:
            unpaired.append(key)
        elif len(up.shape) < 2 or not down.shape or up.shape[1] != down.shape[0]:
            disagree.append(f"{m[1]}: lora_{m[2]} {list(down.shape)} against lora_{up_name} {list(up.shape)}")
    if unpaired:
        problems.append(f"{len(unpaired)} down-projections have no up-projection beside them, e.g. {unpaired[0]}")
    if disagree:
        problems.append(f"the ranks of {len(disagree)} layers disagree, e.g. {disagree[0]}")
    return problems


def _lora(header: Header) -> dict[str, Any]:
    keys = list(header.tensors)
    down = {k: t for k, t in header.tensors.items() if ".lora_A." in k or ".lora_down." in k}
    n_blocks, width, made_for = lora_shape(header)
    ranks = sorted({t.shape[0] for t in down.values() if t.shape})
    style = "diffusers" if any(k.startswith("transformer.") for k in keys) else "Lightricks/ComfyUI"
    audio = any("audio" in k for k in keys)
    modules = sorted({_BLOCK.sub(".transformer_blocks.N.", k).split(".lora_")[0].lstrip(".") for k in down})
    return _report(
        header.path, "LoRA", format=style, made_for=made_for, blocks=n_blocks, width=width, ranks=ranks,
        audio_modules=audio, layers=len(down), targets=modules[:50], problems=lora_header_problems(header),
    )  # fmt: skip


def _is_text_encoder(keys: list[str]) -> bool:
    return any(k.startswith(("model.layers.", "language_model.", "model.language_model.")) for k in keys) or (
        "spiece_model" in keys
    )


def _text_encoder(header: Header) -> dict[str, Any]:
    from .text_encoder import GEMMA_CONFIG, HF_ASSET, SPIECE, TOKENIZER_JSON, header_family

    keys = list(header.tensors)
    layers = {int(m[1]) for k in keys if (m := re.search(r"layers\.(\d+)\.", k)) and "vision" not in k}
    embed = next((t for k, t in header.tensors.items() if k.endswith("embed_tokens.weight")), None)
    fp8_scaled = any(m in k for k in keys for m in COMFY_FP8) or "_quantization_metadata" in header.metadata
    packed = GEMMA_CONFIG in header.metadata  # ltx-core's packed file: config, tokenizer and HF files inside
    # what is no Gemma weight: embedded files and scales, and the packed file's LTX text projection (unused here)
    weights = {
        k: t
        for k, t in header.tensors.items()
        if k not in (SPIECE, TOKENIZER_JSON)
        and not k.startswith((HF_ASSET, "text_embedding_projection."))
        and not _comfy_scale(k)
    }
    tokenizer = SPIECE in header.tensors or TOKENIZER_JSON in header.tensors
    problems = [] if tokenizer else [f"no embedded tokenizer ({TOKENIZER_JSON if packed else SPIECE}): give a folder"]
    return _report(
        header.path, "text encoder", family=header_family(header), packed=packed,
        layers=max(layers) + 1 if layers else 0, hidden=embed.shape[1] if embed and len(embed.shape) == 2 else None,
        fp8_scaled=fp8_scaled,
        tokenizer_embedded=tokenizer, **_count(weights), problems=problems,
    )  # fmt: skip


def _comfy_scale(key: str) -> bool:
    return key == "scaled_fp8" or key.endswith((".scale_weight", ".scale_input", ".comfy_quant"))


def _upscaler(header: Header) -> dict[str, Any]:
    config = header.json_metadata("config") or {}
    return _report(header.path, "latent upscaler", config=config, **_count(header.tensors), problems=[])


def _diffusers_folder(path: Path) -> dict[str, Any]:
    index = json.loads((path / "model_index.json").read_text())
    components, problems = {}, []
    for name, spec in index.items():
        if name.startswith("_") or not isinstance(spec, list):
            continue
        files = sorted((path / name).glob("*.safetensors")) if (path / name).is_dir() else []
        tensors: dict = {}
        for file in files:
            try:
                tensors |= read_header(file).tensors
            except HeaderError as e:
                problems.append(str(e))
        if files:
            components[name] = {"class": spec[-1], "files": len(files), **_count(tensors)}
        elif name not in ("scheduler", "tokenizer"):
            problems.append(f"{name}: no .safetensors files in {path / name}")
    version = folder_version(path)
    return _report(
        path, "diffusers folder", version=version, version_name=VERSIONS[version].name,
        av_cross_timesteps=AV_CROSS_TIMESTEPS,
        preset_loras=preset_loras(version), components=components, problems=problems,
    )  # fmt: skip


def preset_loras(version: str) -> dict[str, str | None]:
    """{LoRA short name the presets use: the file it is for this release (in <models>/loras/), None where the
    release has none (presets then run without it)}."""
    from ..jobs.presets import load_presets

    presets = load_presets()[0].presets.values()
    names = dict.fromkeys(ref.name for p in presets for ref in p.loras if ref.name is not None)
    stems = VERSIONS[version].loras
    return {name: f"{stems[name][0]}.safetensors" if name in stems else None for name in names}


def _comfy_root(path: Path) -> dict[str, Any]:
    entries: dict[str, list[dict[str, Any]]] = {}
    for sub in COMFY_DIRS:
        folder = path / sub
        if folder.is_dir():
            entries[sub] = [_summary(inspect_path(f)) for f in sorted(folder.glob("*.safetensors"))]
    checkpoints = [e for e in entries.get("checkpoints", []) if e["kind"] == "single-file checkpoint"]
    problems = [] if checkpoints else ["no LTX-2 checkpoint in checkpoints/"]
    for sub, listed in entries.items():  # each file's own, so the root's exit status and lines include them
        problems += [f"{sub}/{Path(e['path']).name}: {p}" for e in listed for p in e["problems"]]
    return _report(path, "ComfyUI models root", folders=entries, problems=problems)


def _summary(report: dict[str, Any]) -> dict[str, Any]:
    keep = ("path", "kind", "version", "made_for", "family", "fp8", "fp8_scaled", "params_b", "problems")
    return {k: report[k] for k in keep if k in report}
