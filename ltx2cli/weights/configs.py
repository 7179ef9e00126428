"""diffusers configs for the components of a single-file checkpoint: its ltx-core `config` metadata translated,
sizes the metadata does not state read off the tensor shapes, the shipped reference configs for the rest.

The reference config of the detected version is the base (configs/reference/, provenance there); every value the
file states overrides it. The architecture switches between releases (2.3's gated attention, prompt AdaLN and
bandwidth-extension vocoder, 2.5's bias-free video FFN and keyframe embedding) are read from the metadata and checked
against the tensors that each one adds (`FLAGS`): a file whose metadata omits one still loads as its tensors say, and
one whose metadata contradicts its tensors is an error naming both. Whatever comes out is checked against every
tensor's shape when the modules are built (single_file.py), so a wrong value is an error naming a tensor, never a
silently different model.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .header import TensorInfo

# ltx-core transformer field -> diffusers LTX2VideoTransformer3DModel field (same meaning, same value)
TRANSFORMER_FIELDS = {
    "num_attention_heads": "num_attention_heads", "attention_head_dim": "attention_head_dim",
    "cross_attention_dim": "cross_attention_dim", "in_channels": "in_channels", "out_channels": "out_channels",
    "num_layers": "num_layers", "caption_channels": "caption_channels", "norm_eps": "norm_eps",
    "norm_elementwise_affine": "norm_elementwise_affine", "activation_fn": "activation_fn",
    "attention_bias": "attention_bias", "audio_num_attention_heads": "audio_num_attention_heads",
    "audio_attention_head_dim": "audio_attention_head_dim", "audio_cross_attention_dim": "audio_cross_attention_dim",
    "audio_out_channels": "audio_out_channels", "positional_embedding_theta": "rope_theta", "rope_type": "rope_type",
    "timestep_scale_multiplier": "timestep_scale_multiplier",
    "av_ca_timestep_scale_multiplier": "cross_attn_timestep_scale_multiplier",
}  # fmt: skip
# ltx-core transformer field -> the diffusers LTX2TextConnectors fields it sets (both streams share them)
CONNECTOR_FIELDS = {
    "connector_num_attention_heads": ("video_connector_num_attention_heads", "audio_connector_num_attention_heads"),
    "connector_attention_head_dim": ("video_connector_attention_head_dim", "audio_connector_attention_head_dim"),
    "connector_num_layers": ("video_connector_num_layers", "audio_connector_num_layers"),
    "connector_num_learnable_registers": (
        "video_connector_num_learnable_registers", "audio_connector_num_learnable_registers",
    ),
    "caption_channels": ("caption_channels",),
    "positional_embedding_theta": ("rope_theta",),
    "rope_type": ("rope_type",),
}  # fmt: skip
# Architecture switches: (ltx-core transformer field or None, diffusers fields it sets, the tensor (diffusers
# name) that exists exactly when it is on). ltx-core's keys: LTXModelConfigurator (model_configurator.py) and the
# 2.3 / 2.5 header configs in ../shared/reference/single-file.
_B0 = "transformer_blocks.0."
TRANSFORMER_FLAGS = (
    ("apply_gated_attention", ("gated_attn",), _B0 + "attn1.to_gate_logits.weight"),
    (None, ("audio_gated_attn",), _B0 + "audio_attn1.to_gate_logits.weight"),
    ("cross_attention_adaln", ("cross_attn_mod", "audio_cross_attn_mod"), _B0 + "prompt_scale_shift_table"),
    ("ff_bias", ("ff_bias",), _B0 + "ff.net.0.proj.bias"),
    ("audio_ff_bias", ("audio_ff_bias",), _B0 + "audio_ff.net.0.proj.bias"),
    ("use_keyframes_abs_pos_embedding", ("use_keyframes_abs_pos_embedding",), "keyframes_abs_pos_embedding"),
    (None, ("use_prompt_embeddings",), "caption_projection.linear_1.weight"),  # 2.0: captions projected in here
)  # fmt: skip
# Only where cross-attention is modulated (2.3 on): the prompt's own AdaLN, which KV-cacheable files drop.
PROMPT_ADALN_FLAG = (("use_prompt_adaln_single", ("use_prompt_adaln_single",), "prompt_adaln.linear.weight"),)
CONNECTOR_FLAGS = (
    ("connector_apply_gated_attention", ("video_gated_attn",), f"video_connector.{_B0}attn1.to_gate_logits.weight"),
    (None, ("audio_gated_attn",), f"audio_connector.{_B0}attn1.to_gate_logits.weight"),
    ("caption_proj_before_connector", ("per_modality_projections",), "video_text_proj_in.weight"),
)  # fmt: skip
# ltx-core 2.3+ `bwe` vocoder field -> diffusers LTX2VocoderWithBWE field
BWE_FIELDS = {
    "upsample_initial_channel": "bwe_hidden_channels", "upsample_rates": "bwe_upsample_factors",
    "upsample_kernel_sizes": "bwe_upsample_kernel_sizes", "resblock_kernel_sizes": "bwe_resnet_kernel_sizes",
    "resblock_dilation_sizes": "bwe_resnet_dilations", "input_sampling_rate": "input_sampling_rate",
    "output_sampling_rate": "output_sampling_rate", "hop_length": "hop_length", "n_fft": "filter_length",
    "win_size": "window_length", "num_mels": "num_mel_channels",
}  # fmt: skip
BWE = "LTX2VocoderWithBWE"


class ConfigMismatch(ValueError):
    """The file's metadata says one thing, its tensors another."""


