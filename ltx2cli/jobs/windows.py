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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .timeline import audio_latent_count


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


def window_frames(seconds: float, fps: float) -> int:
    """A window's pixel frames: the 8k+1 nearest `seconds` (at least 17)."""
    return max(2, round(seconds * fps / 8)) * 8 + 1


def plan_windows(num_frames: int, fps: float, seconds: float, overlap: int) -> list[Window]:
    """The windows of a clip of `num_frames` (8k+1) rendered frames; one window when it fits in one."""
    size = window_frames(seconds, fps)
    if num_frames <= size:
        return [Window(0, 0, num_frames, 0, 0, audio_latent_count(num_frames, fps))]
    shared = 8 * overlap + 1
    if shared >= size - 8:
        raise ValueError(f"an overlap of {overlap} latent frames leaves nothing new in a {seconds:g}-s window")
    windows, start = [], 0
    while True:
        frames = min(size, num_frames - start)
        audio_start = round(start / fps * 25)
        audio = audio_latent_count(start + frames, fps) - audio_start
        windows.append(Window(len(windows), start, frames, shared if start else 0, audio_start, audio))
        if start + frames >= num_frames:
            return windows
        start += frames - shared


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
