"""The tiny model's LTX-2.5 and LTX-2.3 variants: what they change, on top of the tiny LTX-2 (`tiny.py`) dimensions.

From the reference 2.5 configs (../shared/reference/ltx2-configs/LTX-2.5): LTX-2.3's gated attention, cross-attention
modulation, perturbable self-attention, per-modality connector projections and 48 kHz bandwidth-extension vocoder;
then 2.5's own changes: a video FFN without bias, a learned keyframe position embedding, and Gemma 4 12B
(`gemma4_unified`) as the text encoder, whose tokenizer adds no BOS. Only widths and depths shrink. The 2.3 variant
is the same without 2.5's changes (Gemma 3, as the tiny LTX-2). Both keep the tiny LTX-2's video VAE design (three
up blocks; the real 2.3 / 2.5 VAE has four): the renderer treats either the same.
"""

from __future__ import annotations

from typing import Any

from . import tiny_configs as tiny

TRANSFORMER: dict[str, Any] = {
    **tiny.TRANSFORMER,
    "gated_attn": True,
    "audio_gated_attn": True,
    "cross_attn_mod": True,
    "audio_cross_attn_mod": True,
    "use_prompt_embeddings": False,  # a2v / v2a modulated by the other stream's sigma
    "perturbed_attn": True,
    "ff_bias": False,
    "use_keyframes_abs_pos_embedding": True,
}

TRANSFORMER_23: dict[str, Any] = {**TRANSFORMER, "ff_bias": True, "use_keyframes_abs_pos_embedding": False}

CONNECTORS: dict[str, Any] = {
    **tiny.CONNECTORS,
    "video_connector_attention_head_dim": tiny.VIDEO_HEAD_DIM,  # heads x head dim = the stream's width
    "audio_connector_attention_head_dim": tiny.AUDIO_HEAD_DIM,
    "video_gated_attn": True,
    "audio_gated_attn": True,
    "per_modality_projections": True,
    "video_hidden_dim": tiny.HEADS * tiny.VIDEO_HEAD_DIM,  # real 4096
    "audio_hidden_dim": tiny.HEADS * tiny.AUDIO_HEAD_DIM,  # real 2048
    "proj_bias": True,
}

VOCODER: dict[str, Any] = {  # LTX2VocoderWithBWE: 16 kHz from the mel, then bandwidth extension to 48 kHz
    "in_channels": 2 * tiny.MEL_BINS,
    "hidden_channels": 128,  # real 1536; halved by each of the 6 upsamplers
    "upsample_factors": [5, 2, 2, 2, 2, 2],  # 160 samples per mel frame: 16 kHz
    "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4],
    "bwe_hidden_channels": 64,  # real 512
    "bwe_upsample_factors": [6, 5, 2, 2, 2],  # 240 per frame of its own 80-hop mel: 48 kHz
    "bwe_upsample_kernel_sizes": [12, 11, 4, 4, 4],
    "num_mel_channels": tiny.MEL_BINS,
    "input_sampling_rate": 16000,
    "output_sampling_rate": 48000,
}

# Gemma 4's special token ids match Gemma 3's (pad 0, eos 1, bos 2); the multimodal markers get tiny ids.
_ID = tiny.TOKEN_ID
TEXT_ENCODER: dict[str, Any] = {
    "boi_token_id": _ID["<start_of_image>"],
    "eoi_token_id": _ID["<end_of_image>"],
    "image_token_id": _ID["<image_soft_token>"],
    "video_token_id": _ID["<mask>"],
    "boa_token_id": _ID["<start_of_turn>"],
    "eoa_token_index": _ID["<end_of_turn>"],
    "audio_token_id": _ID["<unk>"],
    "initializer_range": 0.02,
    "tie_word_embeddings": True,
    "text_config": {
        "attention_k_eq_v": True,  # as real: full-attention layers share K and V
        "bos_token_id": _ID["<bos>"],
        "eos_token_id": _ID["<eos>"],
        "pad_token_id": _ID["<pad>"],
        "final_logit_softcapping": 30.0,
        "global_head_dim": 32,  # real 512
        "head_dim": 16,  # real 256
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": tiny.TEXT_HIDDEN,
        "hidden_size_per_layer_input": 0,
        "intermediate_size": 64,  # real 15360
        "layer_types": ["sliding_attention", "full_attention"],  # real 5 sliding : 1 full, 48 layers
        "max_position_embeddings": 262144,
        "num_attention_heads": 2,  # real 16
        "num_global_key_value_heads": 1,
        "num_hidden_layers": tiny.TEXT_LAYERS,
        "num_key_value_heads": 1,  # real 8
        "rope_parameters": {
            "full_attention": {"partial_rotary_factor": 0.25, "rope_theta": 1000000.0, "rope_type": "proportional"},
            "sliding_attention": {"rope_theta": 10000.0, "rope_type": "default"},
        },
        "sliding_window": 8,  # real 1024: short enough that test prompts use it
        "use_bidirectional_attention": "vision",
        "vocab_size": tiny.VOCAB_SIZE,
    },
    "vision_config": {"mm_embed_dim": tiny.TEXT_HIDDEN, "mm_posemb_size": 8, "output_proj_dims": tiny.TEXT_HIDDEN},
    "audio_config": {"audio_embed_dim": 8},  # real 640
}

# What each variant's cache hash adds: its configs and the LoRA files it ships (the release's real names).
CONFIGS = {"2.3": [TRANSFORMER_23, CONNECTORS, VOCODER], "2.5": [TRANSFORMER, CONNECTORS, VOCODER, TEXT_ENCODER]}


def loras(variant: str) -> dict[str, tuple[int, tuple[str, ...]]]:
    """{file stem: (rank, layers)}: the variant's distilled LoRA, under the file name its release ships."""
    from ..jobs.releases import VERSIONS

    return {VERSIONS[variant].loras["distilled"][0]: (4, tiny.LAYERS)}


def make_transformer() -> Any:
    import torch
    from diffusers import LTX2VideoTransformer3DModel

    model = LTX2VideoTransformer3DModel.from_config(TRANSFORMER)
    with torch.no_grad():  # zeros in a fresh model (as in the reference's init): random, so leaving it out shows
        model.keyframes_abs_pos_embedding.normal_()
    return model


def make_transformer_23() -> Any:
    from diffusers import LTX2VideoTransformer3DModel

    return LTX2VideoTransformer3DModel.from_config(TRANSFORMER_23)


def make_connectors() -> Any:
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors

    return LTX2TextConnectors.from_config(CONNECTORS)


def make_vocoder() -> Any:
    from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE

    return LTX2VocoderWithBWE.from_config(VOCODER)


def make_text_encoder() -> Any:
    from transformers import Gemma4UnifiedConfig, Gemma4UnifiedForConditionalGeneration

    return Gemma4UnifiedForConditionalGeneration(Gemma4UnifiedConfig(**TEXT_ENCODER))


MAKERS: dict[str, Any] = {  # what replaces tiny._MAKERS' components (same names, same seed order)
    "transformer": make_transformer,
    "connectors": make_connectors,
    "vocoder": make_vocoder,
    "text_encoder": make_text_encoder,
}
# 2.3: 2.5's connectors and vocoder, its own transformer, and Gemma 3 (tiny._MAKERS' text encoder).
MAKERS_23: dict[str, Any] = {"transformer": make_transformer_23, "connectors": make_connectors, "vocoder": make_vocoder}
