"""Lightricks' own implementation as the oracle: ltx-core (PyPI 1.0.0, installed by the README's test command
without its dependencies) builds the tiny model from the SAME single file ltx2 loads (Lightricks' layout, ltx-core
`config` metadata; tests/single_file_names.py), and each component must agree with ltx2's in float32 within
TOLERANCE (relative L2). Calibration: one swapped key, or FP8 scales ignored, fail it.

ltx-core 1.0.0 predates the audio<->video cross-attention rule ltx2 follows (engine.models.av_timesteps: Lightricks/LTX-2
203d484, 2026-05-28; 1.0.0 has 822ce3c's, 2026-03-04: the other stream's sigma for scale/shift and gate). Patterns
where both rules agree (every token at the stream's sigma, both streams at the same sigma) are compared with 1.0.0 as
shipped; the others with 1.0.0's preprocessor given 203d484's `_prepare_cross_attention_timestep` (own per-token
timesteps for scale/shift; the gate unchanged), which is that revision's rule by its definition.

Left out: the audio encoder's log-mel front end (ltx-core's AudioProcessor needs torchaudio, which has no build for
torch 2.13; `ltx_core.model.audio_vae.ops` imports it at module level, so a bare stand-in module is in sys.modules
only while that package is imported). The audio encoder is compared from the same mel spectrogram instead.
"""

from __future__ import annotations

import sys
import types
from dataclasses import replace
from pathlib import Path

# transformers first: it probes for torchaudio, and must not find the stand-in below
import ltx_core.text_encoders.gemma  # noqa: F401
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from single_file_names import write_single_file

from ltx2cli.engine import latents
from ltx2cli.engine.guidance import GuidedDenoiser, Prompt
from ltx2cli.engine.models.loading import load_models
from ltx2cli.engine.sampler import State, Stream
from ltx2cli.jobs.guidance import Scales
from ltx2cli.jobs.job import LoraRef
from ltx2cli.synthetic import tiny_configs as tc
from ltx2cli.weights.source import ModelSource

sys.modules["torchaudio"] = types.ModuleType("torchaudio")  # stand-in: see the module docstring
try:
    from ltx_core.model import audio_vae as core_audio
finally:
    del sys.modules["torchaudio"]
from ltx_core.components.patchifiers import AudioPatchifier, VideoLatentPatchifier  # noqa: E402
from ltx_core.guidance.perturbations import BatchedPerturbationConfig  # noqa: E402
from ltx_core.loader import LTXV_LORA_COMFY_RENAMING_MAP, fuse_loras  # noqa: E402
from ltx_core.loader.single_gpu_model_builder import SingleGPUModelBuilder  # noqa: E402
from ltx_core.model import video_vae as core_vae  # noqa: E402
from ltx_core.model.transformer import model_configurator as core_transformer  # noqa: E402
from ltx_core.model.transformer.modality import Modality  # noqa: E402
from ltx_core.model.transformer.transformer_args import MultiModalTransformerArgsPreprocessor  # noqa: E402
from ltx_core.text_encoders.gemma.embeddings_connector import Embeddings1DConnector  # noqa: E402
from ltx_core.text_encoders.gemma.embeddings_processor import EmbeddingsProcessor  # noqa: E402
from ltx_core.text_encoders.gemma.feature_extractor import FeatureExtractorV1, FeatureExtractorV2  # noqa: E402
from ltx_core.tools import AudioLatentTools, VideoLatentTools  # noqa: E402
from ltx_core.types import AudioLatentShape, VideoLatentShape  # noqa: E402

TOLERANCE = 1e-4  # relative L2, float32 on both sides
CPU = torch.device("cpu")
FPS, SIGMA = 24.0, 0.8
FRAMES, ROWS, COLS, AUDIO_LATENTS = 2, 2, 3, 5  # latent grid: 9 frames of 64x96 pixels
FRAME_TOKENS = ROWS * COLS


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


# ---- both sides from one file ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_dir(_model_cache):
    from ltx2cli.synthetic.tiny import tiny_model_dir

    return tiny_model_dir()


@pytest.fixture(scope="module")
def single_file(tiny_dir, tmp_path_factory) -> Path:
    return write_single_file(tiny_dir, tmp_path_factory.mktemp("oracle") / "ltx-2-tiny.safetensors")


def _ours(path: Path, tiny_dir: Path, **kw):
    return load_models(ModelSource(model=str(path), text_encoder=str(tiny_dir), **kw), device="cpu")