# ltx-core audio VAE `ddconfig` field -> diffusers AutoencoderKLLTX2Audio field
AUDIO_VAE_FIELDS = {
    "ch": "base_channels", "out_ch": "output_channels", "ch_mult": "ch_mult", "num_res_blocks": "num_res_blocks",
    "in_channels": "in_channels", "resolution": "resolution", "z_channels": "latent_channels",
    "norm_type": "norm_type", "causality_axis": "causality_axis", "dropout": "dropout",
    "mid_block_add_attention": "mid_block_add_attention", "mel_bins": "mel_bins", "double_z": "double_z",
}  # fmt: skip
# ltx-core vocoder field -> diffusers LTX2Vocoder field
VOCODER_FIELDS = {
    "upsample_initial_channel": "hidden_channels", "upsample_rates": "upsample_factors",
    "upsample_kernel_sizes": "upsample_kernel_sizes", "resblock_kernel_sizes": "resnet_kernel_sizes",
    "resblock_dilation_sizes": "resnet_dilations",
}  # fmt: skip
DOWNSAMPLE_TYPES = {
    "compress_space_res": "spatial",
    "compress_time_res": "temporal",
    "compress_all_res": "spatiotemporal",
}
# ltx-core video VAE field -> diffusers AutoencoderKLLTX2Video field
VAE_FIELDS = {
    "patch_size": "patch_size", "latent_channels": "latent_channels",
    "encoder_spatial_padding_mode": "encoder_spatial_padding_mode",
    "decoder_spatial_padding_mode": "decoder_spatial_padding_mode",
    "timestep_conditioning": "timestep_conditioning", "causal_decoder": "decoder_causal",
}  # fmt: skip


def reference_configs(version: str) -> dict[str, dict]:
    """The shipped diffusers configs of a version (LTX-2's where that version's are not shipped)."""
    from .components import reference_config_dir

    base = reference_config_dir()
    folder = base.parent / {"2.0": "LTX-2", "2.3": "LTX-2.3", "2.5": "LTX-2.5"}[version]
    if not (folder / "transformer" / "config.json").is_file():
        folder = base
    out = {}
    for path in folder.glob("*/*config.json"):
        out[path.parent.name] = json.loads(path.read_text())
    return out


