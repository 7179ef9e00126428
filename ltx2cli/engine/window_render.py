"""Rendering a clip longer than one window (jobs.windows plans them): window by window, each conditioned on the
one before, decoded, cross-faded and streamed to disk, checkpointed after each window when the caller gives a
folder (engine.window_checkpoint)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..jobs.spec import RenderSpec
from ..jobs.windows import Window, audio_overlap, crossfade, owner, plan_windows
from ..media.frame_store import FrameStore
from . import latents as lat
from .conditions import Condition, FirstFrame, FrozenAudio, GuideFrame, HeldAudio, HeldFrames, clip_tokens
from .inputs import Inputs
from .memory.placement import place
from .models.loaded import Models
from .rendered import OnStage, OnStep, Rendered, Steps, lap, peak_gib, step_count, to_u8
from .sampler import State
from .window_checkpoint import FORMAT, StoppedBetweenWindows, WindowCheckpoint, input_key

Denoise = Callable[[lat.Grid, list[Condition], Steps, list[str]], State]  # one window's grid -> denoised state
Decode = Callable[[torch.Tensor, lat.Grid, list[str]], torch.Tensor]  # base-grid tokens -> float frames


def render_windows(
    m: Models,
    spec: RenderSpec,
    inputs: Inputs,
    windows: list[Window],
    generator: torch.Generator,
    denoise: Denoise,
    decode: Decode,
    on_step: OnStep | None,
    stage: OnStage,
    timings: dict[str, float],
    resume: Path | None = None,
    stop: Callable[[], bool] | None = None,
) -> Rendered:
    """A clip longer than one window (jobs.windows): each window denoised with the previous one's tail
    held, decoded, cross-faded into the last and streamed to disk; the voice encoded once for the clip. With
    `resume`, each finished window is checkpointed there and a checkpoint of this same render is gone on from."""
    notes: list[str] = []
    steps = Steps(on_step, step_count(spec) * len(windows))
    strength = spec.window.strength
    checkpoint = WindowCheckpoint(resume, render_key(spec, m, inputs)) if resume is not None else None
    saved = checkpoint.load() if checkpoint is not None else None
    if checkpoint is not None:
        frames = checkpoint.frame_store(spec.height, spec.width, spec.output_frames, saved)
    else:
        frames = FrameStore(spec.height, spec.width, limit=spec.output_frames)
    voice = None
    if inputs.voice is not None:
        place(m, "condition")
        voice = lat.encode_audio(m, inputs.voice, spec.audio_latent_frames)  # once: windows get exact slices
    previous = None  # the last window's generated audio latents (its tail is held by the next)
    pending, tail = None, None  # the last window's overlap frames (float, not yet written; uint8, to hold)
    waves: list[np.ndarray] = []  # generated sound, window by window (its overlap cross-faded)
    rate, decode_audio_s, first = 0, 0.0, 0
    if saved is not None:
        generator.set_state(saved.generator)
        pending, waves, rate, first = saved.pending, saved.waves, saved.rate, saved.done
        tail = to_u8(pending) if pending is not None else None
        previous = saved.previous.to(m.device) if saved.previous is not None else None
        steps.done = step_count(spec) * first
    for w in windows[first:]:
        stage(f"window {w.index + 1}/{len(windows)}")
        grid = lat.Grid(w.frames, spec.height, spec.width, spec.fps, w.audio_latents)
        conditions = window_conditions(inputs, windows, w, tail, voice, previous, strength)
        state = denoise(grid, conditions, steps, notes)
        t0 = time.perf_counter()
        decoded = decode(clip_tokens(state.video.x, grid), grid, notes).cpu().numpy()
        nxt = windows[w.index + 1].overlap if w.index + 1 < len(windows) else 0
        if pending is not None:
            decoded[: len(pending)] = crossfade(pending, decoded[: len(pending)])
        body, pending = (decoded[: len(decoded) - nxt], decoded[len(decoded) - nxt :]) if nxt else (decoded, None)
        frames.append(to_u8(body))
        tail = to_u8(pending) if pending is not None else None
        timings["decode_video"] = timings.get("decode_video", 0.0) + lap(t0)
        if voice is None:  # generated sound: decoded window by window, as the frames
            t0 = time.perf_counter()
            wave, rate = lat.decode_audio(m, state.audio.x)
            waves.append(join_audio(waves, wave.cpu().numpy(), sample_at(w.start, spec.fps, rate)))
            previous = state.audio.x
            decode_audio_s += lap(t0)
        del state
        if checkpoint is not None:
            checkpoint.save(w.index + 1, generator, frames, pending, previous, waves, rate)
            if stop is not None and stop() and w.index + 1 < len(windows):
                raise StoppedBetweenWindows(w.index + 1, len(windows))
    if inputs.soundtrack is not None:
        audio_out, rate = inputs.soundtrack
    else:
        audio_out = fit_length(np.concatenate(waves, axis=1), sample_at(spec.num_frames, spec.fps, rate))
    timings["decode_audio"] = round(decode_audio_s, 4)
    plan = [w.as_dict() | ({"resumed": True} if w.index < first else {}) for w in windows]
    return Rendered(frames, audio_out, rate, None, timings, 0, notes, peak_gib(m), plan, checkpoint)


def spec_windows(spec: RenderSpec) -> list[Window]:
    """The windows a spec renders in: one, unless it is longer than its preset's window."""
    w = spec.window
    if w is None:
        return [Window(0, 0, spec.num_frames, 0, 0, spec.audio_latent_frames)]
    return plan_windows(spec.num_frames, spec.fps, w.seconds, w.overlap)


