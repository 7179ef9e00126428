"""Lightricks' single-file LTX-2 layout: which component each tensor belongs to, its diffusers name, the version.

One `.safetensors` holds the whole model in ltx-core's names: `model.diffusion_model.*` (the transformer, with
the two text `*_embeddings_connector`s inside it), `text_embedding_projection.*` (the connectors' input
projection; under `model.diffusion_model.` in some files), `vae.*`, `audio_vae.*`, `vocoder.*`; the ltx-core
configs in `__metadata__["config"]`. FP8 files add a float32 `<name>.weight_scale` (and `<name>.input_scale`)
beside each float8 weight.

Renaming calls diffusers' own converters where they exist (transformer, video VAE, audio VAE); the connectors and
the vocoder follow diffusers' `scripts/convert_ltx2_to_diffusers.py`, which has no importable function for them.
Every function here works on any {name: value} mapping, so header entries (no data) and tensors go the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

V = TypeVar("V")

DIFFUSION = "model.diffusion_model."
COMPONENTS = ("transformer", "connectors", "vae", "audio_vae", "vocoder")
CONNECTOR_PARTS = ("video_embeddings_connector.", "audio_embeddings_connector.", "text_embedding_projection.")
PREFIXES = {"vae": "vae.", "audio_vae": "audio_vae.", "vocoder": "vocoder."}
# Per-tensor FP8 scales beside float8 weights: Lightricks' names, then ComfyUI's "fp8_scaled" ones (and its
# `comfy_quant` format's per-layer JSON); `scaled_fp8` is ComfyUI's marker tensor.
SCALE_SUFFIXES = (".weight_scale", ".input_scale", ".scale_weight", ".scale_input", ".comfy_quant")
WEIGHT_SCALES = (".weight_scale", ".scale_weight")  # the one that multiplies the weight, in either naming
MARKERS = ("scaled_fp8",)
CONNECTOR_RENAMES = (
    ("video_embeddings_connector", "video_connector"),
    ("audio_embeddings_connector", "audio_connector"),
    ("transformer_1d_blocks", "transformer_blocks"),
    ("text_embedding_projection.aggregate_embed", "text_proj_in"),  # LTX-2: one projection for both streams
    ("text_embedding_projection.video_aggregate_embed", "video_text_proj_in"),  # 2.3 on: one per modality
    ("text_embedding_projection.audio_aggregate_embed", "audio_text_proj_in"),
    ("q_norm", "norm_q"),
    ("k_norm", "norm_k"),
)
VOCODER_RENAMES = (
    ("resblocks", "resnets"),
    ("conv_pre", "conv_in"),
    ("conv_post", "conv_out"),
    ("act_post", "act_out"),  # 2.3 on: the bandwidth-extension vocoder
    ("downsample.lowpass", "downsample"),
)
# What 2.3 added that diffusers' single-file converters (2.0 tables) leave unrenamed; diffusers' conversion
# script's 2.3 tables rename them so.
TRANSFORMER_RENAMES_23 = (("audio_prompt_adaln_single", "audio_prompt_adaln"), ("prompt_adaln_single", "prompt_adaln"))
VAE_RENAMES_23 = (
    ("up_blocks.7", "up_blocks.3.upsamplers.0"),
    ("up_blocks.8", "up_blocks.3"),
    ("last_time_embedder", "time_embedder"),
    ("last_scale_shift_table", "scale_shift_table"),
)
# Keys of a single file that no diffusers module holds (ltx-core's VAE keeps extra statistics).
DROPPED = ("per_channel_statistics.channel", "per_channel_statistics.mean-of-stds")


def component_of(key: str) -> str | None:
    """The component a single-file tensor belongs to, or None for a key outside the layout."""
    if key.startswith(DIFFUSION):
        return "connectors" if key[len(DIFFUSION) :].startswith(CONNECTOR_PARTS) else "transformer"
    if key.startswith("text_embedding_projection."):
        return "connectors"
    for name, prefix in PREFIXES.items():
        if key.startswith(prefix):
            return name
    return None


def split(tensors: Mapping[str, V]) -> tuple[dict[str, dict[str, V]], dict[str, V]]:
    """({component: {key: value}}, {key: value} of keys that belong to no component)."""
    parts: dict[str, dict[str, V]] = {name: {} for name in COMPONENTS}
    unknown: dict[str, V] = {}
    for key, value in tensors.items():
        if key in MARKERS:
            continue
        name = component_of(key)
        (parts[name] if name else unknown)[key] = value
    return parts, unknown


def is_scale(key: str) -> bool:
    return key.endswith(SCALE_SUFFIXES)


def to_diffusers(component: str, tensors: Mapping[str, V]) -> dict[str, V]:
    """One component's single-file tensors under the names its diffusers module uses (scales keep their
    suffix after the renamed weight's name; ltx-core's extra VAE statistics are left out)."""
    from diffusers.loaders import single_file_utils as sfu

    state: dict[str, Any] = {k: v for k, v in tensors.items() if not k.endswith(DROPPED)}
    if component == "transformer":
        return _renamed(sfu.convert_ltx2_transformer_to_diffusers(state), TRANSFORMER_RENAMES_23)
    if component == "vae":
        return _renamed(sfu.convert_ltx2_vae_to_diffusers(state), VAE_RENAMES_23)
    if component == "audio_vae":
        return sfu.convert_ltx2_audio_vae_to_diffusers(state)
    if component == "connectors":
        return {_rename(k.removeprefix(DIFFUSION), CONNECTOR_RENAMES): v for k, v in state.items()}
    if component == "vocoder":
        return {_vocoder_name(k.removeprefix("vocoder.")): v for k, v in state.items()}
    raise ValueError(f"unknown component {component!r}")


LORA_DOWN = re.compile(r"^(.+)\.lora_(?:A|down)\.weight$")
LORA_COMPONENTS = ("transformer", "connectors")  # what LTX2LoraLoaderMixin loads LoRAs into: diffusers' prefixes


def lora_modules(keys: Iterable[str]) -> dict[str, str]:
    """{a LoRA's down-projection key: the module it adapts, as `<component>.<diffusers name>` with the component
    `transformer` or `connectors`}. Lightricks / ComfyUI files use ltx-core's names (`diffusion_model.*`, the text
    connectors' blocks among them, and `text_embedding_projection.*`), renamed as a checkpoint's tensors are;
    diffusers files (`transformer.*`, `connectors.*`) already use diffusers'. Keys under no other prefix are left
    out (weights.inspect names them)."""
    return {key: module for key in keys if (m := LORA_DOWN.match(key)) and (module := lora_module(m[1]))}


def lora_module(stem: str) -> str | None:
    """`<component>.<diffusers name>` of the module a LoRA's layer `stem` (its key up to `.lora_*`) adapts."""
    if stem.startswith(tuple(f"{c}." for c in LORA_COMPONENTS)):
        return stem
    if stem.startswith("diffusion_model."):
        key = f"model.{stem}.weight"
    elif stem.startswith("text_embedding_projection."):
        key = f"{stem}.weight"
    else:
        return None
    component = component_of(key) or "transformer"
    renamed = to_diffusers(component, {key: 0})
    return f"{component}.{next(iter(renamed)).removesuffix('.weight')}" if renamed else f"{component}.{stem}"