def component_configs(
    version: str, metadata: dict[str, Any] | None, parts: Mapping[str, Mapping[str, TensorInfo]]
) -> dict[str, dict]:
    """{component: diffusers config} for a single file. `parts`: the file's tensors by component, diffusers names."""
    ref = reference_configs(version)
    meta = metadata or {}
    t_meta = meta.get("transformer", {})
    configs = {
        "transformer": _transformer(ref["transformer"], t_meta, parts["transformer"]),
        "connectors": _connectors(ref["connectors"], t_meta, parts["connectors"]),
        "vae": _vae(_vae_base(version, ref["vae"], parts["vae"]), meta.get("vae", {}), parts["vae"]),
        "audio_vae": _audio_vae(ref["audio_vae"], meta.get("audio_vae", {})),
        "vocoder": _vocoder(meta.get("vocoder", {}), parts["vocoder"]),
        "scheduler": dict(ref["scheduler"]),
    }
    return configs


def _copy(base: dict, meta: Mapping[str, Any], fields: Mapping[str, Any]) -> dict:
    out = {k: v for k, v in base.items() if not k.startswith("_")}
    for src, dst in fields.items():
        if src in meta:
            for name in dst if isinstance(dst, tuple) else (dst,):
                out[name] = meta[src]
    return out


def _shape(tensors: Mapping[str, TensorInfo], key: str) -> tuple[int, ...] | None:
    info = tensors.get(key)
    return info.shape if info is not None else None


def _flags(out: dict, meta: Mapping[str, Any], tensors: Mapping[str, TensorInfo], flags: tuple) -> None:
    """Set each switch as its tensor says; a metadata value that disagrees is a ConfigMismatch."""
    for key, fields, tensor in flags:
        present = tensor in tensors
        if key is not None and key in meta and bool(meta[key]) != present:
            raise ConfigMismatch(
                f"its metadata says {key}: {str(meta[key]).lower()}, but tensor {tensor} is "
                f"{'in' if present else 'not in'} the file"
            )
        for name in fields:
            out[name] = present


def _transformer(base: dict, meta: Mapping[str, Any], tensors: Mapping[str, TensorInfo]) -> dict:
    out = _copy(base, meta, TRANSFORMER_FIELDS)
    if "attention_bias" in meta:
        out["attention_out_bias"] = meta["attention_bias"]
    if "qk_norm" in meta:
        out["qk_norm"] = "rms_norm_across_heads" if meta["qk_norm"] == "rms_norm" else meta["qk_norm"]
    if "frequencies_precision" in meta:
        out["rope_double_precision"] = meta["frequencies_precision"] == "float64"
    pos = meta.get("positional_embedding_max_pos")
    if isinstance(pos, list) and len(pos) == 3:
        out["pos_embed_max_pos"], out["base_height"], out["base_width"] = pos
    audio_pos = meta.get("audio_positional_embedding_max_pos")
    if isinstance(audio_pos, list) and audio_pos:
        out["audio_pos_embed_max_pos"] = audio_pos[0]
    if shape := _shape(tensors, "audio_proj_in.weight"):
        out["audio_in_channels"] = shape[1]  # not in ltx-core's config: the patchify input width
    _flags(out, meta, tensors, TRANSFORMER_FLAGS)
    if out["cross_attn_mod"]:
        _flags(out, meta, tensors, PROMPT_ADALN_FLAG)
    return out  # perturbed_attn (STG) has no tensor: the version's reference config says it


