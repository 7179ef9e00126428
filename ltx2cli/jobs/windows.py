"""Clips longer than the model's window, rendered window by window: where each window starts, what it shares
with the one before, and how decoded windows join without a cut.

LTX-2 was trained on clips of up to ~20 s (its RoPE time range); ltx2 renders longer clips as windows of about
`window_seconds` (a preset value) that overlap by `overlap` latent frames = 8 * overlap + 1 pixel frames:
- window k+1 starts with the last pixel frames of window k, re-encoded by the video VAE and held at the preset's
  strength at their exact (local) time, so motion and identity carry over (a window's first latent frame is the
  VAE's causal single frame, so the previous window's latents cannot be reused as they are);
- lip-sync voice latents are encoded once for the whole clip and every window gets its exact slice, frozen;
  generated audio continues: the previous window's audio latents over the overlap are held the same way;
- decoded windows are cross-faded over the overlap; the clip keeps exactly its frame count.
Every window is 8k+1 pixel frames and starts on a multiple of 8, so the windows tile the clip's latent grid.

A prompt timeline (jobs.spec.TimedPrompt) puts a window boundary where the prompt changes: one window ends there and
the next adds its frames from there on, holding the frames before as overlap (they carry identity and motion across
the change). Windows end on 8k+1, so the boundary is the nearest such frame (within 4 of the prompt's); a change
too close to the one before (or to the clip's start or end) for a window of its own gets none, and the window
holding it renders with the prompt in force at the middle of the frames it adds (`prompt_frame`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .spec import RenderSpec
from .timeline import TEMPORAL_COMPRESSION, audio_latent_count


@dataclass(frozen=True)
class Window:
    index: int
    start: int  # first pixel frame of the clip this window renders
    frames: int  # pixel frames it renders (8k+1)
    overlap: int  # pixel frames it shares with the window before (0 for the first)
    audio_start: int  # first audio latent of the clip it covers
    audio_latents: int

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    @property
    def prompt_frame(self) -> int:
        """The frame whose prompt this window renders with: the middle of the frames it adds (after its overlap).
        A window between two boundaries adds frames of one entry only, so that is the entry in force there."""
        return (2 * self.start + self.overlap + self.frames) // 2


def window_frames(seconds: float, fps: float) -> int:
    """A window's pixel frames: the 8k+1 nearest `seconds` (at least 17)."""
    return max(2, round(seconds * fps / 8)) * 8 + 1


def plan_windows(num_frames: int, fps: float, seconds: float, overlap: int, cuts: Sequence[int] = ()) -> list[Window]:
    """The windows of a clip of `num_frames` (8k+1) rendered frames; one window when it fits in one and no prompt
    change (`cuts`: the frames where the prompt changes) gets a boundary."""
    size, shared = window_frames(seconds, fps), 8 * overlap + 1
    ends = boundaries(num_frames, shared, cuts) + [num_frames]
    if len(ends) == 1 and num_frames <= size:
        return [Window(0, 0, num_frames, 0, 0, audio_latent_count(num_frames, fps))]
    if shared >= size - TEMPORAL_COMPRESSION:
        raise ValueError(f"an overlap of {overlap} latent frames leaves nothing new in a {seconds:g}-s window")
    windows, start = [], 0
    for end in ends:  # each stretch between boundaries tiled as a clip of its own, its first window held on
        while True:
            frames = min(size, end - start)
            audio_start = round(start / fps * 25)
            audio = audio_latent_count(start + frames, fps) - audio_start
            windows.append(Window(len(windows), start, frames, shared if start else 0, audio_start, audio))
            if start + frames >= end:
                break
            start += frames - shared
        start = end - shared
    return windows


def boundaries(num_frames: int, shared: int, cuts: Sequence[int]) -> list[int]:
    """The window boundaries (frames where one window ends and the next adds frames from) for the prompt changes at
    `cuts` (in order): each on the 8k+1 frame nearest its change, if the windows on both sides still add frames of
    their own (8 or more; the first window must also leave room for the next one's overlap); a change that cannot
    have one gets none."""
    out: list[int] = []
    for cut in cuts:
        frame = snap(cut)
        lowest = out[-1] + TEMPORAL_COMPRESSION if out else shared + TEMPORAL_COMPRESSION
        if lowest <= frame <= num_frames - TEMPORAL_COMPRESSION:
            out.append(frame)
    return out


def snap(frame: int) -> int:
    """The 8k+1 frame nearest `frame` (the earlier at a tie), where a window can end."""
    return (frame + 2) // TEMPORAL_COMPRESSION * TEMPORAL_COMPRESSION + 1


def spec_windows(spec: RenderSpec) -> list[Window]:
    """The windows a spec renders in: one, unless it is longer than its preset's window or its prompt changes."""
    w = spec.window
    if w is None:
        return [Window(0, 0, spec.num_frames, 0, 0, spec.audio_latent_frames)]
    return plan_windows(spec.num_frames, spec.fps, w.seconds, w.overlap, spec.prompt_changes())


def window_plan(spec: RenderSpec) -> list[dict]:
    """Each window as `validate --json` shows it: its frames, and the prompt it renders with (the negative prompt too
    where that changes over the clip), as the sidecar's `windows` record them."""
    return [w.as_dict() | window_prompt(spec, w) for w in spec_windows(spec)]


def window_prompt(spec: RenderSpec, w: Window) -> dict[str, str]:
    """The prompt window `w` renders with: the entry in force at its prompt_frame (and the negative's, where the
    negative prompt has a timeline)."""
    text, negative = spec.prompt_at(w.prompt_frame)
    return {"prompt": text} | ({"negative_prompt": negative} if spec.negative_prompt_timeline else {})


def owner(windows: list[Window], frame: int) -> int:
    """The window a pixel frame of the clip belongs to: the first that renders it (a frame in an overlap belongs
    to the earlier window, and reaches the later one through the held overlap)."""
    return next(w.index for w in windows if w.start <= frame < w.start + w.frames)


def audio_overlap(windows: list[Window], w: Window) -> int:
    """Audio latents window `w` shares with the window before it (0 for the first)."""
    if w.index == 0:
        return 0
    before = windows[w.index - 1]
    return before.audio_start + before.audio_latents - w.audio_start


def crossfade(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """The overlap's frames: window k's fading out into window k+1's (float, same shapes), linearly over the
    overlap, so neither window ends with a cut."""
    n = before.shape[0]
    t = ((np.arange(n, dtype=np.float32) + 1) / (n + 1)).reshape(n, 1, 1, 1)
    return before * (1 - t) + after * t
