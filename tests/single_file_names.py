"""diffusers names -> ltx-core single-file names: the inverse of ltx2cli.weights.layout.to_diffusers, for tests
that write models in Lightricks' single-file layout. Checked against the forward map (diffusers' own converters)
by test_weights_layout.py, so a mistake here fails a test rather than passing one."""

from __future__ import annotations

import re
from math import prod

DIFFUSION = "model.diffusion_model."
TRANSFORMER = (
    ("audio_a2v_cross_attn_scale_shift_table", "scale_shift_table_a2v_ca_audio"),
    ("video_a2v_cross_attn_scale_shift_table", "scale_shift_table_a2v_ca_video"),
    ("av_cross_attn_video_scale_shift", "av_ca_video_scale_shift_adaln_single"),
    ("av_cross_attn_video_a2v_gate", "av_ca_a2v_gate_adaln_single"),
    ("av_cross_attn_audio_scale_shift", "av_ca_audio_scale_shift_adaln_single"),
    ("av_cross_attn_audio_v2a_gate", "av_ca_v2a_gate_adaln_single"),
    ("proj_in", "patchify_proj"),
    ("prompt_adaln.", "prompt_adaln_single."),  # 2.3 on, video and audio
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
VOCODER = (
    ("upsamplers.", "ups."),
    ("resnets", "resblocks"),
    ("conv_in", "conv_pre"),
    ("conv_out", "conv_post"),
    ("act_out", "act_post"),  # 2.3 on: the BWE vocoder's anti-aliased activations
    (".downsample.", ".downsample.lowpass."),
)
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


# ---- the tiny model in Lightricks' single-file layout ---------------------------------------------------------


# Architecture constants every real LTX-2 header's transformer config states (example_metadata_config_ltx2_19b.json)
# and ltx-core's LTXModelConfigurator checks.
ARCHITECTURE = {
    "dropout": 0.0, "attention_bias": True, "num_vector_embeds": None, "activation_fn": "gelu-approximate",
    "num_embeds_ada_norm": 1000, "use_linear_projection": False, "only_cross_attention": False,
    "cross_attention_norm": True, "double_self_attention": False, "upcast_attention": False,
    "standardization_norm": "rms_norm", "norm_elementwise_affine": False, "positional_embedding_type": "rope",
    "use_audio_video_cross_attention": True, "share_ff": False, "av_cross_ada_norm": True,
    "use_middle_indices_grid": True, "attention_type": "default",
}  # fmt: skip
ENCODER_COMPRESS = {
    "spatial": "compress_space_res",
    "temporal": "compress_time_res",
    "spatiotemporal": "compress_all_res",
}
DECODER_COMPRESS = {"spatial": "compress_space", "temporal": "compress_time", "spatiotemporal": "compress_all"}


def _encoder_blocks(v: dict) -> list:
    """ltx-core's encoder_blocks: res_x blocks between compressions, each compression's channel multiplier
    (the encoder starts at the latent width, block i's downsampler leaves block_out_channels[i])."""
    widths = [v["latent_channels"], *v["block_out_channels"]]
    blocks = []
    for i, kind in enumerate(v["downsample_type"]):
        blocks += [["res_x", {"num_layers": v["layers_per_block"][i]}],
                   [ENCODER_COMPRESS[kind], {"multiplier": widths[i + 1] // widths[i]}]]  # fmt: skip
    return [*blocks, ["res_x", {"num_layers": v["layers_per_block"][-1]}]]


def _decoder_blocks(v: dict) -> list:
    """ltx-core's decoder_blocks, listed shallowest first as the encoder's (ltx-core runs them reversed). diffusers
    runs up block i with upsample_type[i] but reverses the factors, residual flags and layer counts, so entry i here
    is upsample_type[-1 - i] with factor i: 2.3's [st, st, temporal, spatial] x [2, 2, 1, 2] gives its header's
    compress_space, compress_time, compress_all x1, compress_all x2."""
    layers = v["decoder_layers_per_block"]
    kinds = list(reversed(v["upsample_type"]))
    blocks = []
    for i, (kind, factor) in enumerate(zip(kinds, v["upsample_factor"], strict=True)):
        blocks += [["res_x", {"num_layers": layers[i], "inject_noise": False}],
                   [DECODER_COMPRESS[kind], {"residual": v["upsample_residual"][i], "multiplier": factor}]]  # fmt: skip
    return [*blocks, ["res_x", {"num_layers": layers[-1], "inject_noise": False}]]


def _padding(v: dict) -> dict:
    """LTX-2 headers state the encoder's and decoder's padding apart; 2.3's one `spatial_padding_mode` for both
    (the only key ltx-core's VAE configurators read; their defaults are LTX-2's zeros / reflect)."""
    encoder, decoder = v.get("encoder_spatial_padding_mode", "zeros"), v.get("decoder_spatial_padding_mode", "reflect")
    if encoder == decoder:
        return {"spatial_padding_mode": encoder}
    return {"encoder_spatial_padding_mode": encoder, "decoder_spatial_padding_mode": decoder}


def ltx_core_config(folder) -> dict:
    """The `config` metadata (ltx-core's names) describing a diffusers LTX-2 folder's components, as ltx-core
    writes it into its checkpoints (fields per ../shared/reference/single-file)."""
    import json

    def read(name):
        return json.loads((folder / name / "config.json").read_text())

    t, c, v, a, w = (read(n) for n in ("transformer", "connectors", "vae", "audio_vae", "vocoder"))
    same = ("num_attention_heads", "attention_head_dim", "cross_attention_dim", "in_channels", "out_channels",
            "num_layers", "caption_channels", "norm_eps", "norm_elementwise_affine", "activation_fn", "attention_bias",
            "audio_num_attention_heads", "audio_attention_head_dim", "audio_cross_attention_dim", "audio_in_channels", "audio_out_channels",
            "rope_type", "timestep_scale_multiplier")  # fmt: skip
    transformer = ARCHITECTURE | {k: t[k] for k in same if k in t} | {
        "_class_name": "AVTransformer3DModel",
        "positional_embedding_theta": t.get("rope_theta", 10000.0),
        "av_ca_timestep_scale_multiplier": t.get("cross_attn_timestep_scale_multiplier", 1000),
        "qk_norm": "rms_norm",
        "frequencies_precision": "float64" if t.get("rope_double_precision", True) else "float32",
        "positional_embedding_max_pos": [t.get("pos_embed_max_pos", 20), t.get("base_height", 2048), t.get("base_width", 2048)],
        "audio_positional_embedding_max_pos": [t.get("audio_pos_embed_max_pos", 20)],
        "connector_num_attention_heads": c["video_connector_num_attention_heads"],
        "connector_attention_head_dim": c["video_connector_attention_head_dim"],
        "connector_num_layers": c.get("video_connector_num_layers", 2),
        "connector_num_learnable_registers": c["video_connector_num_learnable_registers"],
        "connector_positional_embedding_max_pos": [c.get("connector_rope_base_seq_len", 4096)],
    }  # fmt: skip
    if t.get("gated_attn"):  # 2.3 on, in the keys of the 2.3 header config (../shared/reference/single-file)
        transformer |= {
            "apply_gated_attention": True, "cross_attention_adaln": t.get("cross_attn_mod", False),
            "connector_apply_gated_attention": c.get("video_gated_attn", False),
            "caption_proj_before_connector": c.get("per_modality_projections", False),
            # with the above, what selects ltx-core's FeatureExtractorV2 (encoder_configurator._V2_EXPECTED_CONFIG)
            "caption_projection_first_linear": False, "caption_projection_second_linear": False,
            "caption_proj_input_norm": False,
            "audio_connector_attention_head_dim": c["audio_connector_attention_head_dim"],
            "audio_connector_num_attention_heads": c["audio_connector_num_attention_heads"],
        }  # fmt: skip
    for key in ("ff_bias", "use_keyframes_abs_pos_embedding"):  # 2.5's (the SKETCH there)
        if key in t:
            transformer[key] = t[key]
    vae = {
        "_class_name": "CausalVideoAutoencoder", "patch_size": v.get("patch_size", 4),
        "latent_channels": v["latent_channels"], **_padding(v), "timestep_conditioning": v.get("timestep_conditioning", False), "causal_decoder": v.get("decoder_causal", False),
        "dims": 3, "in_channels": 3, "out_channels": 3, "norm_layer": "pixel_norm", "latent_log_var": "uniform",
        "encoder_blocks": _encoder_blocks(v), "decoder_blocks": _decoder_blocks(v),
        "decoder_base_channels": v["decoder_block_out_channels"][-1] // prod(v.get("upsample_factor", [2, 2, 2])),
    }  # fmt: skip
    audio_vae = {
        "preprocessing": {"stft": {"hop_length": a.get("mel_hop_length", 160), "causal": a.get("is_causal", True)}},
        "model": {"params": {"sampling_rate": a.get("sample_rate", 16000), "ddconfig": {
            "ch": a["base_channels"], "out_ch": a.get("output_channels", 2), "ch_mult": a["ch_mult"],
            "num_res_blocks": a["num_res_blocks"], "in_channels": a.get("in_channels", 2),
            "resolution": a.get("resolution", 256), "z_channels": a["latent_channels"],
            "norm_type": a.get("norm_type", "pixel"), "causality_axis": a.get("causality_axis", "height"),
            "dropout": a.get("dropout", 0.0), "mid_block_add_attention": a.get("mid_block_add_attention", False),
            "mel_bins": a.get("mel_bins", 64), "double_z": a.get("double_z", True),
            "attn_resolutions": a.get("attn_resolutions") or [],
        }}},
    }  # fmt: skip
    vocoder = {
        "upsample_initial_channel": w["hidden_channels"], "upsample_rates": w["upsample_factors"],
        "upsample_kernel_sizes": w["upsample_kernel_sizes"], "resblock_kernel_sizes": w["resnet_kernel_sizes"],
        "resblock_dilation_sizes": w["resnet_dilations"], "stereo": w.get("out_channels", 2) == 2, "resblock": "1",
    }  # fmt: skip
    if "bwe_hidden_channels" in w:  # 2.3 on: ltx-core nests the main vocoder's config beside the BWE's
        dilations = w.get("bwe_resnet_dilations", [[1, 3, 5]] * 3)
        # 2.3 headers' final-layer keys (ltx-core's defaults: tanh, a bias); diffusers: final_act_fn, final_bias
        main_final = {"use_tanh_at_final": w.get("final_act_fn") == "tanh",
                      "use_bias_at_final": w.get("final_bias", False)}  # fmt: skip
        bwe_final = {"use_tanh_at_final": w.get("bwe_final_act_fn") == "tanh",
                     "use_bias_at_final": w.get("bwe_final_bias", False), "apply_final_activation": False}  # fmt: skip
        vocoder = {"vocoder": vocoder | {"resblock": "AMP1", "activation": "snakebeta"} | main_final, "bwe": bwe_final | {
            "upsample_initial_channel": w["bwe_hidden_channels"], "upsample_rates": w["bwe_upsample_factors"],
            "upsample_kernel_sizes": w["bwe_upsample_kernel_sizes"],
            "resblock_kernel_sizes": w.get("bwe_resnet_kernel_sizes", [3, 7, 11]), "resblock_dilation_sizes": dilations,
            "stereo": True, "resblock": "AMP1", "activation": "snakebeta",
            "input_sampling_rate": w.get("input_sampling_rate", 16000), "output_sampling_rate": w["output_sampling_rate"],
            "hop_length": w.get("hop_length", 80), "n_fft": w.get("filter_length", 512),
            "win_size": w.get("window_length", 512), "num_mels": w.get("num_mel_channels", 64),
        }}  # fmt: skip
    return {"transformer": transformer, "vae": vae, "audio_vae": audio_vae, "vocoder": vocoder}


def write_single_file(
    folder,
    path,
    fp8: bool = False,
    scales_of_one: bool = False,
    metadata: dict | None = None,
    comfy: bool = False,
    model_version: str | None = None,
):
    """A diffusers LTX-2 folder's five components as ONE Lightricks-layout .safetensors with ltx-core `config`
    metadata. `fp8`: transformer-block Linear weights float8_e4m3fn with a float32 per-tensor `weight_scale`
    (amax / 448: about 1e-4 here, far from 1); `scales_of_one` writes every scale as 1 instead (a file whose
    scales a loader ignores would render like this); `comfy`: ComfyUI's fp8_scaled names instead (`scale_weight`,
    `scale_input`, a `scaled_fp8` marker); `model_version`: the header's top-level key (e.g. "2.5.0")."""
    import json

    import torch
    from safetensors.torch import load_file, save_file

    tensors = {}
    for component, namer in NAMERS.items():
        for file in sorted((folder / component).glob("*.safetensors")):
            for key, value in load_file(file).items():
                tensors |= single_file_tensors(component, namer(key), value, fp8, scales_of_one, comfy)
    tensors |= vae_extras(tensors["vae.per_channel_statistics.mean-of-means"].shape)
    if fp8 and comfy:
        tensors["scaled_fp8"] = torch.empty(0, dtype=torch.float8_e4m3fn)
    meta = {"config": json.dumps(ltx_core_config(folder))} if metadata is None else metadata
    if model_version is not None:
        meta = meta | {"model_version": model_version}
    save_file(tensors, str(path), metadata=meta)
    return path


def single_file_tensors(
    component: str, name: str, value, fp8: bool = False, scales_of_one: bool = False, comfy: bool = False
) -> dict:
    """One tensor of `component` under its single-file `name`, as write_single_file stores it (see there for the
    flags). Device- and meta-agnostic: the result's dtypes and shapes plan a file before any weight exists."""
    import torch

    is_block_linear = ".transformer_blocks." in name and name.endswith(".weight") and value.dim() == 2
    if not (fp8 and component == "transformer" and is_block_linear):
        return {name: value.contiguous()}
    scale = value.float().abs().amax().clamp(min=1e-12) / 448.0
    tensors = {name: (value.float() / scale).clamp(-448, 448).to(torch.float8_e4m3fn)}
    stored = torch.ones(()) if scales_of_one else scale.reshape(())
    if comfy:
        stem = name.removesuffix(".weight")
        tensors[stem + ".scale_weight"], tensors[stem + ".scale_input"] = stored, torch.ones(())
    else:
        tensors[name + "_scale"] = stored
    return tensors


def vae_extras(width) -> dict:
    """ltx-core's two VAE statistics diffusers drops (VAE_EXTRAS), for statistics of `width` (a shape)."""
    import torch

    return {VAE_EXTRAS[0]: torch.arange(width[0], dtype=torch.float32), VAE_EXTRAS[1]: torch.ones(width)}


# ---- ComfyUI's Gemma single file ---------------------------------------------------------------------------------

GEMMA_TEXT = [
    "a woman talks to the camera in a bright studio",
    "a cat meows at the door",
    "soft light, natural head movement",
]


def train_spiece(path) -> bytes:
    """A small SentencePiece model with Gemma's special pieces (pad 0, eos 1, bos 2, unk 3, no dummy prefix)."""
    import sentencepiece as spm

    corpus = path.parent / "corpus.txt"
    corpus.write_text("\n".join(GEMMA_TEXT * 40))
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(path.with_suffix("")), vocab_size=96, model_type="bpe",
        character_coverage=1.0, pad_id=0, eos_id=1, bos_id=2, unk_id=3, pad_piece="<pad>", eos_piece="<eos>",
        bos_piece="<bos>", unk_piece="<unk>", add_dummy_prefix=False, byte_fallback=False, minloglevel=2,
    )  # fmt: skip
    return path.with_suffix(".model").read_bytes()


def write_comfy_gemma(folder, path, spiece: bytes | None, fp8: bool = False, scales_of_one: bool = False):
    """The tiny model's Gemma as ComfyUI stores Gemma 3 12B: `model.*` names, vision tower beside, the tokenizer
    as a uint8 `spiece_model` tensor; `fp8`: projection weights float8 with `scale_weight` and a `scaled_fp8` marker."""
    from safetensors.torch import load_file, save_file

    tensors = {}
    for file in sorted((folder / "text_encoder").glob("*.safetensors")):
        for key, value in load_file(file).items():
            tensors |= comfy_gemma_tensors(key.removeprefix("language_model."), value, fp8, scales_of_one)
    tensors |= comfy_gemma_extras(spiece, fp8)
    save_file(tensors, str(path))
    return path


def comfy_gemma_tensors(name: str, value, fp8: bool = False, scales_of_one: bool = False) -> dict:
    """One Gemma tensor under its ComfyUI `name` as write_comfy_gemma stores it (device- and meta-agnostic)."""
    import torch

    if not (fp8 and name.startswith("model.layers.") and name.endswith("_proj.weight")):
        return {name: value.contiguous()}
    scale = value.float().abs().amax().clamp(min=1e-12) / 448.0
    return {
        name: (value.float() / scale).clamp(-448, 448).to(torch.float8_e4m3fn),
        name.removesuffix(".weight") + ".scale_weight": torch.ones(()) if scales_of_one else scale.reshape(()),
    }


def comfy_gemma_extras(spiece: bytes | None, fp8: bool) -> dict:
    """The `scaled_fp8` marker (fp8) and the tokenizer as a uint8 `spiece_model` tensor (unless None)."""
    import numpy as np
    import torch

    tensors = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)} if fp8 else {}
    if spiece is not None:
        tensors["spiece_model"] = torch.from_numpy(np.frombuffer(spiece, dtype=np.uint8).copy())
    return tensors


def upscaler_metadata(config: dict) -> dict[str, str]:
    """The `config` metadata Lightricks' upscaler file carries: the fields of its diffusers `config`."""
    import json

    keys = ("in_channels", "mid_channels", "num_blocks_per_stage", "dims", "spatial_upsample", "temporal_upsample")
    return {"config": json.dumps({k: config[k] for k in keys})}


def _comfy_gemma4_name(key: str) -> str:
    """ltx-core gemma_assets.py `_flatten_gemma4_unified_keys_for_comfy`: HF gemma4_unified names -> ComfyUI's."""
    for hf, comfy in (
        ("model.language_model.", "model."),
        ("model.vision_embedder.", "vision_model."),
        ("model.embed_vision.", "multi_modal_projector."),
        ("model.embed_audio.", "audio_projector."),
    ):
        if key.startswith(hf):
            return comfy + key.removeprefix(hf)
    return key  # fmt: skip


def write_packed_gemma4(folder, path, comfy_flat: bool = True):
    """The tiny 2.5 model's Gemma 4 as ltx-core's `build_text_encoder_tensors_from_gemma_root` packs a TE file:
    weights (ComfyUI's flat names unless `comfy_flat` is False) plus LTX's text projection, tokenizer.json as a
    uint8 `tokenizer_json` tensor, the HF side files as `hf_asset__<name>` tensors, the config as `gemma_config`."""
    import json

    import numpy as np
    import torch
    from safetensors.torch import load_file, save_file

    def as_tensor(data: bytes) -> torch.Tensor:
        return torch.from_numpy(np.frombuffer(data, dtype=np.uint8).copy())

    tensors = {}
    for file in sorted((folder / "text_encoder").glob("*.safetensors")):
        for key, value in load_file(file).items():
            tensors[_comfy_gemma4_name(key) if comfy_flat else key] = value.contiguous()
    hidden = json.loads((folder / "text_encoder" / "config.json").read_text())["text_config"]["hidden_size"]
    tensors["text_embedding_projection.video_aggregate_embed.weight"] = torch.randn(8, hidden * 3)  # unused here
    tensors["tokenizer_json"] = as_tensor((folder / "tokenizer" / "tokenizer.json").read_bytes())
    tensors["hf_asset__tokenizer_config.json"] = as_tensor(
        (folder / "tokenizer" / "tokenizer_config.json").read_bytes()
    )
    tensors["hf_asset__processor_config.json"] = as_tensor(b'{"processor_class": "Gemma4UnifiedProcessor"}')
    config = (folder / "text_encoder" / "config.json").read_text()
    save_file(tensors, str(path), metadata={"format": "pt", "gemma_config": config})
    return path
