"""The audio<->video cross-attention AdaLN timesteps, checked by their definition on the tiny model.

Lightricks' rule (engine.models.av_timesteps, ltx-core 203d484): scale/shift from each stream's own per-token timesteps,
the gate on what a stream takes from the other from the OTHER stream's sigma, a frozen stream's sigma being 0.
The four AdaLN modules' inputs are captured during one real guided forward. Where the rule and diffusers' own
modulation (`use_cross_timestep=False`, the 2.0 setting ltx2 used) differ, the difference is measured here.
"""

from __future__ import annotations

import pytest
import torch
from conftest import write_manifest
from media import write_image

from ltx2cli.batch.deliver import sidecar
from ltx2cli.engine.guidance import GuidedDenoiser, Prompt
from ltx2cli.engine.models.av_timesteps import RULE, apply_rule, remove_rule
from ltx2cli.engine.sampler import State, Stream
from ltx2cli.jobs.guidance import Scales
from ltx2cli.plan.resolve import plan_manifests
from ltx2cli.synthetic import tiny_configs as tc
from ltx2cli.weights.inspect import inspect_path

FPS, SIGMA = 24.0, 0.8
PLAIN = Scales()  # no guidance: one row
ADALNS = {  # the transformer's cross-attention AdaLN modules -> what they modulate
    "video_scale_shift": "av_cross_attn_video_scale_shift",
    "audio_scale_shift": "av_cross_attn_audio_scale_shift",
    "a2v_gate": "av_cross_attn_video_a2v_gate",  # on the video stream's intake from the audio
    "v2a_gate": "av_cross_attn_audio_v2a_gate",
}


def _state(models, video_mask: torch.Tensor, audio_mask: torch.Tensor) -> State:
    g = torch.Generator().manual_seed(0)
    model = models.transformer
    nv, na = video_mask.shape[1], audio_mask.shape[1]
    coords = model.rope.prepare_video_coords(1, 2, 2, 3, "cpu", fps=FPS)
    audio_coords = model.audio_rope.prepare_audio_coords(1, na, "cpu")
    video = torch.randn(1, nv, tc.VIDEO_LATENT_CHANNELS, generator=g)
    audio = torch.randn(1, na, tc.AUDIO_TOKEN_CHANNELS, generator=g)
    return State(
        Stream(video, torch.zeros_like(video), video_mask, coords),
        Stream(audio, torch.zeros_like(audio), audio_mask, audio_coords),
    )


def _denoise(models, state: State, scales: Scales = PLAIN) -> tuple[dict, tuple[torch.Tensor, torch.Tensor]]:
    """One guided step at SIGMA; the inputs each cross-attention AdaLN got, and the x0 estimates."""
    g = torch.Generator().manual_seed(1)
    text = torch.randn(2, 16, tc.TEXT_HIDDEN, generator=g)
    prompt = Prompt(text, torch.randn(2, 16, tc.TEXT_HIDDEN, generator=g), torch.ones(2, 16))
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        getattr(models.transformer, module).register_forward_hook(
            lambda _m, args, _out, name=name: seen.__setitem__(name, args[0].clone())
        )
        for name, module in ADALNS.items()
    ]
    try:
        x0 = GuidedDenoiser(models, prompt, scales, FPS)(state, torch.tensor(SIGMA))
    finally:
        for h in hooks:
            h.remove()
    return seen, x0


@pytest.fixture
def masks():
    held_first_frame = torch.ones(1, 12)
    held_first_frame[:, :6] = 0.0  # the first latent frame (6 tokens) is the conditioning image
    return held_first_frame, torch.ones(1, 5)