@pytest.fixture(scope="module")
def ours(single_file, tiny_dir):
    return _ours(single_file, tiny_dir)


def core(configurator, path: Path, sd_ops=None, loras=()) -> torch.nn.Module:
    """An ltx-core component as ltx-pipelines builds it: its configurator from the file's `config` metadata, its
    key operations, LoRAs fused into the weights by ltx-core's own fuser."""
    builder = SingleGPUModelBuilder(configurator, str(path), sd_ops)
    for lora_path, strength in loras:
        builder = builder.lora(str(lora_path), strength, LTXV_LORA_COMFY_RENAMING_MAP)
    model = builder.build(device=CPU, dtype=torch.float32).eval()
    loaded = builder.load_sd([str(path)], builder.registry, CPU, sd_ops).sd
    unloaded = sorted(set(model.state_dict()) - set(loaded))
    assert not unloaded, f"ltx-core found no tensor in the file for {unloaded[:5]}"
    return model


# ---- the transformer ----------------------------------------------------------------------------------------


def _prepare_2026_05(original):
    """Lightricks/LTX-2 203d484's rule on 1.0.0's preprocessor: the a2v/v2a scale/shift AdaLN from the stream's own
    per-token timesteps (x timestep_scale_multiplier); the gate (the other stream's sigma x av_ca multiplier) as
    1.0.0 already computes it."""

    def prepare(self, modality, cross_modality=None):
        args = original(self, modality, cross_modality)
        if cross_modality is None:
            return args
        multiplier = self.simple_preprocessor.timestep_scale_multiplier
        scale_shift, _ = self.cross_scale_shift_adaln(
            (modality.timesteps * multiplier).flatten(), hidden_dtype=modality.latent.dtype
        )
        return replace(args, cross_scale_shift_timestep=scale_shift.view(args.x.shape[0], -1, scale_shift.shape[-1]))

    return prepare


@pytest.fixture
def rule_2026_05(monkeypatch):
    original = MultiModalTransformerArgsPreprocessor.prepare
    monkeypatch.setattr(MultiModalTransformerArgsPreprocessor, "prepare", _prepare_2026_05(original))


