"""The tiny LTX-2's dimensions and component configs (data only; built by tiny.py, changed for 2.5 by tiny25.py).
Real sizes are noted next to each tiny value."""

from __future__ import annotations

from typing import Any

VIDEO_LATENT_CHANNELS = 16  # real 128
AUDIO_LATENT_CHANNELS = 2  # real 8
MEL_BINS = 64  # real 64
AUDIO_TOKEN_CHANNELS = AUDIO_LATENT_CHANNELS * MEL_BINS // 4  # packed audio latent width; real 8 * 16 = 128
TEXT_HIDDEN = 32  # Gemma hidden size; real 3840
TEXT_LAYERS = 2  # real 48; the connectors read all TEXT_LAYERS + 1 hidden states
HEADS = 2  # video and audio heads must match: the a2v/v2a RoPE is split with the video head count
VIDEO_HEAD_DIM = 16  # real 32 heads x 128
AUDIO_HEAD_DIM = 8  # real 32 heads x 64
VOCAB_SIZE = 384  # real 262208
MAX_SEQUENCE_LENGTH = 1024  # tokenizer model_max_length; a multiple of the connectors' register count

TRANSFORMER: dict[str, Any] = {
    "activation_fn": "gelu-approximate",
    "attention_bias": True,
    "attention_head_dim": VIDEO_HEAD_DIM,
    "attention_out_bias": True,
    "audio_attention_head_dim": AUDIO_HEAD_DIM,
    "audio_cross_attention_dim": HEADS * AUDIO_HEAD_DIM,  # = audio inner dim, as in the real 2048
    "audio_hop_length": 160,
    "audio_in_channels": AUDIO_TOKEN_CHANNELS,
    "audio_num_attention_heads": HEADS,
    "audio_out_channels": AUDIO_TOKEN_CHANNELS,
    "audio_patch_size": 1,
    "audio_patch_size_t": 1,
    "audio_pos_embed_max_pos": 20,
    "audio_sampling_rate": 16000,
    "audio_scale_factor": 4,
    "base_height": 2048,
    "base_width": 2048,
    "caption_channels": TEXT_HIDDEN,
    "causal_offset": 1,
    "cross_attention_dim": HEADS * VIDEO_HEAD_DIM,  # = video inner dim, as in the real 4096
    "cross_attn_timestep_scale_multiplier": 1000,
    "in_channels": VIDEO_LATENT_CHANNELS,
    "norm_elementwise_affine": False,
    "norm_eps": 1e-6,
    "num_attention_heads": HEADS,
    "num_layers": 2,  # real 48
    "out_channels": VIDEO_LATENT_CHANNELS,
    "patch_size": 1,
    "patch_size_t": 1,
    "pos_embed_max_pos": 20,
    "qk_norm": "rms_norm_across_heads",
    "rope_double_precision": True,
    "rope_theta": 10000.0,
    "rope_type": "split",
    "timestep_scale_multiplier": 1000,
    "vae_scale_factors": [8, 32, 32],
}

CONNECTORS: dict[str, Any] = {
    "caption_channels": TEXT_HIDDEN,
    "text_proj_in_factor": TEXT_LAYERS + 1,
    "video_connector_num_attention_heads": HEADS,  # heads x head dim must equal caption_channels
    "video_connector_attention_head_dim": TEXT_HIDDEN // HEADS,
    "video_connector_num_layers": 2,
    "video_connector_num_learnable_registers": 8,  # real 128; the prompt length must be a multiple
    "audio_connector_num_attention_heads": HEADS,
    "audio_connector_attention_head_dim": TEXT_HIDDEN // HEADS,
    "audio_connector_num_layers": 2,
    "audio_connector_num_learnable_registers": 8,
    "causal_temporal_positioning": False,
    "connector_rope_base_seq_len": 4096,
    "rope_double_precision": True,
    "rope_theta": 10000.0,
    "rope_type": "split",
}

VAE: dict[str, Any] = {
    "block_out_channels": [16, 16, 32, 32],  # real 256, 512, 1024, 2048
    "decoder_block_out_channels": [8, 16, 32],  # real 256, 512, 1024
    "decoder_causal": False,
    "decoder_inject_noise": [False, False, False, False],
    "decoder_layers_per_block": [1, 1, 1, 1],  # real 5 each
    "decoder_spatial_padding_mode": "reflect",
    "decoder_spatio_temporal_scaling": [True, True, True],
    "down_block_types": ["LTX2VideoDownBlock3D"] * 4,
    "downsample_type": ["spatial", "temporal", "spatiotemporal", "spatiotemporal"],
    "encoder_causal": True,
    "encoder_spatial_padding_mode": "zeros",
    "in_channels": 3,
    "latent_channels": VIDEO_LATENT_CHANNELS,
    "layers_per_block": [1, 1, 1, 1, 1],  # real 4, 6, 6, 2, 2
    "out_channels": 3,
    "patch_size": 4,
    "patch_size_t": 1,
    "resnet_norm_eps": 1e-6,
    "scaling_factor": 1.0,
    "spatial_compression_ratio": 32,
    "spatio_temporal_scaling": [True, True, True, True],
    "temporal_compression_ratio": 8,
    "timestep_conditioning": False,
    "upsample_factor": [2, 2, 2],
    "upsample_residual": [True, True, True],
    "upsample_type": ["spatiotemporal", "spatiotemporal", "spatiotemporal"],
}

