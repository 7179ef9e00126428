"""diffusers names -> ltx-core single-file names: the inverse of ltx2cli.weights.layout.to_diffusers, for tests
that write models in Lightricks' single-file layout. Checked against the forward map (diffusers' own converters)
by test_weights_layout.py, so a mistake here fails a test rather than passing one."""

from __future__ import annotations

import re

DIFFUSION = "model.diffusion_model."
TRANSFORMER = (
    ("audio_a2v_cross_attn_scale_shift_table", "scale_shift_table_a2v_ca_audio"),
    ("video_a2v_cross_attn_scale_shift_table", "scale_shift_table_a2v_ca_video"),
    ("av_cross_attn_video_scale_shift", "av_ca_video_scale_shift_adaln_single"),
    ("av_cross_attn_video_a2v_gate", "av_ca_a2v_gate_adaln_single"),
    ("av_cross_attn_audio_scale_shift", "av_ca_audio_scale_shift_adaln_single"),
    ("av_cross_attn_audio_v2a_gate", "av_ca_v2a_gate_adaln_single"),
    ("proj_in", "patchify_proj"),
    ("norm_q", "q_norm"),
    ("norm_k", "k_norm"),
)
CONNECTORS = (
    ("video_connector", "video_embeddings_connector"),
    ("audio_connector", "audio_embeddings_connector"),
    ("transformer_blocks", "transformer_1d_blocks"),
    ("norm_q", "q_norm"),
    ("norm_k", "k_norm"),
)
VOCODER = (("upsamplers.", "ups."), ("resnets", "resblocks"), ("conv_in", "conv_pre"), ("conv_out", "conv_post"))
STATISTICS = (
    ("latents_mean", "per_channel_statistics.mean-of-means"),
    ("latents_std", "per_channel_statistics.std-of-means"),
)


def _sub(key: str, pairs) -> str:
    for old, new in pairs:
        key = key.replace(old, new)
    return key


def transformer(key: str) -> str:
    for old, new in (("time_embed.", "adaln_single."), ("audio_time_embed.", "audio_adaln_single.")):
        if key.startswith(old):
            key = new + key[len(old) :]
    return DIFFUSION + _sub(key, TRANSFORMER)


def connectors(key: str) -> str:
    for old, new in (("text_proj_in", "aggregate_embed"), ("video_text_proj_in", "video_aggregate_embed"),
                     ("audio_text_proj_in", "audio_aggregate_embed")):  # fmt: skip
        if key.startswith(old + "."):
            return "text_embedding_projection." + new + key[len(old) :]
    return DIFFUSION + _sub(key, CONNECTORS)


def vae(key: str) -> str:
    key = _sub(key, STATISTICS)
    key = re.sub(
        r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0", lambda m: f"encoder.down_blocks.{2 * int(m[1]) + 1}", key
    )
    key = re.sub(
        r"^encoder\.down_blocks\.(\d+)\.resnets", lambda m: f"encoder.down_blocks.{2 * int(m[1])}.res_blocks", key
    )
    key = re.sub(r"^encoder\.mid_block\.resnets", "encoder.down_blocks.8.res_blocks", key)
    key = re.sub(r"^decoder\.mid_block\.resnets", "decoder.up_blocks.0.res_blocks", key)
    key = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0", lambda m: f"decoder.up_blocks.{2 * int(m[1]) + 1}", key)
    key = re.sub(
        r"^decoder\.up_blocks\.(\d+)\.resnets", lambda m: f"decoder.up_blocks.{2 * int(m[1]) + 2}.res_blocks", key
    )
    return "vae." + key


def audio_vae(key: str) -> str:
    return "audio_vae." + _sub(key, STATISTICS)


def vocoder(key: str) -> str:
    return "vocoder." + _sub(key, VOCODER)


NAMERS = {"transformer": transformer, "connectors": connectors, "vae": vae, "audio_vae": audio_vae, "vocoder": vocoder}
# ltx-core's video VAE stores two statistics diffusers drops; real files have them.
VAE_EXTRAS = ("vae.per_channel_statistics.channel", "vae.per_channel_statistics.mean-of-stds")


def write_sparse_safetensors(path, tensors: dict[str, tuple[str, tuple[int, ...]]], metadata: dict[str, str]):
    """A safetensors file whose header is real and whose data region is a hole (a sparse file): a full-size
    checkpoint's header without its 40 GB. `tensors`: {name: (safetensors dtype, shape)}."""
    import json
    import struct
    from math import prod

    from ltx2cli.weights.header import DTYPE_BYTES

    header, offset = {"__metadata__": metadata}, 0
    for name, (dtype, shape) in tensors.items():
        size = prod(shape) * DTYPE_BYTES[dtype]
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        f.truncate(8 + len(raw) + offset)
    return path