def _positions() -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE positions as ltx-pipelines makes them (ltx-core's latent tools): pixel bounds, time in seconds."""
    video = VideoLatentTools(VideoLatentPatchifier(1), VideoLatentShape(1, tc.VIDEO_LATENT_CHANNELS, FRAMES, ROWS, COLS),
                             FPS).create_initial_state(CPU, torch.float32)  # fmt: skip
    audio = AudioLatentTools(AudioPatchifier(1), AudioLatentShape(1, 2, AUDIO_LATENTS, 16)).create_initial_state(
        CPU, torch.float32
    )
    return video.positions, audio.positions


def test_rope_positions_are_ltx_cores(ours):
    grid = latents.Grid(8 * (FRAMES - 1) + 1, 32 * ROWS, 32 * COLS, FPS, AUDIO_LATENTS)
    video, audio = _positions()
    torch.testing.assert_close(latents.video_coords(ours, grid), video, rtol=0, atol=1e-6)
    torch.testing.assert_close(latents.audio_coords(ours, grid), audio, rtol=0, atol=1e-6)


# (video mask, audio mask) per mode's conditioning; "guide frames" appends one frame's tokens at strength 0.8
FIRST_FRAME = torch.cat([torch.zeros(FRAME_TOKENS), torch.ones((FRAMES - 1) * FRAME_TOKENS)])[None]
ALL_VIDEO, ALL_AUDIO = torch.ones(1, FRAMES * FRAME_TOKENS), torch.ones(1, AUDIO_LATENTS)
GUIDE = torch.cat([ALL_VIDEO, torch.full((1, FRAME_TOKENS), 1 - 0.8)], dim=1)
PATTERNS = {
    "text-to-video": (ALL_VIDEO, ALL_AUDIO),  # every token at sigma: the 03-04 and 05-28 rules agree
    "first frame (image-to-video, audio-gen)": (FIRST_FRAME, ALL_AUDIO),
    "guide frames (keyframes)": (GUIDE, ALL_AUDIO),
    "frozen audio (lip-sync)": (FIRST_FRAME, ALL_AUDIO * 0),
    "both frozen": (ALL_VIDEO * 0, ALL_AUDIO * 0),
}


def _state(video_mask: torch.Tensor, audio_mask: torch.Tensor) -> State:
    g = torch.Generator().manual_seed(0)
    video_pos, audio_pos = _positions()
    if video_mask.shape[1] > video_pos.shape[2]:  # a guide frame: the first frame's space, at pixel frame 4
        guide = video_pos[:, :, :FRAME_TOKENS].clone()
        guide[:, 0] = torch.tensor([4.0, 5.0]) / FPS
        video_pos = torch.cat([video_pos, guide], dim=2)
    video = torch.randn(1, video_mask.shape[1], tc.VIDEO_LATENT_CHANNELS, generator=g)
    audio = torch.randn(1, audio_mask.shape[1], tc.AUDIO_TOKEN_CHANNELS, generator=g)
    return State(Stream(video, torch.zeros_like(video), video_mask, video_pos),
                 Stream(audio, torch.zeros_like(audio), audio_mask, audio_pos))  # fmt: skip


def _text(model) -> tuple[torch.Tensor, torch.Tensor]:
    """Connector outputs: Gemma's width where the transformer projects the caption (2.0), else each stream's own
    (2.3 on: the projections moved before the connectors)."""
    g = torch.Generator().manual_seed(1)
    projected = model.video_args_preprocessor.simple_preprocessor.caption_projection is not None
    audio_width = tc.TEXT_HIDDEN if projected else model.audio_args_preprocessor.audio_cross_attention_dim
    return torch.randn(1, 16, tc.TEXT_HIDDEN, generator=g), torch.randn(1, 16, audio_width, generator=g)


def _ltx2_velocity(models, state: State, core_model) -> tuple[torch.Tensor, torch.Tensor]:
    """ltx2's real denoiser step (masks -> timesteps and stream sigmas, the rule's hooks); the transformer's output."""
    text_video, text_audio = _text(core_model)
    out = {}
    hook = models.transformer.register_forward_hook(lambda _m, _a, o: out.__setitem__("v", o))
    try:
        GuidedDenoiser(models, Prompt(text_video, text_audio, torch.ones(1, 16)), Scales(), FPS)(
            state, torch.tensor(SIGMA)
        )
    finally:
        hook.remove()
    return out["v"][0], out["v"][1]


def _core_velocity(model, state: State) -> tuple[torch.Tensor, torch.Tensor]:
    """ltx-core's velocity model on ltx-pipelines' Modality (helpers.modality_from_latent_state: timesteps = mask x
    sigma, a frozen stream's sigma 0; no context mask after the connectors' registers)."""
    text_video, text_audio = _text(model)

    def modality(stream: Stream, context: torch.Tensor) -> Modality:
        sigma = torch.tensor([SIGMA]) * stream.mask.amax(dim=1)
        return Modality(latent=stream.x, sigma=sigma, timesteps=stream.mask * SIGMA, positions=stream.positions,
                        context=context)  # fmt: skip

    with torch.no_grad():
        return model(modality(state.video, text_video), modality(state.audio, text_audio),
                     BatchedPerturbationConfig.empty(1))  # fmt: skip


@pytest.fixture(scope="module")
def core_transformer_model(single_file):
    return core(core_transformer.LTXModelConfigurator, single_file, core_transformer.LTXV_MODEL_COMFY_RENAMING_MAP)


def test_transformer_where_both_rules_agree_matches_ltx_core_1_0_0(ours, core_transformer_model):
    state = _state(*PATTERNS["text-to-video"])
    for a, b, stream in zip(
        _ltx2_velocity(ours, state, core_transformer_model),
        _core_velocity(core_transformer_model, state),
        "va",
        strict=True,
    ):
        diff = relative(a, b)
        print(f"transformer, text-to-video, {stream}: relative L2 {diff:.1e}")
        assert diff < TOLERANCE, (stream, diff)


@pytest.fixture(scope="module")
def tiny_dir_23(_model_cache) -> Path:
    from ltx2cli.synthetic.tiny import tiny_model_dir

    return tiny_model_dir(variant="2.3")


@pytest.fixture(scope="module")
def single_file_23(tiny_dir_23, tmp_path_factory) -> Path:
    return write_single_file(tiny_dir_23, tmp_path_factory.mktemp("oracle-23") / "ltx-2.3-tiny.safetensors")


@pytest.fixture(scope="module")
def ours_23(single_file_23, tiny_dir_23):
    return _ours(single_file_23, tiny_dir_23)


@pytest.fixture(scope="module")
def release_23(ours_23, single_file_23):
    """The tiny LTX-2.3 (gated attention, cross-attention AdaLN, prompt AdaLN) on both sides from one file."""
    return ours_23, core(core_transformer.LTXModelConfigurator, single_file_23,
                         core_transformer.LTXV_MODEL_COMFY_RENAMING_MAP)  # fmt: skip


@pytest.mark.parametrize("release", ["2.0", "2.3"])
@pytest.mark.parametrize("pattern", list(PATTERNS))
def test_transformer_per_conditioning_pattern_matches_ltx_core_with_the_2026_05_rule(
    request, rule_2026_05, pattern, release
):
    if release == "2.0":
        ours, model = request.getfixturevalue("ours"), request.getfixturevalue("core_transformer_model")
    else:
        ours, model = request.getfixturevalue("release_23")
    state = _state(*PATTERNS[pattern])
    for a, b, stream in zip(_ltx2_velocity(ours, state, model), _core_velocity(model, state), "va", strict=True):
        diff = relative(a, b)
        print(f"transformer {release}, {pattern}, {stream}: relative L2 {diff:.1e}")
        assert diff < TOLERANCE, (stream, diff)


def test_ltx_core_1_0_0s_own_rule_differs_where_a_token_is_held(ours, core_transformer_model):
    """The rule matters on exactly these patterns: 1.0.0 as shipped (03-04 rule) is off by more than TOLERANCE."""
    for pattern in ("first frame (image-to-video, audio-gen)", "frozen audio (lip-sync)"):
        state = _state(*PATTERNS[pattern])
        diff = relative(
            _ltx2_velocity(ours, state, core_transformer_model)[0], _core_velocity(core_transformer_model, state)[0]
        )
        print(f"transformer, {pattern}, video, against 1.0.0's 03-04 rule: relative L2 {diff:.1e}")
        assert diff > TOLERANCE, (pattern, diff)


# ---- text connectors, VAEs, vocoder ---------------------------------------------------------------------------


class TinyEmbeddingsProcessor:
    """ltx-core's EmbeddingsProcessorConfigurator for the tiny model: 1.0.0's reads neither the register count
    (`connector_num_learnable_registers`, fixed at 128) nor Gemma's width (fixed at Gemma 3 12B's), so both come from
    the file here; everything else is ltx-core's modules and key operations, and its choice of feature extractor:
    V1 (one projection, in the transformer's caption projection's place) or, where the header's
    `_V2_EXPECTED_CONFIG` keys say so (2.3), V2 (per-token RMS norm, one projection per stream, each to its
    transformer stream's width)."""

    @classmethod
    def from_config(cls, config: dict) -> EmbeddingsProcessor:
        from ltx_core.text_encoders.gemma.encoders import encoder_configurator as ec

        t = config["transformer"]

        def connector(prefix: str) -> Embeddings1DConnector:
            return Embeddings1DConnector(
                attention_head_dim=t.get(f"{prefix}connector_attention_head_dim", t["connector_attention_head_dim"]),
                num_attention_heads=t.get(f"{prefix}connector_num_attention_heads", t["connector_num_attention_heads"]),
                num_layers=t["connector_num_layers"], positional_embedding_max_pos=t["connector_positional_embedding_max_pos"],
                num_learnable_registers=t["connector_num_learnable_registers"], rope_type=core_transformer.LTXRopeType(t["rope_type"]),
                double_precision_rope=t["frequencies_precision"] == "float64",
                apply_gated_attention=t.get("connector_apply_gated_attention", False),
            )  # fmt: skip

        width = t["caption_channels"]
        flat = width * 3  # the tiny Gemma's 3 stacked hidden states
        if not t.keys() & ec._V2_EXPECTED_CONFIG.keys():
            extractor = FeatureExtractorV1(torch.nn.Linear(flat, width, bias=False), is_av=True)
        else:
            assert {k: t.get(k) for k in ec._V2_EXPECTED_CONFIG} == ec._V2_EXPECTED_CONFIG, "not ltx-core's V2"
            video = t["num_attention_heads"] * t["attention_head_dim"]
            audio = t["audio_num_attention_heads"] * t["audio_attention_head_dim"]
            extractor = FeatureExtractorV2(video_aggregate_embed=torch.nn.Linear(flat, video, bias=True),
                                           embedding_dim=width, audio_aggregate_embed=torch.nn.Linear(flat, audio, bias=True))  # fmt: skip
        return EmbeddingsProcessor(video_connector=connector(""), audio_connector=connector("audio_"),
                                   feature_extractor=extractor)  # fmt: skip


@pytest.mark.parametrize("release", ["2.0", "2.3"])
def test_text_connectors_match_ltx_core(request, release):
    """2.0: one projection (V1); 2.3: `video_aggregate_embed` / `audio_aggregate_embed` (V2), gated connectors.
    Measured (float32, CPU): 0.0 for both streams of both releases (bit-identical)."""
    from ltx_core.text_encoders.gemma.encoders.encoder_configurator import EMBEDDINGS_PROCESSOR_KEY_OPS

    suffix = "" if release == "2.0" else "_23"
    ours, path = request.getfixturevalue("ours" + suffix), request.getfixturevalue("single_file" + suffix)
    theirs = core(TinyEmbeddingsProcessor, path, EMBEDDINGS_PROCESSOR_KEY_OPS)
    assert isinstance(theirs.feature_extractor, FeatureExtractorV1 if release == "2.0" else FeatureExtractorV2)
    g = torch.Generator().manual_seed(2)
    layers = tuple(torch.randn(1, 16, tc.TEXT_HIDDEN, generator=g) for _ in range(3))
    mask = torch.cat([torch.zeros(1, 5), torch.ones(1, 11)], dim=1).long()  # Gemma pads on the left
    video, audio, conn_mask = ours.connectors(torch.stack(layers, dim=-1).flatten(2), mask, padding_side="left")
    with torch.no_grad():
        ref = theirs.process_hidden_states(layers, mask, padding_side="left")
    for name, a, b in (("video", video, ref.video_encoding), ("audio", audio, ref.audio_encoding)):
        diff = relative(a, b)
        print(f"connectors {release}, {name}: relative L2 {diff:.1e}")
        assert diff < TOLERANCE, (name, diff)
    assert torch.equal(conn_mask.bool(), ref.attention_mask.bool())


def _frames() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (9, 64, 96, 3), dtype=np.uint8)


