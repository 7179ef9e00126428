"""Clips longer than the model's window (engine/windows.py) on the tiny model: exact lengths, the window plan,
the invariants each window keeps, seams, and memory that does not grow with the clip."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_manifest
from media import write_image, write_waveform
from test_render_cli import check_mp4, decode_audio, speech

from ltx2cli.engine import latents as lat
from ltx2cli.engine import render as render_module
from ltx2cli.engine.inputs import prepare_inputs
from ltx2cli.engine.render import Renderer
from ltx2cli.engine.window_render import spec_windows
from ltx2cli.jobs.windows import crossfade, owner, plan_windows, window_frames
from ltx2cli.plan.resolve import plan_manifests

FPS = 24
SIZE = (64, 96)  # width, height


def _spec(tmp_path, presets: str | None = None, **job):
    write_image(tmp_path / "face.png", SIZE)
    job = {"id": "j", "image": "face.png", "fps": FPS, "resolution": "64x96", "seed": 3, "preset": "fast"} | job
    dirs = [tmp_path / presets] if presets else None
    specs, problems = plan_manifests([write_manifest(tmp_path / "jobs.yaml", [job])], presets_dirs=dirs)
    assert not problems, problems
    return specs[0].model_copy(update={"loras": []})


# -- the plan -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seconds", [10.05, 25, 65, 600])
def test_windows_tile_the_clip(seconds):
    num_frames = (round(seconds * FPS) - 1) // 8 * 8 + 9
    windows = plan_windows(num_frames, FPS, 10.0, 3)
    size = window_frames(10.0, FPS)
    assert windows[0].start == 0 and windows[-1].start + windows[-1].frames == num_frames
    for a, b in itertools.pairwise(windows):
        assert b.start == a.start + a.frames - b.overlap and b.overlap == 25 and b.start % 8 == 0
    assert all(w.frames % 8 == 1 and w.frames <= size for w in windows)
    assert windows[-1].audio_start + windows[-1].audio_latents == round(num_frames / FPS * 25)  # all the sound
    assert owner(windows, num_frames - 1) == windows[-1].index and owner(windows, 0) == 0


def test_one_window_is_todays_single_pass(tmp_path, tiny_models):
    """A clip of exactly one window (10 s) has no window plan, so its spec hash is unchanged, and rendering it
    with window settings renders the same numbers as the single pass."""
    from ltx2cli.jobs.spec import WindowSpec

    spec = _spec(tmp_path, duration=10)
    assert spec.num_frames == window_frames(10.0, FPS) and spec.window is None and len(spec_windows(spec)) == 1
    windowed = spec.model_copy(update={"window": WindowSpec(seconds=10.0, overlap=3, strength=1.0, count=1)})
    assert windowed.spec_hash() != spec.spec_hash()
    renderer = Renderer(tiny_models, max_sequence_length=64)
    one, again = renderer.render(spec, prepare_inputs(spec)), renderer.render(windowed, prepare_inputs(windowed))
    assert np.array_equal(one.frames, again.frames) and np.array_equal(one.audio, again.audio) and not again.windows


# -- long clips end to end ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_clips(tmp_path_factory):
    from test_render_cli import invoke

    d = tmp_path_factory.mktemp("long")
    write_image(d / "face.png", SIZE)
    write_image(d / "turn.png", SIZE)
    write_waveform(d / "voice.wav", speech(65.0, 44100, 2), 44100)
    size = ("-r", "64x96", "--fps", str(FPS), "--json", "--model", "tiny")
    lip = invoke(d, "lipsync", "face.png", "voice.wav", "-o", "lip.mp4", *size)
    gen = invoke(d, "audiogen", "face.png", "--duration", "45", "-o", "gen.mp4", "--keyframe", "turn.png@0.5", *size)
    return d, lip, gen


def test_a_65_s_lipsync_and_a_45_s_audiogen(long_clips):
    d, lip, gen = long_clips
    assert lip.code == 0 and gen.code == 0, lip.err + gen.err
    voice, rate = decode_audio(d / "voice.wav")
    frames = round(voice.shape[1] / rate * FPS)
    clip = check_mp4(d / "lip.mp4", *SIZE, frames=frames, fps=FPS)  # exact count; sound within one frame
    assert clip.audio_rate == rate
    check_mp4(d / "gen.mp4", *SIZE, frames=45 * FPS, fps=FPS)
    for name, count in (("lip", 8), ("gen", 5)):  # 216 new frames a window at 24 fps
        meta = json.loads((d / f"{name}.json").read_text())
        windows = meta["windows"]
        assert len(windows) == count
        assert windows[0]["start"] == 0 and all(w["overlap"] == 25 for w in windows[1:])


def test_the_long_lipsync_sound_is_the_voice_itself(long_clips, tmp_path):
    """What is muxed is the decoded voice, bit for bit (the MP4's AAC is lossy, so this checks the render)."""
    d, _, _ = long_clips
    spec = _spec(tmp_path, audio=str(d / "voice.wav"))
    from ltx2cli.media.audio import decode_audio as read_audio

    inputs = prepare_inputs(spec)
    assert np.array_equal(inputs.soundtrack[0], read_audio(d / "voice.wav")[0])


def test_generated_sound_stays_on_its_frames_in_every_window(tmp_path, tiny_models, monkeypatch):
    """A 45-s audio-gen (5 windows) whose decoded sound is a time code (channel 0: the window from 1, channel 1: seconds
    since the window's first sample): every window's sound starts at its first frame's time, within one video
    frame, and the clip's sound lasts exactly its frames. (Decoded sound is 4L - 3 mel frames, ~30 ms short of a
    window; trimming the nominal overlap made each window start ~30 ms earlier than the last.)"""
    real = lat.decode_audio
    count = itertools.count()

    def time_code(models, tokens):
        wave, rate = real(models, tokens)
        k, samples = next(count), wave.shape[1]
        code = torch.stack([torch.full((samples,), k + 1.0), torch.arange(samples, dtype=torch.float32) / rate])
        return code, rate

    monkeypatch.setattr(lat, "decode_audio", time_code)
    spec = _spec(tmp_path, duration=45)
    rendered = Renderer(tiny_models, max_sequence_length=64).render(spec, prepare_inputs(spec))
    windows, rate, audio = spec_windows(spec), rendered.sample_rate, rendered.audio
    assert len(windows) == 5 and next(count) == 5
    assert audio.shape[1] == round(spec.num_frames / FPS * rate)  # exactly the frames' time
    for w in windows:
        own = np.flatnonzero(audio[0] == w.index + 1)  # its samples outside the cross-fades
        starts = own / rate - audio[1, own]  # each sample's clip time minus its time in the window
        assert np.abs(starts - w.start / FPS).max() < 1 / FPS, (w.index, starts.min(), w.start / FPS)


# -- invariants of each window ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded(tiny_models, tmp_path_factory):
    """A 25-s lip-sync with a keyframe in the third window, every sampler call recorded."""
    tmp = tmp_path_factory.mktemp("rec")
    write_waveform(tmp / "voice.wav", speech(25.0, 44100, 2), 44100)
    write_image(tmp / "kf.png", SIZE)
    spec = _spec(tmp, audio=str(tmp / "voice.wav"), keyframes=[{"image": "kf.png", "position": 0.9}])
    calls = []
    real = render_module.sample

    def sample(denoiser, state, sigmas, callback=None):
        out = real(denoiser, state, sigmas, callback=callback)
        calls.append((state, out))
        return out

    render_module.sample = sample
    try:
        inputs = prepare_inputs(spec)
        rendered = Renderer(tiny_models, max_sequence_length=64).render(spec, inputs)
    finally:
        render_module.sample = real
    return spec, inputs, rendered, calls


def test_each_window_sees_its_exact_slice_of_the_whole_voice_encoding(recorded, tiny_models):
    spec, inputs, _, calls = recorded
    whole = lat.encode_audio(tiny_models, inputs.voice, spec.audio_latent_frames)
    windows = spec_windows(spec)
    assert len(calls) == len(windows) == 3
    for w, (start, end) in zip(windows, calls, strict=True):
        expected = whole[:, w.audio_start : w.audio_start + w.audio_latents]
        assert torch.equal(start.audio.clean, expected) and not start.audio.mask.any()
        assert torch.equal(end.audio.x, expected)  # frozen through the whole window


def test_held_overlap_tokens_at_strength_1_come_out_unchanged(recorded):
    spec, _, _, calls = recorded
    assert spec.window.strength == 1.0
    frame_tokens = (spec.height // 32) * (spec.width // 32)
    held = (spec.window.overlap + 1) * frame_tokens  # 8 * overlap + 1 pixel frames = overlap + 1 latent frames
    for start, end in calls[1:]:
        assert not start.video.mask[:, :held].any() and start.video.mask[:, held:].all()
        assert torch.equal(end.video.x[:, :held], start.video.clean[:, :held])


def test_a_keyframe_lands_on_its_exact_frame_in_its_window(recorded, tiny_models):
    spec, _, _, calls = recorded
    frame = next(kf.frame for kf in spec.keyframes if kf.frame)
    windows = spec_windows(spec)
    w = windows[owner(windows, frame)]
    assert w.index == 2
    start, _ = calls[w.index]
    base = (w.frames - 1) // 8 + 1
    frame_tokens = (spec.height // 32) * (spec.width // 32)
    guide_time = start.video.positions[0, 0, base * frame_tokens :, 0]  # the appended guide's RoPE start times
    assert guide_time.shape[0] == frame_tokens and torch.allclose(guide_time, torch.tensor((frame - w.start) / FPS))
    for other in (0, 1):  # no other window carries it
        assert calls[other][0].video.x.shape[1] == ((windows[other].frames - 1) // 8 + 1) * frame_tokens


def test_seams_are_no_rougher_than_the_windows(recorded):
    """Mean absolute frame-to-frame change where each overlap begins and ends vs the clip's median. (The tiny
    model's frames are noise-like, so this is a loose check on them; the same measure flags a hard cut in a
    smooth clip, below.)"""
    spec, _, rendered, _ = recorded
    frames = np.stack([rendered.frames[i] for i in range(len(rendered.frames))]).astype(np.float32)
    change = np.abs(np.diff(frames, axis=0)).mean(axis=(1, 2, 3))
    windows = spec_windows(spec)
    seams = [w.start + w.overlap for w in windows[1:]] + [w.start for w in windows[1:]]
    at_seams = max(change[s - 1] for s in seams)
    inside = float(np.median(change))
    assert at_seams <= SEAM_FACTOR * inside, (at_seams, inside)
    smooth = np.stack([np.full(frames.shape[1:], 2.0 * i) for i in range(100)])  # a slow fade
    cut = np.concatenate([smooth[:50], smooth[50:] + 60])  # ... with a hard cut at frame 50
    cut_change = np.abs(np.diff(cut, axis=0)).mean(axis=(1, 2, 3))
    assert cut_change[49] > SEAM_FACTOR * float(np.median(cut_change))


SEAM_FACTOR = 3.0


def test_crossfade_runs_from_one_window_into_the_next():
    before, after = np.zeros((5, 2, 2, 3), np.float32), np.ones((5, 2, 2, 3), np.float32)
    mixed = crossfade(before, after)[:, 0, 0, 0]
    assert np.all(np.diff(mixed) > 0) and 0 < mixed[0] < 0.5 < mixed[-1] < 1


# -- memory does not grow with the clip ---------------------------------------------------------------------------


def _peak_rss_mib(tmp_path: Path, seconds: float) -> float:
    script = textwrap.dedent(f"""
        import resource, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from test_render_cli import invoke
        r = invoke({str(tmp_path)!r}, "audiogen", "face.png", "--duration", "{seconds}", "-o", "m{seconds}.mp4",
                   "--fps", "{FPS}", "-r", "64x96", "--model", "tiny")
        assert r.code == 0, r.err
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    return float(out.stdout.strip().splitlines()[-1])


def test_peak_memory_of_a_65_s_clip_is_that_of_a_10_s_clip(tmp_path):
    write_image(tmp_path / "face.png", SIZE)
    short, long = _peak_rss_mib(tmp_path, 10), _peak_rss_mib(tmp_path, 65)
    assert long <= 1.2 * short, (short, long)


def test_modes_and_windows_differ_only_in_their_condition_lists(recorded):
    """A one-pass lip-sync is FirstFrame, GuideFrame..., Voice; a later window of it is HeldFrames (the previous
    window's tail), the keyframes it owns, FrozenAudio (its slice of the voice)."""
    from ltx2cli.engine.conditions import FirstFrame, FrozenAudio, GuideFrame, HeldFrames, Voice
    from ltx2cli.engine.window_render import window_conditions

    spec, inputs, _, _ = recorded
    assert [type(c) for c in inputs.conditions()] == [FirstFrame, GuideFrame, Voice]
    windows = spec_windows(spec)
    tail = np.zeros((25, spec.height, spec.width, 3), np.uint8)
    voice = torch.zeros(1, spec.audio_latent_frames, 4)
    later = window_conditions(inputs, windows, windows[2], tail, voice, None, 1.0)
    assert [type(c) for c in later] == [HeldFrames, GuideFrame, FrozenAudio]
    assert later[1].frame == next(kf.frame for kf in spec.keyframes if kf.frame) - windows[2].start
    assert [type(c) for c in window_conditions(inputs, windows, windows[1], tail, voice, None, 1.0)] == [
        HeldFrames,
        FrozenAudio,
    ]


def test_a_two_stage_preset_refines_each_window(tmp_path):
    """quality (two stages: half size, then the upsampled latents refined) over a 12-s clip: both stages run per
    window, the held tail shrunk for stage 1; the clip keeps its exact length."""
    from test_render_cli import invoke

    write_image(tmp_path / "face.png", SIZE)
    r = invoke(tmp_path, "audiogen", "face.png", "--duration", "12", "--preset", "quality", "-o", "q.mp4", "-r",
               "64x96", "--fps", str(FPS), "--model", "tiny")  # fmt: skip
    assert r.code == 0, r.err
    check_mp4(tmp_path / "q.mp4", *SIZE, frames=12 * FPS, fps=FPS)
    meta = json.loads((tmp_path / "q.json").read_text())
    assert len(meta["windows"]) == 2 and meta["timings"]["stage2_denoise"] > 0