def _connectors(base: dict, meta: Mapping[str, Any], tensors: Mapping[str, TensorInfo]) -> dict:
    out = _copy(base, meta, CONNECTOR_FIELDS)
    if "frequencies_precision" in meta:
        out["rope_double_precision"] = meta["frequencies_precision"] == "float64"
    pos = meta.get("connector_positional_embedding_max_pos")
    if isinstance(pos, list) and pos:
        out["connector_rope_base_seq_len"] = pos[0]
    if "audio_connector_attention_head_dim" in meta:  # 2.3 on: the audio connector has its own width
        out["audio_connector_attention_head_dim"] = meta["audio_connector_attention_head_dim"]
    if "audio_connector_num_attention_heads" in meta:
        out["audio_connector_num_attention_heads"] = meta["audio_connector_num_attention_heads"]
    _flags(out, meta, tensors, CONNECTOR_FLAGS)
    proj = "video_text_proj_in" if out["per_modality_projections"] else "text_proj_in"
    out["proj_bias"] = f"{proj}.bias" in tensors
    if (shape := _shape(tensors, f"{proj}.weight")) and out.get("caption_channels"):
        out["text_proj_in_factor"] = shape[1] // out["caption_channels"]  # Gemma's stacked hidden states
    if out["per_modality_projections"]:  # each stream's projection ends at that stream's width
        for stream in ("video", "audio"):
            if shape := _shape(tensors, f"{stream}_text_proj_in.weight"):
                out[f"{stream}_hidden_dim"] = shape[0]
    return out