def _video_vae_diffs(ours, path: Path) -> dict[str, float]:
    """Relative L2 of ltx2's video VAE encode and decode against ltx-core's, built from the same file."""
    encoder = core(core_vae.VideoEncoderConfigurator, path, core_vae.VAE_ENCODER_COMFY_KEYS_FILTER)
    decoder = core(core_vae.VideoDecoderConfigurator, path, core_vae.VAE_DECODER_COMFY_KEYS_FILTER)
    patchifier = VideoLatentPatchifier(1)
    frames = _frames()
    tokens = latents.encode_frames(ours, frames)
    x = torch.from_numpy(frames).float().permute(3, 0, 1, 2)[None] / 127.5 - 1.0
    with torch.no_grad():
        ref_tokens = patchifier.patchify(encoder(x))
        video = latents.decode_video(ours, ref_tokens, latents.Grid(9, 64, 96, FPS, AUDIO_LATENTS))
        shape = VideoLatentShape(1, tc.VIDEO_LATENT_CHANNELS, FRAMES, ROWS, COLS)
        ref = (decoder(patchifier.unpatchify(ref_tokens, shape))[0] * 0.5 + 0.5).clamp(0, 1).permute(1, 2, 3, 0)
    return {"encode": relative(tokens, ref_tokens), "decode": relative(video, ref)}