def lora_module_label(module: str) -> str:
    """A module as lora_module names it, for a message: `<diffusers name> in the transformer` (or connectors)."""
    component, _, name = module.partition(".")
    return f"{name} in the {'text connectors' if component == 'connectors' else component}"


def lora_to_diffusers(tensors: Mapping[str, V]) -> dict[str, V]:
    """A LoRA's tensors under the names LTX2LoraLoaderMixin.load_lora_weights reads as they are (`transformer.*`,
    `connectors.*`): diffusers' own conversion sends ltx-core's connector blocks (`diffusion_model.*_embeddings_
    connector.*`) to the transformer, which has none. A tensor whose module has no name here keeps its key."""
    out = {}
    for key, value in tensors.items():
        stem = key.rsplit(".lora_", 1)[0] if ".lora_" in key else key.rsplit(".", 1)[0]  # also `<stem>.alpha`
        module = lora_module(stem)
        out[f"{module}{key[len(stem) :]}" if module else key] = value
    return out


def _renamed(state: dict[str, V], renames: tuple[tuple[str, str], ...]) -> dict[str, V]:
    return {_rename(k, renames): v for k, v in state.items()}


def _vocoder_name(key: str) -> str:
    """`ups` is LTX-2's and the BWE vocoder's upsampler list; matched as a whole name, as it is also a prefix."""
    key = re.sub(r"(^|\.)ups\.", r"\1upsamplers.", key)
    return _rename(key, VOCODER_RENAMES)


def _rename(key: str, renames: tuple[tuple[str, str], ...]) -> str:
    for old, new in renames:
        key = key.replace(old, new)
    return key