def window_conditions(
    inputs: Inputs, windows: list[Window], w: Window, tail, voice, previous, strength: float
) -> list[Condition]:
    """Window `w`'s conditions: the first image (first window), the keyframes it owns at their local frames, the
    previous window's tail frames held at `strength`; lip-sync, its exact slice of the clip's voice latents;
    generated sound, the previous window's latents over the overlap, held the same way."""
    out: list[Condition] = [FirstFrame(*inputs.first)] if w.index == 0 and inputs.first is not None else []
    if tail is not None:
        out.append(HeldFrames(tail, strength))
    out += [GuideFrame(f - w.start, image, s) for f, image, s in inputs.guides if owner(windows, f) == w.index]
    if voice is not None:
        out.append(FrozenAudio(voice[:, w.audio_start : w.audio_start + w.audio_latents]))
    elif previous is not None:
        out.append(HeldAudio(previous[:, previous.shape[1] - audio_overlap(windows, w) :], strength))
    return out


def render_key(spec: RenderSpec, m: Models, inputs: Inputs) -> str:
    """What a window checkpoint must match: the spec, the model and the decoded inputs' contents."""
    images = [inputs.first[0]] if inputs.first is not None else []
    images += [image for _frame, image, _strength in inputs.guides]
    return input_key(FORMAT, spec.spec_hash(), m.identity, inputs.voice, *images)


def sample_at(frame: int, fps: float, rate: int) -> int:
    """The audio sample at which pixel frame `frame` of the clip starts: frame / fps * rate."""
    return round(frame * rate / fps)


def join_audio(waves: list[np.ndarray], wave: np.ndarray, offset: int) -> np.ndarray:
    """The part of a window's sound (channels, samples) that follows what `waves` holds, the window's sound
    starting at sample `offset` of the clip (its first frame's time): where `waves` already reaches past
    `offset`, that stretch is cross-faded into this window's first samples (the previous chunk shortened in
    place), the rest follows as it is.

    Placed by time, not by the nominal overlap: the audio VAE decodes L latents into 4L - 3 mel frames, so a
    window's sound is ~30 ms shorter than its frames and trimming a fixed overlap would pull each window earlier
    than the one before (a 10-minute clip would lead its picture by ~1.9 s)."""
    held = sum(part.shape[1] for part in waves)
    if held <= offset:  # nothing to fade: silence over any gap (none when windows overlap)
        gap = np.zeros((wave.shape[0], offset - held), dtype=wave.dtype)
        return np.concatenate([gap, wave], axis=1) if held else wave
    before = waves[-1]
    n = min(held - offset, before.shape[1], wave.shape[1])
    mixed = crossfade(before[:, -n:].T[:, None, None, :], wave[:, :n].T[:, None, None, :])[:, 0, 0, :].T
    waves[-1] = before[:, : max(before.shape[1] - (held - offset), 0)]  # an overlap lies within one window
    return np.concatenate([mixed, wave[:, n:]], axis=1)


def fit_length(wave: np.ndarray, samples: int) -> np.ndarray:
    """`wave` (channels, samples) cut or padded with silence to exactly `samples`: the clip's sound lasts as
    long as its frames (the last window's decode ends ~30 ms short, see join_audio)."""
    if wave.shape[1] >= samples:
        return wave[:, :samples]
    return np.concatenate([wave, np.zeros((wave.shape[0], samples - wave.shape[1]), dtype=wave.dtype)], axis=1)