def test_video_vae_encode_and_decode_match_ltx_core(ours, single_file):
    for name, diff in _video_vae_diffs(ours, single_file).items():
        print(f"video VAE {name}: relative L2 {diff:.1e}")
        assert diff < TOLERANCE, (name, diff)


# LTX-2.3's decoder design, scaled down: four up blocks run as (spatiotemporal x2, spatiotemporal x1, temporal x2,
# spatial x2), none residual, zero padding (configs/reference/LTX-2.3/vae). The tiny 2.3 keeps LTX-2's decoder.
VAE_23 = {
    "decoder_block_out_channels": [8, 16, 16, 32], "decoder_layers_per_block": [1, 1, 1, 1, 1],
    "decoder_inject_noise": [False] * 5, "decoder_spatio_temporal_scaling": [True] * 4,
    "upsample_type": ["spatiotemporal", "spatiotemporal", "temporal", "spatial"], "upsample_factor": [2, 2, 1, 2],
    "upsample_residual": [False] * 4, "decoder_spatial_padding_mode": "zeros", "encoder_spatial_padding_mode": "zeros",
}  # fmt: skip


@pytest.fixture(scope="module")
def vae_23_file(tiny_dir_23, tmp_path_factory) -> tuple[Path, Path]:
    """The tiny 2.3 with a random video VAE of 2.3's decoder design (written as ltx-core names it: up_blocks.7 / .8,
    what weights.layout.VAE_RENAMES_23 maps back), as a folder and its single file."""
    import json

    from diffusers import AutoencoderKLLTX2Video

    root = tmp_path_factory.mktemp("oracle-23-vae")
    folder = root / "tiny-2.3-vae-2.3"
    folder.mkdir()
    for part in tiny_dir_23.iterdir():
        if part.name != "vae":
            (folder / part.name).symlink_to(part)
    config = json.loads((tiny_dir_23 / "vae" / "config.json").read_text()) | VAE_23
    torch.manual_seed(5)
    vae = AutoencoderKLLTX2Video.from_config(config)
    g = torch.Generator().manual_seed(6)
    vae.latents_mean.copy_(torch.randn(vae.latents_mean.shape, generator=g) * 0.1)
    vae.latents_std.copy_(torch.rand(vae.latents_std.shape, generator=g) + 0.5)
    vae.save_pretrained(folder / "vae")
    return folder, write_single_file(folder, root / "ltx-2.3-tiny-vae23.safetensors")


