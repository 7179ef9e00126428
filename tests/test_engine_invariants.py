"""What must hold for every render, checked on the tiny model (float32, CPU)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import write_manifest
from media import write_audio, write_image

from ltx2cli.engine.guidance import COND, ISOLATED, STG, UNCOND, GuidedDenoiser, Prompt, passes
from ltx2cli.engine.inputs import prepare_inputs
from ltx2cli.engine.latents import encode_audio, encode_image
from ltx2cli.engine.render import Renderer
from ltx2cli.engine.sampler import State, Stream
from ltx2cli.jobs.guidance import Scales
from ltx2cli.plan.resolve import plan_manifests
from ltx2cli.synthetic import tiny

W, H, FPS = 64, 96, 24


def _spec(tmp_path: Path, **job):
    write_image(tmp_path / "a.png", (W, H))
    write_image(tmp_path / "b.png", (W * 2, H * 2))
    write_audio(tmp_path / "v.wav", 1.0, rate=22050, channels=2)
    base = {"id": "j", "image": "a.png", "fps": FPS, "resolution": f"{W}x{H}", "img_compression": 0, "seed": 1}
    specs, problems = plan_manifests([write_manifest(tmp_path / "jobs.yaml", [base | job])])
    assert not problems, problems
    return specs[0]


@pytest.fixture(scope="module")
def renderer(tiny_models):
    return Renderer(tiny_models, max_sequence_length=64)


GUIDED = {"preset": "balanced", "steps": 3, "guidance": {"cfg": 3.0, "modality": 3.0, "rescale": 0.7}}


def test_frozen_audio_is_bit_identical_after_guided_sampling(renderer, tmp_path):
    spec = _spec(tmp_path, audio="v.wav", **GUIDED)
    inputs = prepare_inputs(spec)
    out = renderer.render(spec, inputs)
    voice = encode_audio(renderer.models, inputs.voice, spec.audio_latent_frames)
    assert torch.equal(out.audio_latents, voice)
    assert out.sample_rate == 22050 and out.audio.shape[0] == 2  # the original track is what gets muxed


def test_strength_one_keyframes_are_unchanged_and_guides_sit_at_their_exact_pixel_frame(renderer, tmp_path):
    # 13 is not the first pixel of a latent frame (8k-7): off the Condition pipeline's grid, on purpose.
    spec = _spec(tmp_path, duration=1.0, keyframes=[
        {"image": "a.png", "position": "first", "strength": 1.0},
        {"image": "b.png", "position": 13 / 23, "strength": 1.0},
        {"image": "a.png", "position": "last", "strength": 0.5},
    ], image=None, **GUIDED)  # fmt: skip
    assert [k.frame for k in spec.keyframes] == [0, 13, 23]
    inputs = prepare_inputs(spec)
    out = renderer.render(spec, inputs)
    models, frame_tokens, base = renderer.models, (W // 32) * (H // 32), out.base_tokens
    video = out.state.video
    assert torch.equal(video.x[:, :frame_tokens], encode_image(models, inputs.first[0]))
    assert torch.equal(video.x[:, base : base + frame_tokens], encode_image(models, inputs.guides[0][1]))
    assert video.x.shape[1] == base + 2 * frame_tokens  # guide tokens are appended, never in the decoded grid
    assert not torch.equal(video.x[:, base + frame_tokens :], encode_image(models, inputs.guides[1][1]))
    for i, pixel in enumerate((13, 23)):
        time = video.positions[0, 0, base + i * frame_tokens : base + (i + 1) * frame_tokens]
        expected = torch.tensor([pixel / FPS, (pixel + 1) / FPS]).expand_as(time)
        torch.testing.assert_close(time, expected, rtol=0, atol=1e-7)
    assert out.frames.shape == (spec.output_frames, H, W, 3)


def test_same_seed_same_frames_other_seed_differs(renderer, tmp_path):
    spec = _spec(tmp_path, duration=0.5)
    first = renderer.render(spec, prepare_inputs(spec)).frames
    again = renderer.render(spec, prepare_inputs(spec)).frames
    other = renderer.render(spec.model_copy(update={"seed": 2}), prepare_inputs(spec)).frames
    assert (first == again).all()
    assert not (first == other).all()


def test_two_stage_refines_at_full_size(renderer, tmp_path):
    spec = _spec(tmp_path, duration=0.5, preset="quality", steps=2, guidance={"stg_blocks": [1]})
    assert spec.two_stage and spec.stage2_sigmas
    steps = []
    out = renderer.render(spec, prepare_inputs(spec), on_step=lambda i, n: steps.append((i, n)))
    assert steps == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]  # 2 guided + 3 distilled refine steps
    assert out.frames.shape == (spec.output_frames, H, W, 3)
    assert {"denoise", "upsample", "stage2_denoise"} <= out.timings.keys()


def test_stg_pass_runs_only_where_attention_can_be_perturbed(tiny_models):
    scales = Scales(cfg=3, stg=1, modality=3, stg_blocks=(1,))
    assert passes(scales, tiny_models) == [COND, UNCOND, ISOLATED]  # LTX-2.0 config: STG would change nothing
    stg_model = SimpleNamespace(perturbed_attn=True)
    assert passes(scales, stg_model) == [COND, UNCOND, STG, ISOLATED]


@pytest.fixture(scope="module")
def perturbable():
    """The tiny transformer with LTX-2.3's perturbable self-attention, so STG really changes the output."""
    from diffusers import LTX2VideoTransformer3DModel

    torch.manual_seed(0)
    model = LTX2VideoTransformer3DModel.from_config({**tiny.TRANSFORMER, "perturbed_attn": True}).eval()
    return SimpleNamespace(transformer=model, device=torch.device("cpu"), perturbed_attn=True)