AUDIO_VAE: dict[str, Any] = {
    "attn_resolutions": None,
    # diffusers normalizes *packed* audio latents with per-channel stats of length base_channels
    "base_channels": AUDIO_TOKEN_CHANNELS,  # real 128
    "causality_axis": "height",
    "ch_mult": [1, 1, 2],  # real 1, 2, 4; three levels = the fixed 4x latent downsampling
    "dropout": 0.0,
    "in_channels": 2,
    "is_causal": True,
    "latent_channels": AUDIO_LATENT_CHANNELS,
    "mel_bins": MEL_BINS,
    "mel_hop_length": 160,
    "mid_block_add_attention": False,
    "norm_type": "pixel",
    "num_res_blocks": 1,  # real 2
    "output_channels": 2,
    "resolution": 256,
    "sample_rate": 16000,
}

VOCODER: dict[str, Any] = {
    "hidden_channels": 64,  # real 1024; halved by each of the 5 upsamplers
    "in_channels": 2 * MEL_BINS,  # stereo x mel bins, as real
    "leaky_relu_negative_slope": 0.1,
    "out_channels": 2,
    "output_sampling_rate": 24000,
    "resnet_dilations": [[1, 3, 5], [1, 3, 5], [1, 3, 5]],
    "resnet_kernel_sizes": [3, 7, 11],
    "upsample_factors": [6, 5, 2, 2, 2],  # 240 samples per mel frame: 100 mel frames/s -> 24 kHz
    "upsample_kernel_sizes": [16, 15, 8, 4, 4],
}

LATENT_UPSAMPLER: dict[str, Any] = {
    "in_channels": VIDEO_LATENT_CHANNELS,
    "mid_channels": 32,  # real 1024; GroupNorm(32) needs a multiple of 32
    "num_blocks_per_stage": 1,  # real 4
    "dims": 3,
    "spatial_upsample": True,
    "temporal_upsample": False,
    "rational_spatial_scale": 2.0,
    "use_rational_resampler": True,
}

SCHEDULER: dict[str, Any] = {  # the real values, unchanged
    "base_image_seq_len": 1024,
    "base_shift": 0.95,
    "invert_sigmas": False,
    "max_image_seq_len": 4096,
    "max_shift": 2.05,
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "shift_terminal": 0.1,
    "stochastic_sampling": False,
    "time_shift_type": "exponential",
    "use_beta_sigmas": False,
    "use_dynamic_shifting": True,
    "use_exponential_sigmas": False,
    "use_karras_sigmas": False,
}

# Tokenizer: Gemma's special tokens, byte fallback for anything else, then one piece per printable ASCII char.
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
EXTRA_SPECIAL_TOKENS = ["<start_of_turn>", "<end_of_turn>", "<start_of_image>", "<end_of_image>", "<image_soft_token>"]
TOKEN_ID = {t: i for i, t in enumerate(SPECIAL_TOKENS + EXTRA_SPECIAL_TOKENS)}

TEXT_ENCODER: dict[str, Any] = {
    "boi_token_index": TOKEN_ID["<start_of_image>"],
    "eoi_token_index": TOKEN_ID["<end_of_image>"],
    "image_token_index": TOKEN_ID["<image_soft_token>"],
    "bos_token_id": TOKEN_ID["<bos>"],
    "eos_token_id": TOKEN_ID["<end_of_turn>"],  # as real (106 there)
    "pad_token_id": TOKEN_ID["<pad>"],
    "initializer_range": 0.02,
    "mm_tokens_per_image": 4,  # real 256: 2x2 pooled from a 4x4 patch grid
    "text_config": {
        "attention_bias": False,
        "attention_dropout": 0.0,
        "head_dim": 16,  # real 256
        "hidden_activation": "gelu_pytorch_tanh",
        "hidden_size": TEXT_HIDDEN,
        "intermediate_size": 64,  # real 15360
        "max_position_embeddings": 131072,
        "num_attention_heads": 2,  # real 16
        "num_hidden_layers": TEXT_LAYERS,
        "num_key_value_heads": 1,  # real 8 (grouped-query attention kept)
        "query_pre_attn_scalar": 16,
        "rms_norm_eps": 1e-6,
        "rope_local_base_freq": 10000.0,
        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
        "rope_theta": 1000000.0,
        "sliding_window": 8,  # real 1024: short enough that test prompts use it
        "sliding_window_pattern": 2,  # real 6: layer 0 sliding, layer 1 full
        "vocab_size": VOCAB_SIZE,
    },
    "vision_config": {
        "hidden_size": 16,  # real 1152
        "image_size": 56,  # real 896
        "intermediate_size": 32,
        "model_type": "siglip_vision_model",
        "num_attention_heads": 2,
        "num_hidden_layers": 1,  # real 27
        "patch_size": 14,
        "vision_use_head": False,
    },
}

# LoRAs in the real LTX-2 file format (`diffusion_model.` keys, PEFT lora_A / lora_B), real name -> (rank, the
# layers of each block they adapt): ltx-trainer's usual targets, every projection of the attentions and both
# Linears of the feed-forwards (to_q, to_k, to_v, to_out.0, ff.net.0.proj, ff.net.2).
ATTENTIONS = ("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn")
PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
FFN_LAYERS = ("net.0.proj", "net.2")


def lora_layers(attentions: tuple[str, ...], ffns: tuple[str, ...]) -> tuple[str, ...]:
    """Each projection of `attentions` and each Linear of the feed-forwards `ffns` ("ff", "audio_ff")."""
    projections = tuple(f"{a}.{p}" for a in attentions for p in PROJECTIONS)
    return projections + tuple(f"{f}.{n}" for f in ffns for n in FFN_LAYERS)


LAYERS = lora_layers(ATTENTIONS, ("ff", "audio_ff"))  # a LoRA over the whole of every block
LORAS: dict[str, tuple[int, tuple[str, ...]]] = {
    "ltx-2-19b-distilled-lora-384": (4, LAYERS),  # real rank 384
    "ltx-2-19b-lora-camera-control-dolly-in": (2, lora_layers(("attn1", "attn2"), ("ff",))),  # video-only
}
