"""Rendering a clip longer than one window, or whose prompt changes (jobs.windows plans them): window by window, each
with the prompt in force over its frames and conditioned on the one before, decoded, cross-faded and streamed to
the MP4 being written chunk by chunk (and to disk where a window checkpoint keeps them), checkpointed after each
window when the caller gives a folder (engine.window_checkpoint)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..jobs.spec import RenderSpec
from ..jobs.windows import Window, audio_overlap, crossfade, owner, window_prompt
from ..jobs.windows import spec_windows as spec_windows  # the engine's name for it too
from ..media.frame_store import FrameStore
from . import latents as lat
from .conditions import Condition, FirstFrame, FrozenAudio, GuideFrame, HeldAudio, HeldFrames, clip_tokens
from .inputs import Inputs
from .memory.peaks import finish_peaks
from .memory.placement import place
from .models.loaded import Models
from .rendered import FramesOut, OnStage, OnStep, Rendered, Steps, lap, step_count, to_u8
from .sampler import State
from .window_checkpoint import FORMAT, StoppedBetweenWindows, WindowCheckpoint, input_key

if TYPE_CHECKING:
    from ..media.video import VideoWriter

Denoise = Callable[[Window, lat.Grid, list[Condition], Steps, list[str]], State]  # a window's grid -> denoised state
Decode = Callable[[torch.Tensor, lat.Grid, list[str]], Iterator[torch.Tensor]]  # base-grid tokens -> float chunks


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
    video: VideoWriter | None = None,
) -> Rendered:
    """A clip of several windows (jobs.windows): each window denoised (with its prompt: `denoise` is given the
    window) with the previous one's tail held, decoded, cross-faded into the last and streamed to `video` (else to
    a FrameStore on disk); the voice encoded once for the clip. With `resume`, each finished window is checkpointed
    there (its frames in a FrameStore) and a checkpoint of this same render is gone on from: its frames go to
    `video` first."""
    notes: list[str] = []
    steps = Steps(on_step, step_count(spec) * len(windows))
    strength = spec.window.strength
    checkpoint = WindowCheckpoint(resume, render_key(spec, m, inputs)) if resume is not None else None
    saved = checkpoint.load() if checkpoint is not None else None
    store = None
    if checkpoint is not None:
        store = checkpoint.frame_store(spec.height, spec.width, spec.output_frames, saved)
    elif video is None:
        store = FrameStore(spec.height, spec.width, limit=spec.output_frames)
    if video is not None and inputs.soundtrack is not None:
        video.sound_format(inputs.soundtrack[1], np.atleast_2d(inputs.soundtrack[0]).shape[0])
    elif video is not None and saved is not None and saved.waves:
        video.sound_format(saved.rate, saved.waves[-1].shape[0])
    if video is not None and store is not None:
        for i in range(0, len(store), 64):  # the finished windows' frames, read back a few at a time
            video.append(store[i : i + 64])
    frames = FramesOut(spec.output_frames, video, store)
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
        stage(window_stage(spec, windows, w))
        grid = lat.Grid(w.frames, spec.height, spec.width, spec.fps, w.audio_latents)
        conditions = window_conditions(inputs, windows, w, tail, voice, previous, strength)
        state = denoise(w, grid, conditions, steps, notes)
        if voice is None:  # generated sound: decoded window by window, as the frames (first: the MP4 names it)
            t0 = time.perf_counter()
            place(m, "decode")
            wave, rate = lat.decode_audio(m, state.audio.x)
            waves.append(join_audio(waves, wave.cpu().numpy(), sample_at(w.start, spec.fps, rate)))
            previous = state.audio.x
            if video is not None:
                video.sound_format(rate, wave.shape[0])
            decode_audio_s += lap(t0)
        t0 = time.perf_counter()
        nxt = windows[w.index + 1].overlap if w.index + 1 < len(windows) else 0
        chunks = decode(clip_tokens(state.video.x, grid), grid, notes)
        pending = stream_window(chunks, pending, w.frames, nxt, frames.append)
        tail = to_u8(pending) if pending is not None else None
        timings["decode_video"] = timings.get("decode_video", 0.0) + lap(t0)
        del state
        if checkpoint is not None:
            checkpoint.save(w.index + 1, generator, store, pending, previous, waves, rate)
            if stop is not None and stop() and w.index + 1 < len(windows):
                raise StoppedBetweenWindows(w.index + 1, len(windows))
    if inputs.soundtrack is not None:
        audio_out, rate = inputs.soundtrack
    else:
        audio_out = fit_length(np.concatenate(waves, axis=1), sample_at(spec.num_frames, spec.fps, rate))
    timings["decode_audio"] = round(decode_audio_s, 4)
    plan = [w.as_dict() | window_prompt(spec, w) | ({"resumed": True} if w.index < first else {}) for w in windows]
    phases, peak = finish_peaks(m)
    rendered = Rendered(frames.frames(), audio_out, rate, None, timings, 0, notes, peak, plan, checkpoint)
    rendered.gpu_phases = phases
    rendered.video = video
    return rendered


def stream_window(
    chunks: Iterable[torch.Tensor], pending: np.ndarray | None, length: int, hold: int, emit: Callable
) -> np.ndarray | None:
    """A window's decoded chunks (float, `length` frames in all) to `emit` as uint8 as they come: its first
    len(pending) frames cross-faded with the previous window's held tail `pending`, its last `hold` frames held
    back instead and returned (float) for the next window to fade into."""
    done, buffered = 0, []  # frames seen; the frames not emitted yet (a fade still short of frames, or the held)
    for chunk in chunks:
        done += len(chunk)
        buffered.append(chunk)
        if pending is not None:  # the fade: once all its frames are here, on the host (pending is a host array)
            if done < len(pending):
                continue
            block = torch.cat(buffered)
            faded = crossfade(pending, block[: len(pending)].cpu().numpy())
            buffered = [torch.from_numpy(faded).to(block.device), block[len(pending) :]]
            pending = None
        block = torch.cat(buffered) if len(buffered) > 1 else buffered[0]
        cut = min(max(length - hold - (done - len(block)), 0), len(block))  # frames before the held tail
        if cut:
            emit(to_u8(block[:cut]))
        buffered = [block[cut:]] if cut < len(block) else []
    return torch.cat(buffered).cpu().numpy() if hold and buffered else None


def window_stage(spec: RenderSpec, windows: list[Window], w: Window) -> str:
    """The stage a window's render shows: "window i/N", and where the clip's prompt changes, the prompt it renders
    with ("window i/N: TEXT"; progress cuts it to one line)."""
    name = f"window {w.index + 1}/{len(windows)}"
    return f"{name}: {window_prompt(spec, w)['prompt']}" if spec.prompt_timeline else name


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