def _vae_base(version: str, base: dict, tensors: Mapping[str, TensorInfo]) -> dict:
    """The reference VAE of the design the file's decoder has: LTX-2's (3 up blocks) or 2.3's (4, with a temporal-
    only and a spatial-only one). The up blocks' kinds and factors are in no tensor shape, and ltx-core's
    `decoder_blocks` metadata is not read here (its order against diffusers' was not verified)."""
    ups = len(_counts(tensors, r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\."))
    for candidate in (version, "2.0", "2.3"):
        config = base if candidate == version else reference_configs(candidate)["vae"]
        if len(config.get("decoder_block_out_channels", [])) == ups:
            return config
    return base


def _vae(base: dict, meta: Mapping[str, Any], tensors: Mapping[str, TensorInfo]) -> dict:
    """Block structure from the metadata; channel widths and layer counts from the shapes (ltx-core's config
    states neither)."""
    out = _copy(base, meta, VAE_FIELDS)
    compress = [b[0] for b in meta.get("encoder_blocks", []) if isinstance(b, list) and b and b[0] in DOWNSAMPLE_TYPES]
    if compress:
        out["downsample_type"] = [DOWNSAMPLE_TYPES[c] for c in compress]
    down = _counts(tensors, r"encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.")
    mid = _counts(tensors, r"encoder\.(mid_block)\.resnets\.(\d+)\.")
    if down and mid:
        # Block i's downsampler leaves block_out_channels[i]: the width block i + 1 (then the mid block) runs at.
        later = [f"encoder.down_blocks.{i}.resnets.0" for i in sorted(down)[1:]] + ["encoder.mid_block.resnets.0"]
        widths = [_shape(tensors, f"{k}.conv1.conv.weight") for k in later]
        if all(widths):
            out["block_out_channels"] = [w[0] for w in widths]
        out["layers_per_block"] = [down[i] for i in sorted(down)] + [mid["mid_block"]]
    up = _counts(tensors, r"decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.")
    dmid = _counts(tensors, r"decoder\.(mid_block)\.resnets\.(\d+)\.")
    ups = [_shape(tensors, f"decoder.up_blocks.{i}.upsamplers.0.conv.conv.weight") for i in sorted(up)]
    if up and all(ups):
        out["decoder_block_out_channels"] = [s[1] for s in reversed(ups)]
        # diffusers lists the decoder's blocks deepest first: up blocks reversed, then the mid block
        out["decoder_layers_per_block"] = [up[i] for i in sorted(up, reverse=True)] + [dmid.get("mid_block", 0)]
    if shape := _shape(tensors, "decoder.conv_in.conv.weight"):
        out["latent_channels"] = shape[1]
    return out


def _counts(tensors: Mapping[str, TensorInfo], pattern: str) -> dict:
    """{block: number of resnets} from keys matching `pattern` (groups: block, resnet index)."""
    found: dict = {}
    for key in tensors:
        if m := re.match(pattern, key):
            block = int(m[1]) if m[1].isdigit() else m[1]
            found[block] = max(found.get(block, 0), int(m[2]) + 1)
    return found


def _audio_vae(base: dict, meta: Mapping[str, Any]) -> dict:
    model = meta.get("model", {}).get("params", {})
    out = _copy(base, model.get("ddconfig", {}), AUDIO_VAE_FIELDS)
    if "attn_resolutions" in model.get("ddconfig", {}):
        out["attn_resolutions"] = model["ddconfig"]["attn_resolutions"] or None
    if "sampling_rate" in model:
        out["sample_rate"] = model["sampling_rate"]
    stft = meta.get("preprocessing", {}).get("stft", {})
    if "hop_length" in stft:
        out["mel_hop_length"] = stft["hop_length"]
    if "causal" in stft:
        out["is_causal"] = stft["causal"]
    return out


def _vocoder(meta: Mapping[str, Any], tensors: Mapping[str, TensorInfo]) -> dict:
    """LTX-2's vocoder (a flat config), or from 2.3 on the bandwidth-extension one: ltx-core nests `vocoder` and
    `bwe` configs (VocoderConfigurator), the file holds `vocoder.*` and `bwe_generator.*` tensors."""
    bwe = any(k.startswith("bwe_generator.") for k in tensors)
    if ("bwe" in meta) != bwe:
        raise ConfigMismatch(
            f"its vocoder metadata {'has' if 'bwe' in meta else 'has no'} `bwe` config, but the file "
            f"{'has' if bwe else 'has no'} bwe_generator tensors"
        )
    if not bwe:
        out = _copy(reference_configs("2.0")["vocoder"], meta, VOCODER_FIELDS)
        if "stereo" in meta:
            out["out_channels"] = 2 if meta["stereo"] else 1
        if shape := _shape(tensors, "conv_in.weight"):
            out["in_channels"] = shape[1]
        return out
    main = meta.get("vocoder", {})
    out = _copy(reference_configs("2.3")["vocoder"], main, VOCODER_FIELDS) | {"_class_name": BWE}
    for src, dst in BWE_FIELDS.items():
        if src in meta["bwe"]:
            out[dst] = meta["bwe"][src]
    for stage, prefix in ((main, ""), (meta["bwe"], "bwe_")):
        out |= _final_layer(stage, prefix)
    for prefix, field in (("vocoder.", "in_channels"), ("bwe_generator.", "bwe_in_channels")):
        if shape := _shape(tensors, f"{prefix}conv_in.weight"):
            out[field] = shape[1]
    return out


def _final_layer(stage: Mapping[str, Any], prefix: str) -> dict:
    """A vocoder stage's last activation and bias as ltx-core builds them (ltx_core/model/audio_vae/vocoder.py:
    with `apply_final_activation` (default on), tanh if `use_tanh_at_final` (default on) else a clamp to +-1),
    under diffusers' names; only what the header says."""
    out: dict[str, Any] = {}
    if any(k in stage for k in ("apply_final_activation", "use_tanh_at_final")):
        on = stage.get("apply_final_activation", True)
        out[f"{prefix}final_act_fn"] = ("tanh" if stage.get("use_tanh_at_final", True) else "clamp") if on else None
    if "use_bias_at_final" in stage:
        out[f"{prefix}final_bias"] = bool(stage["use_bias_at_final"])
    return out


def write_configs(configs: Mapping[str, dict], folder: Path) -> None:
    """Each config as folder/<component>/config.json (scheduler_config.json for the scheduler), for from_config."""
    for name, config in configs.items():
        (folder / name).mkdir(parents=True, exist_ok=True)
        file = "scheduler_config.json" if name == "scheduler" else "config.json"
        (folder / name / file).write_text(json.dumps(config, indent=1))