def test_one_batched_forward_equals_separate_guidance_passes(perturbable):
    """CFG, STG and modality isolation as row groups of one forward == diffusers' separate forwards."""
    g = torch.Generator().manual_seed(0)
    model = perturbable.transformer
    video_tokens, audio_tokens, text = 12, 5, 16
    coords = model.rope.prepare_video_coords(1, 2, 2, 3, "cpu", fps=FPS)
    audio_coords = model.audio_rope.prepare_audio_coords(1, audio_tokens, "cpu")
    mask = torch.ones(1, video_tokens)
    mask[:, :6] = 0.0  # a held first frame
    state = State(
        Stream(torch.randn(1, video_tokens, 16, generator=g), torch.zeros(1, video_tokens, 16), mask, coords),
        Stream(torch.randn(1, audio_tokens, 32, generator=g), torch.zeros(1, audio_tokens, 32),
               torch.ones(1, audio_tokens), audio_coords),
    )  # fmt: skip
    prompt = Prompt(torch.randn(2, text, 32, generator=g), torch.randn(2, text, 32, generator=g), torch.ones(2, text))
    scales = Scales(cfg=3, stg=1, modality=3, rescale=0.7, audio_cfg=7, audio_stg=1, audio_modality=3,
                    audio_rescale=0.7, stg_blocks=(1,))  # fmt: skip
    sigma = torch.tensor(0.8)
    ours = GuidedDenoiser(perturbable, prompt, scales, FPS)(state, sigma)

    def forward(row: int, **kw):
        t = sigma * 1000
        v, a = model(
            hidden_states=state.video.x, audio_hidden_states=state.audio.x, encoder_hidden_states=prompt.video[row:row + 1],
            audio_encoder_hidden_states=prompt.audio[row:row + 1], timestep=t * mask, audio_timestep=t.expand(1),
            sigma=t.expand(1), encoder_attention_mask=prompt.mask[row:row + 1],
            audio_encoder_attention_mask=prompt.mask[row:row + 1], fps=FPS, video_coords=coords,
            audio_coords=audio_coords, use_cross_timestep=False, return_dict=False, **kw,
        )  # fmt: skip
        return state.video.x - v * sigma, state.audio.x - a * sigma

    cond, uncond = forward(1), forward(0)
    stg, iso = forward(1, spatio_temporal_guidance_blocks=[1]), forward(1, isolate_modalities=True)
    assert (stg[0] - cond[0]).abs().max() > 1e-3 and (iso[0] - cond[0]).abs().max() > 1e-3  # both passes matter
    for k, (cfg, stg_scale, mod, rescale) in enumerate([(3, 1, 3, 0.7), (7, 1, 3, 0.7)]):  # video, audio
        guided = cond[k] + (cfg - 1) * (cond[k] - uncond[k]) + stg_scale * (cond[k] - stg[k])
        guided = guided + (mod - 1) * (cond[k] - iso[k])
        ratio = cond[k].std(dim=(1, 2), keepdim=True) / guided.std(dim=(1, 2), keepdim=True)
        expected = rescale * guided * ratio + (1 - rescale) * guided
        torch.testing.assert_close(ours[k], expected, rtol=0, atol=1e-5)