def test_video_vae_of_2_3s_decoder_design_matches_ltx_core(vae_23_file):
    """2.3's four-block decoder (ltx-core names its last upsampler and res blocks up_blocks.7 / .8): ltx2 reading
    the 2.3 header (one `spatial_padding_mode`, its `decoder_blocks` order) against ltx-core building it.
    Measured (float32, CPU): encode 0.0, decode 0.0 (bit-identical); without the header's `spatial_padding_mode`
    (ltx-core's decoder then pads by reflection) decode is 3.6e-1 off, with `decoder_blocks` in diffusers' order
    ltx-core refuses the weights' shapes."""
    folder, path = vae_23_file
    ours = _ours(path, folder)
    assert len(ours.vae.decoder.up_blocks) == 4
    for name, diff in _video_vae_diffs(ours, path).items():
        print(f"video VAE 2.3 design {name}: relative L2 {diff:.1e}")
        assert diff < TOLERANCE, (name, diff)


def test_audio_vae_and_vocoder_match_ltx_core(ours, single_file):
    """Decode: tokens -> mel (audio VAE) -> waveform (vocoder), each stage compared; encode from one mel
    spectrogram (the log-mel front end is left out: see the module docstring)."""
    encoder = core(core_audio.AudioEncoderConfigurator, single_file, core_audio.AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER)
    decoder = core(core_audio.AudioDecoderConfigurator, single_file, core_audio.AUDIO_VAE_DECODER_COMFY_KEYS_FILTER)
    vocoder = core(core_audio.VocoderConfigurator, single_file, core_audio.VOCODER_COMFY_KEYS_FILTER)
    patchifier = AudioPatchifier(1)
    mel = torch.randn(1, 2, 4 * AUDIO_LATENTS, 64, generator=torch.Generator().manual_seed(4))
    audio_vae = ours.audio_vae
    with torch.no_grad():
        ours_latent = audio_vae.encode(mel).latent_dist.mode()
        from diffusers import LTX2ImageToVideoPipeline as P

        tokens = P._normalize_audio_latents(P._pack_audio_latents(ours_latent), audio_vae.latents_mean,
                                            audio_vae.latents_std)  # fmt: skip
        ref_tokens = patchifier.patchify(encoder(mel))
        checks = {"audio VAE encode": (tokens, ref_tokens)}
        shape = AudioLatentShape(1, 2, AUDIO_LATENTS, 16)
        ref_mel = decoder(patchifier.unpatchify(ref_tokens, shape))
        latent = P._unpack_audio_latents(P._denormalize_audio_latents(ref_tokens, audio_vae.latents_mean,
                                         audio_vae.latents_std), AUDIO_LATENTS, num_mel_bins=16)  # fmt: skip
        checks["audio VAE decode"] = (audio_vae.decode(latent, return_dict=False)[0], ref_mel)
        checks["vocoder"] = (ours.vocoder(ref_mel), vocoder(ref_mel))
        wave, rate = latents.decode_audio(ours, ref_tokens)
        checks["audio decode, end to end"] = (wave, core_audio.decode_audio(ref_tokens_latent := patchifier.unpatchify(
            ref_tokens, shape), decoder, vocoder).waveform)  # fmt: skip
        assert rate == vocoder.output_sampling_rate and ref_tokens_latent.shape[2] == AUDIO_LATENTS
    for name, (a, b) in checks.items():
        diff = relative(a, b)
        print(f"{name}: relative L2 {diff:.1e}")
        assert diff < TOLERANCE, (name, diff)