def test_gates_follow_the_other_streams_sigma_scale_shift_their_own(tiny_models, masks):
    """Lip-sync's pattern (first frame held, audio frozen) and image-to-video's (audio generated), two rows (CFG)."""
    video_mask, audio_mask = masks
    t = SIGMA * 1000
    for frozen_audio in (True, False):
        a_mask = audio_mask * (0.0 if frozen_audio else 1.0)
        seen, _ = _denoise(tiny_models, _state(tiny_models, video_mask, a_mask), Scales(cfg=3.0))
        rows = 2
        torch.testing.assert_close(seen["video_scale_shift"], (t * video_mask).repeat(rows, 1).flatten())
        torch.testing.assert_close(seen["audio_scale_shift"], (t * a_mask).repeat(rows, 1).flatten())
        # the video's a2v gate: the audio's sigma, 0 when the audio is frozen; the audio's v2a gate: the video's
        audio_sigma = 0.0 if frozen_audio else t
        torch.testing.assert_close(seen["a2v_gate"], torch.full((rows,), audio_sigma))
        torch.testing.assert_close(seen["v2a_gate"], torch.full((rows,), t))


def test_a_frozen_video_gates_the_audio_at_sigma_zero(tiny_models, masks):
    """Both streams frozen (nothing to generate): each gate sees the other's sigma, 0."""
    video_mask, audio_mask = masks
    seen, _ = _denoise(tiny_models, _state(tiny_models, video_mask * 0, audio_mask * 0))
    assert seen["a2v_gate"].tolist() == [0.0] and seen["v2a_gate"].tolist() == [0.0]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _diffusers(models, state: State, use_cross_timestep: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The same step under diffusers' own modulation, `use_cross_timestep` as given (False: the 2.0 setting ltx2
    used, True: 2.3's and 2.5's)."""
    transformer = models.transformer
    remove_rule(transformer)
    flag = transformer.register_forward_pre_hook(
        lambda _m, args, kwargs: (args, {**kwargs, "use_cross_timestep": use_cross_timestep}), with_kwargs=True
    )
    try:
        return _denoise(models, state)[1]
    finally:
        flag.remove()
        apply_rule(transformer)


def test_where_ltx2_differs_from_diffusers_modulation_on_purpose(tiny_models, masks):
    """diffusers' modulation equals the rule when no token is held (to rounding); with a held first frame or frozen
    audio it does not, by the amounts printed here (one guided step of the tiny model at sigma 0.8)."""
    video_mask, audio_mask = masks
    patterns = {
        "text-to-video": (torch.ones_like(video_mask), audio_mask),
        "image-to-video": (video_mask, audio_mask),
        "lip-sync": (video_mask, audio_mask * 0),
    }
    for name, (v_mask, a_mask) in patterns.items():
        state = _state(tiny_models, v_mask, a_mask)
        _, ours = _denoise(tiny_models, state)
        for use_cross_timestep in (False, True):
            theirs = _diffusers(tiny_models, state, use_cross_timestep)
            video, audio = _relative(ours[0], theirs[0]), _relative(ours[1], theirs[1])
            print(f"{name}, use_cross_timestep={use_cross_timestep}: relative L2 video {video:.2e}, audio {audio:.2e}")
            if name == "text-to-video":
                assert video < 1e-6 and audio < 1e-6  # the same numbers, the AdaLNs computed per row or per token
            else:
                assert video > 1e-4, f"{name}: the rule changed nothing ({video:.2e})"
        assert _denoise(tiny_models, state)[1][0].equal(ours[0])  # the rule is back


def test_the_rule_is_named_in_the_sidecar_and_models_inspect(tiny_models, tmp_path):
    assert RULE.startswith("ltx-core 2026-05")
    assert inspect_path(tiny_models.path)["av_cross_timesteps"] == RULE
    write_image(tmp_path / "a.png", (64, 96))
    job = {"id": "a", "image": "a.png", "duration": 1.0}
    specs, problems = plan_manifests([write_manifest(tmp_path / "m.yaml", [job])])
    assert not problems, problems
    meta = sidecar(specs[0], model="m", model_version="2.0", inputs={}, timings={}, device="cpu")
    assert meta["av_cross_timesteps"] == RULE
