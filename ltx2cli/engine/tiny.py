"""A tiny random-weight LTX-2 saved in the real diffusers folder layout (for tests, demos and benchmarks).

Same component classes, feature flags and compression ratios as `Lightricks/LTX-2` (video VAE 32x spatial and 8x
temporal, audio 16 kHz / 64 mel bins / hop 160 / 4x latent downsampling, vocoder 24 kHz, split RoPE, audio stream
with a2v/v2a cross-attention); only widths and depths shrink. Real sizes are noted next to each tiny value.

Also as LTX-2.3 and LTX-2.5 (`variant="2.3"` / `"2.5"`, engine.tiny25): the same dimensions with that release's
components and flags, and its distilled LoRA under the file name the release ships it as.

Heavy libraries (torch, diffusers, transformers) are imported inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

TINY_VERSION = 2  # bump when the build code changes in a way the configs below do not show

# Shared dimensions: every consistency rule between components is written once, here.
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
_TOKEN_ID = {t: i for i, t in enumerate(SPECIAL_TOKENS + EXTRA_SPECIAL_TOKENS)}

TEXT_ENCODER: dict[str, Any] = {
    "boi_token_index": _TOKEN_ID["<start_of_image>"],
    "eoi_token_index": _TOKEN_ID["<end_of_image>"],
    "image_token_index": _TOKEN_ID["<image_soft_token>"],
    "bos_token_id": _TOKEN_ID["<bos>"],
    "eos_token_id": _TOKEN_ID["<end_of_turn>"],  # as real (106 there)
    "pad_token_id": _TOKEN_ID["<pad>"],
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

# LoRAs in the real LTX-2 file format (`diffusion_model.` keys, PEFT lora_A / lora_B), real name -> (rank, targets)
ATTENTIONS = ("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn")
PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
LORAS: dict[str, tuple[int, tuple[str, ...]]] = {
    "ltx-2-19b-distilled-lora-384": (4, ATTENTIONS),  # real rank 384
    "ltx-2-19b-lora-camera-control-dolly-in": (2, ("attn1", "attn2")),  # video-only
}


VARIANTS = ("2.0", "2.3", "2.5")  # LTX releases the tiny model comes as (2.3, 2.5: engine.tiny25)


def tiny_config_hash(variant: str = "2.0") -> str:
    """Hash of everything that shapes the saved folder: configs, build version, library versions."""
    blob: dict[str, Any] = {
        "version": TINY_VERSION,
        "components": [TRANSFORMER, CONNECTORS, VAE, AUDIO_VAE, VOCODER, LATENT_UPSAMPLER, SCHEDULER, TEXT_ENCODER],
        "tokens": SPECIAL_TOKENS + EXTRA_SPECIAL_TOKENS,
        "loras": LORAS,
        "libs": [version(p) for p in ("torch", "diffusers", "transformers", "tokenizers", "safetensors")],
    }
    if variant != "2.0":  # the 2.0 blob stays as it was: its folder name must not change
        from . import tiny25

        blob["variant"] = [variant, tiny25.CONFIGS[variant], tiny25.loras(variant)]
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]


def tiny_model_dir(cache_dir: Path | None = None, variant: str = "2.0") -> Path:
    """The tiny model's folder in the cache, built on first use; a config or library change gets a new folder."""
    from ..cache import cache_root

    if variant not in VARIANTS:
        raise ValueError(f"no tiny LTX-{variant}; there are {', '.join(VARIANTS)}")
    root = Path(cache_dir) if cache_dir else cache_root()
    name = "tiny-ltx2" if variant == "2.0" else f"tiny-ltx{variant.replace('.', '')}"
    final = root / f"{name}-v{TINY_VERSION}-{tiny_config_hash(variant)}"
    if (final / "model_index.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-tiny-", dir=root))
    try:
        build_tiny_model(tmp, variant=variant)
        os.replace(tmp, final)  # atomic; fails if another process finished first
    except OSError:
        if not (final / "model_index.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def build_tiny_model(path: Path, seed: int = 0, variant: str = "2.0") -> Path:
    """Build every component from `seed` and save the diffusers folder (float32) plus `loras/` at `path`."""
    import torch
    from diffusers import LTX2Pipeline

    from .models import quiet_libraries

    quiet_libraries()
    path = Path(path)
    makers, tokenizer = _MAKERS, make_tokenizer()
    if variant == "2.5":
        from . import tiny25

        makers, tokenizer = tiny25.MAKERS, tiny25.make_tokenizer()
    elif variant == "2.3":
        from . import tiny25

        makers = tiny25.MAKERS_23
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG untouched
        parts = {name: _seeded(seed, i, make) for i, (name, make) in enumerate(makers.items())}
        upsampler = _seeded(seed, len(makers), _make_latent_upsampler)
    pipe = LTX2Pipeline(**parts, tokenizer=tokenizer, scheduler=_make_scheduler())
    pipe.save_pretrained(path, safe_serialization=True)
    upsampler.save_pretrained(path / "latent_upsampler", safe_serialization=True)
    _match_reference_index(path / "model_index.json")
    if variant == "2.0":  # LORAS are named for LTX-2 19B: the LoRA check refuses them on another release
        build_tiny_loras(path, seed)
    else:
        from . import tiny25

        build_tiny_loras(path, seed, tiny25.loras(variant))
    return path


def build_tiny_loras(path: Path, seed: int, loras: dict[str, tuple[int, tuple[str, ...]]] | None = None) -> None:
    """Write `<path>/loras/<name>.safetensors` for each of `loras` (LORAS), shaped for the transformer saved at
    `path`."""
    import torch
    from diffusers import LTX2VideoTransformer3DModel
    from safetensors.torch import save_file

    config = json.loads((Path(path) / "transformer" / "config.json").read_text())
    with torch.device("meta"):  # shapes only, no memory
        model = LTX2VideoTransformer3DModel.from_config(config)
    out = Path(path) / "loras"
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed + 1)
    for name, (rank, attentions) in (LORAS if loras is None else loras).items():
        tensors: dict[str, torch.Tensor] = {}
        for i, block in enumerate(model.transformer_blocks):
            for attn in attentions:
                for proj in PROJECTIONS:
                    linear = block.get_submodule(f"{attn}.{proj}")
                    key = f"diffusion_model.transformer_blocks.{i}.{attn}.{proj}"
                    a = torch.randn(rank, linear.in_features, generator=gen) / linear.in_features**0.5
                    b = torch.randn(linear.out_features, rank, generator=gen) * 0.5 / rank**0.5
                    tensors[f"{key}.lora_A.weight"] = a.to(torch.bfloat16)  # released LTX-2 LoRAs are bf16
                    tensors[f"{key}.lora_B.weight"] = b.to(torch.bfloat16)
        save_file(tensors, out / f"{name}.safetensors")