def _bwe_diff(ours, path: Path, loudness: float) -> float:
    """Relative L2 of ltx2's 2.3 vocoder (16 kHz vocoder, then the bandwidth extension to 48 kHz) against ltx-core's
    VocoderWithBWE built from the header's nested `vocoder` / `bwe` configs, on a mel scaled by `loudness`."""
    vocoder = core(core_audio.VocoderConfigurator, path, core_audio.VOCODER_COMFY_KEYS_FILTER)
    assert isinstance(vocoder, core_audio.VocoderWithBWE) and vocoder.output_sampling_rate == 48000
    mel = loudness * torch.randn(1, 2, 4 * AUDIO_LATENTS, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        a, b = ours.vocoder(mel), vocoder(mel)
    assert a.shape == b.shape, (a.shape, b.shape)
    return relative(a, b)


def test_bwe_vocoder_of_2_3_matches_ltx_core(ours_23, single_file_23):
    """Measured (float32, CPU): 0.0 (bit-identical). On this mel the 16 kHz stage stays within +-1 (peak 0.15),
    where ltx-core's clamp of that stage (next test) does nothing."""
    diff = _bwe_diff(ours_23, single_file_23, 1.0)
    print(f"vocoder 2.3 (BWE): relative L2 {diff:.1e}")
    assert diff < TOLERANCE, diff


def test_bwe_vocoder_of_2_3_matches_ltx_core_where_the_16khz_stage_exceeds_one(ours_23, single_file_23):
    """2.3 headers say `use_tanh_at_final: false` for the 16 kHz vocoder, which ltx-core 1.0.0 builds with
    apply_final_activation on, i.e. torch.clamp(x, -1, 1) before the mel of the BWE stage; diffusers' published 2.3
    config (`final_act_fn: null`) applies nothing there. ltx2 follows ltx-core (weights.configs._final_layer from
    the header; model_loading.clamp_first_vocoder_stage for diffusers folders). Before that: the mel x100 drove the
    stage to a peak of 4.7 and the outputs apart by 2.0e-1 relative L2 (x10000: 6.3e-1)."""
    diff = _bwe_diff(ours_23, single_file_23, 100.0)
    print(f"vocoder 2.3 (BWE), 16 kHz stage beyond +-1: relative L2 {diff:.1e}")
    assert diff < TOLERANCE, diff


# ---- a Lightricks-format LoRA, fused by ltx-core ----------------------------------------------------------------


@pytest.fixture
def float32_fusion(monkeypatch):
    """ltx-core 1.0.0 fuses LoRAs into bf16 or FP8 weights only (`_fuse_deltas` raises on float32); its bf16 path
    (weight + B @ A x strength, then cast) is dtype-agnostic, so float32 weights take it here."""
    original = fuse_loras._fuse_deltas

    def fuse(deltas, weight, key, sd, target_dtype, *args):
        if deltas is not None and weight.dtype == torch.float32:
            return fuse_loras._fuse_delta_with_bfloat16(deltas, weight, key, target_dtype)
        return original(deltas, weight, key, sd, target_dtype, *args)

    monkeypatch.setattr(fuse_loras, "_fuse_deltas", fuse)


def test_a_lightricks_lora_matches_ltx_core_fusing_it(single_file, tiny_dir, tmp_path, rule_2026_05, float32_fusion):
    """The tiny model's distilled LoRA (Lightricks' names: `diffusion_model.*.lora_A/B`) at strength 0.7: peft's
    adapter in ltx2 against ltx-core's fuser (LTXV_LORA_COMFY_RENAMING_MAP), and far from no LoRA. The file's bf16
    factors are stored as float32 (the same values): ltx-core multiplies B @ A in the LoRA's own dtype, which for
    bf16 factors rounds the delta (measured 1.3e-3 on this output) where peft computes in the model's float32."""
    bf16 = tiny_dir / "loras" / "ltx-2-19b-distilled-lora-384.safetensors"
    lora = tmp_path / "distilled-f32.safetensors"
    save_file({k: v.float() for k, v in load_file(str(bf16)).items()}, str(lora))
    models = _ours(single_file, tiny_dir)
    models.set_loras([LoraRef(path=str(lora), strength=0.7)])
    fused = core(core_transformer.LTXModelConfigurator, single_file, core_transformer.LTXV_MODEL_COMFY_RENAMING_MAP,
                 loras=[(lora, 0.7)])  # fmt: skip
    plain = core(core_transformer.LTXModelConfigurator, single_file, core_transformer.LTXV_MODEL_COMFY_RENAMING_MAP)
    state = _state(*PATTERNS["frozen audio (lip-sync)"])
    ours_v, ref_v, plain_v = (
        _ltx2_velocity(models, state, plain)[0],
        _core_velocity(fused, state)[0],
        _core_velocity(plain, state)[0],
    )
    diff, lora_effect = relative(ours_v, ref_v), relative(plain_v, ref_v)
    print(f"LoRA fused: relative L2 {diff:.1e} (the LoRA itself moves the output by {lora_effect:.1e})")
    assert diff < TOLERANCE < lora_effect, (diff, lora_effect)


# ---- calibration: what TOLERANCE catches ------------------------------------------------------------------------


def _rewrite(src: Path, dst: Path, edit) -> Path:
    with safe_open(str(src), "pt") as f:
        metadata = f.metadata()
    tensors = load_file(str(src))
    edit(tensors)
    save_file(tensors, str(dst), metadata=metadata)
    return dst


def test_one_swapped_key_fails_the_tolerance(ours, single_file, tmp_path):
    """to_q and to_k of one attention swapped in the file ltx-core reads: the same shapes, another model."""
    stem = "model.diffusion_model.transformer_blocks.1.audio_attn1."

    def swap(t):
        t[stem + "to_q.weight"], t[stem + "to_k.weight"] = t[stem + "to_k.weight"], t[stem + "to_q.weight"]

    swapped = _rewrite(single_file, tmp_path / "swapped.safetensors", swap)
    model = core(core_transformer.LTXModelConfigurator, swapped, core_transformer.LTXV_MODEL_COMFY_RENAMING_MAP)
    state = _state(*PATTERNS["text-to-video"])
    diff = relative(_ltx2_velocity(ours, state, model)[1], _core_velocity(model, state)[1])
    print(f"calibration, audio to_q/to_k swapped in block 1: relative L2 {diff:.1e}")
    assert diff > TOLERANCE, diff


def _dequantised(fp8_file: Path, dst: Path) -> Path:
    """What an FP8 file means, for ltx-core 1.0.0 (whose CPU loader has no per-tensor scales): weight x scale."""

    def dequantise(t):
        for name in [n for n in t if n.endswith(".weight_scale")]:
            weight = name.removesuffix("_scale")
            t[weight] = t[weight].float() * t.pop(name).float()

    return _rewrite(fp8_file, dst, dequantise)


def test_fp8_scales_honoured_match_and_ignored_fail_the_tolerance(single_file, tiny_dir, tmp_path):
    fp8 = write_single_file(tiny_dir, tmp_path / "fp8.safetensors", fp8=True)
    ones = write_single_file(tiny_dir, tmp_path / "fp8-ones.safetensors", fp8=True, scales_of_one=True)
    model = core(core_transformer.LTXModelConfigurator, _dequantised(fp8, tmp_path / "deq.safetensors"),
                 core_transformer.LTXV_MODEL_COMFY_RENAMING_MAP)  # fmt: skip
    state = _state(*PATTERNS["text-to-video"])
    ref = _core_velocity(model, state)[0]
    honoured = relative(_ltx2_velocity(_ours(fp8, tiny_dir, precision="bf16"), state, model)[0], ref)
    ignored = relative(_ltx2_velocity(_ours(ones, tiny_dir, precision="bf16"), state, model)[0], ref)
    print(f"FP8 (dequantised at load): scales honoured {honoured:.1e}, scales ignored {ignored:.1e}")
    assert honoured < TOLERANCE < ignored, (honoured, ignored)
