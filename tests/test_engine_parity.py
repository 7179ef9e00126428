"""Our sampler against diffusers' own LTX-2 pipelines: same tiny weights, same initial noise, same numbers.

Each test renders one job through ltx2's engine and the matching diffusers pipeline (built from the very same
loaded components) and compares latents and decoded frames/audio in float32 on CPU (max abs diff <= 1e-4).
The shared transformer carries ltx2's audio<->video cross-attention timestep rule (engine.models.av_timesteps), so both
sides run under it; tests/test_av_timesteps.py measures where the rule and diffusers' own modulation differ.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from conftest import write_manifest
from diffusers import LTX2ConditionPipeline, LTX2DFRPipeline, LTX2ImageToVideoPipeline
from media import write_audio, write_image
from PIL import Image

from ltx2cli.engine import latents as lat
from ltx2cli.engine.inputs import prepare_inputs
from ltx2cli.engine.render import Renderer
from ltx2cli.plan.resolve import plan_manifests

TOL = 1e-4
SEQ = 64  # prompt tokens (a multiple of the tiny connectors' 8 registers)
W, H, FPS = 64, 96, 24


def _spec(tmp_path: Path, job: dict):
    specs, problems = plan_manifests([write_manifest(tmp_path / "jobs.yaml", [job])])
    assert not problems, problems
    return specs[0]


def _close(ours: torch.Tensor | np.ndarray, theirs: torch.Tensor | np.ndarray, what: str) -> float:
    ours, theirs = torch.as_tensor(np.asarray(ours)), torch.as_tensor(np.asarray(theirs))
    assert ours.shape == theirs.shape, f"{what}: shape {tuple(ours.shape)} != {tuple(theirs.shape)}"
    diff = (ours.float() - theirs.float()).abs().max().item()
    print(f"{what}: max abs diff {diff:.3g} (values up to {theirs.float().abs().max().item():.3g})")
    assert diff <= TOL, f"{what}: max abs diff {diff:.3g} > {TOL}"
    return diff


def _last_latents(store: dict):
    def callback(_pipe, _i, _t, kwargs):
        store["latents"] = kwargs["latents"].clone()
        return {}

    return callback


def _ours(models, spec, noise=None):
    renderer = Renderer(models, max_sequence_length=SEQ)
    out = renderer.render(spec, prepare_inputs(spec), noise=noise)
    grid = lat.Grid(spec.num_frames, spec.height, spec.width, spec.fps, spec.audio_latent_frames)
    frames = lat.decode_video(models, out.video_latents, grid)
    return out, frames


GUIDANCE = {  # the same, as a job's guidance (one stage: --steps replaces the distilled schedule)
    "cfg": 3.0,
    "stg": 1.0,
    "modality": 3.0,
    "rescale": 0.7,
    "audio_cfg": 7.0,
    "audio_stg": 1.0,
    "audio_modality": 3.0,
    "audio_rescale": 0.7,
    "stg_blocks": [1],
}
GUIDED = {  # diffusers' default guidance for I2V / Condition (STG on block 1: the tiny model has 2 blocks)
    "guidance_scale": 3.0, "stg_scale": 1.0, "modality_scale": 3.0, "guidance_rescale": 0.7,
    "audio_guidance_scale": 7.0, "audio_stg_scale": 1.0, "audio_modality_scale": 3.0, "audio_guidance_rescale": 0.7,
    "spatio_temporal_guidance_blocks": [1],
}  # fmt: skip


def test_audiogen_matches_image_to_video_pipeline(tiny_models, tmp_path):
    write_image(tmp_path / "face.png", (W, H))  # already the render size: I2V stretches, we crop; equal here
    spec = _spec(tmp_path, {
        "id": "i2v", "image": "face.png", "duration": 17 / FPS, "fps": FPS, "resolution": f"{W}x{H}",
        "preset": "balanced", "steps": 3, "img_compression": 0, "seed": 5, "prompt": "a cat talks",
        "guidance": GUIDANCE,
    })  # fmt: skip
    assert (spec.num_frames, spec.output_frames) == (17, 17)
    pipe: LTX2ImageToVideoPipeline = tiny_models.pipe
    # I2V draws a 5-D video tensor, then (B, C, L, mel) audio; we draw packed tokens: hand ours the same numbers.
    gen = torch.Generator().manual_seed(spec.seed)
    video_noise = torch.randn(1, 16, 3, H // 32, W // 32, generator=gen)
    audio_noise = torch.randn(1, 2, spec.audio_latent_frames, 16, generator=gen)
    noise = (pipe._pack_latents(video_noise), pipe._pack_audio_latents(audio_noise))
    ours, frames = _ours(tiny_models, spec, noise)

    store: dict = {}
    theirs = pipe(
        image=Image.open(tmp_path / "face.png"), prompt=spec.prompt, negative_prompt=spec.negative_prompt,
        width=W, height=H, num_frames=spec.num_frames, frame_rate=FPS, num_inference_steps=3, image_crf=0,
        generator=torch.Generator().manual_seed(spec.seed), max_sequence_length=SEQ, output_type="np",
        callback_on_step_end=_last_latents(store), **GUIDED,
    )  # fmt: skip
    _close(ours.video_latents, store["latents"], "video latents")
    _close(frames, theirs.frames[0], "decoded frames")
    _close(ours.audio, theirs.audio[0].float(), "vocoder audio")


def _components(models, **replace) -> dict:
    names = ("scheduler", "vae", "audio_vae", "text_encoder", "tokenizer", "connectors", "transformer", "vocoder")
    parts = {n: getattr(models.pipe, n) for n in names}
    return parts | replace


def test_keyframes_match_condition_pipeline_on_the_latent_grid(tiny_models, tmp_path):
    """Keyframes at pixel frames 0 and 9 (= the first pixel of latent frame 2, where LTX2ConditionPipeline puts
    latent index 2), partial strengths; audio generated; the Condition pipeline's default guidance."""
    write_image(tmp_path / "a.png", (W, H))
    write_image(tmp_path / "b.png", (H, W)).rename(tmp_path / "b.png")
    Image.open(tmp_path / "b.png").transpose(Image.Transpose.ROTATE_90).save(tmp_path / "b.png")  # other pixels
    spec = _spec(tmp_path, {
        "id": "cond", "duration": 17 / FPS, "fps": FPS, "resolution": f"{W}x{H}", "preset": "balanced", "steps": 3,
        "img_compression": 0, "seed": 11, "prompt": "two frames",
        "keyframes": [{"image": "a.png", "position": "first", "strength": 0.9},
                      {"image": "b.png", "position": 9 / 16, "strength": 0.8}],
        "guidance": GUIDANCE,
    })  # fmt: skip
    assert [k.frame for k in spec.keyframes] == [0, 9]
    ours, frames = _ours(tiny_models, spec)  # both draw packed noise (guide tokens included): same seed suffices

    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

    pipe = LTX2ConditionPipeline(**_components(tiny_models))
    pipe.set_progress_bar_config(disable=True)
    store: dict = {}
    theirs = pipe(
        conditions=[LTX2VideoCondition(frames=Image.open(tmp_path / "a.png"), index=0, strength=0.9, crf=0),
                    LTX2VideoCondition(frames=Image.open(tmp_path / "b.png"), index=2, strength=0.8, crf=0)],
        prompt=spec.prompt, negative_prompt=spec.negative_prompt, width=W, height=H, num_frames=spec.num_frames,
        frame_rate=FPS, num_inference_steps=3, generator=torch.Generator().manual_seed(spec.seed),
        max_sequence_length=SEQ, output_type="np",
        callback_on_step_end=_last_latents(store), **GUIDED,
    )  # fmt: skip
    grid_tokens = 3 * (H // 32) * (W // 32)
    _close(ours.video_latents, store["latents"][:, :grid_tokens], "video latents")
    _close(frames, theirs.frames[0], "decoded frames")
    _close(ours.audio, theirs.audio[0].float(), "vocoder audio")


def test_distilled_lipsync_matches_dfr_pipeline_with_frozen_audio(tiny_models, tmp_path):
    """fast preset (distilled sigmas, no guidance, LoRAs on) against LTX2DFRPipeline(freeze_audio=True,
    generate_slots=False). 25 frames: content 24 = one 24-frame segment, so DFR pads no canvas."""
    write_image(tmp_path / "face.png", (W, H))
    write_audio(tmp_path / "voice.wav", 25 / FPS, rate=44100, channels=2)
    spec = _spec(tmp_path, {
        "id": "dfr", "image": "face.png", "audio": "voice.wav", "fps": FPS, "resolution": f"{W}x{H}",
        "preset": "fast", "img_compression": 0, "seed": 3, "prompt": "someone speaks",
    })  # fmt: skip
    assert spec.num_frames == 25 and spec.guidance.cfg == 1.0 and spec.loras
    ours, frames = _ours(tiny_models, spec)  # LoRAs are now active on the shared transformer for both sides

    pipe = LTX2DFRPipeline(**_components(
        tiny_models,
        scheduler=type(tiny_models.pipe.scheduler).from_config(
            tiny_models.scheduler_config, use_dynamic_shifting=False, shift_terminal=None),
    ))  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    inputs = prepare_inputs(spec)
    from ltx2cli.engine.latents import encode_audio

    tokens = encode_audio(tiny_models, inputs.voice, spec.audio_latent_frames)
    avae = tiny_models.audio_vae
    raw_audio = pipe._unpack_audio_latents(
        pipe._denormalize_audio_latents(tokens, avae.latents_mean, avae.latents_std), tokens.shape[1], 16
    )
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

    store: dict = {}
    theirs = pipe(
        conditions=[LTX2VideoCondition(frames=Image.open(tmp_path / "face.png"), index=0, strength=1.0, crf=0)],
        prompt=spec.prompt, width=W, height=H, num_frames=spec.num_frames, frame_rate=FPS,
        sigmas=[s for s in spec.sigmas if s > 0], audio_latents=raw_audio, freeze_audio=True, generate_slots=False,
        generator=torch.Generator().manual_seed(spec.seed), max_sequence_length=SEQ, output_type="np",
        callback_on_step_end=_last_latents(store),
    )  # fmt: skip
    _close(ours.video_latents, store["latents"][:, : ours.video_latents.shape[1]], "video latents")
    _close(frames, theirs.frames[0], "decoded frames")
    assert torch.equal(ours.audio_latents, tokens), "frozen audio latents changed"