def _seeded(seed: int, index: int, make: Any) -> Any:
    """Build one component from its own seed, so each is independent of the build order (float32 by default)."""
    import torch

    torch.manual_seed(seed * 1000 + index)
    return make().eval()


def _randomize_latent_stats(model: Any) -> Any:
    """Non-trivial latent mean/std (real checkpoints have them), so a forgotten (de)normalization shows."""
    import torch

    with torch.no_grad():
        model.latents_mean.copy_(torch.randn_like(model.latents_mean) * 0.1)
        model.latents_std.copy_(torch.rand_like(model.latents_std) + 0.5)
    return model


def _make_transformer() -> Any:
    from diffusers import LTX2VideoTransformer3DModel

    return LTX2VideoTransformer3DModel.from_config(TRANSFORMER)


def _make_connectors() -> Any:
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors

    return LTX2TextConnectors.from_config(CONNECTORS)


def _make_vae() -> Any:
    from diffusers import AutoencoderKLLTX2Video

    return _randomize_latent_stats(AutoencoderKLLTX2Video.from_config(VAE))


def _make_audio_vae() -> Any:
    from diffusers import AutoencoderKLLTX2Audio

    return _randomize_latent_stats(AutoencoderKLLTX2Audio.from_config(AUDIO_VAE))


def _make_vocoder() -> Any:
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    return LTX2Vocoder.from_config(VOCODER)


def _make_latent_upsampler() -> Any:
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    return LTX2LatentUpsamplerModel.from_config(LATENT_UPSAMPLER)


def _make_scheduler() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(SCHEDULER)


def _make_text_encoder() -> Any:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    return Gemma3ForConditionalGeneration(Gemma3Config(**TEXT_ENCODER))


def make_tokenizer(add_bos: bool = True) -> Any:
    """A byte-fallback BPE with Gemma's special tokens (no merges: one piece per character), built offline.

    Gemma 3's tokenizer adds BOS; Gemma 4's (LTX-2.5) does not."""
    from transformers import GemmaTokenizerFast

    pieces = SPECIAL_TOKENS + EXTRA_SPECIAL_TOKENS + [f"<0x{b:02X}>" for b in range(256)]
    pieces += ["▁"] + [chr(c) for c in range(33, 127)]  # "▁" is the space after Gemma's normalizer
    assert len(pieces) <= VOCAB_SIZE
    return GemmaTokenizerFast(
        vocab={p: i for i, p in enumerate(pieces)},
        merges=[],
        add_bos_token=add_bos,
        add_eos_token=False,
        model_max_length=MAX_SEQUENCE_LENGTH,
        extra_special_tokens=EXTRA_SPECIAL_TOKENS,
    )


_MAKERS: dict[str, Any] = {  # the weighted components, in seed order
    "transformer": _make_transformer,
    "connectors": _make_connectors,
    "vae": _make_vae,
    "audio_vae": _make_audio_vae,
    "vocoder": _make_vocoder,
    "text_encoder": _make_text_encoder,
}


def _match_reference_index(index_path: Path) -> None:
    """Make model_index.json read like the hub's: tokenizer class GemmaTokenizerFast (an alias in transformers 5)."""
    index = json.loads(index_path.read_text())
    index = {k: v for k, v in index.items() if v != [None, None]}  # unset optional components: not listed there
    index["tokenizer"] = ["transformers", "GemmaTokenizerFast"]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
