"""What a render hands back (frames, sound, the final latents, timings, memory notes), where its frames go as they
are decoded (FramesOut), and the small counters and conversions every kind of render shares."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..jobs.spec import RenderSpec
from ..media.frame_store import FrameStore
from ..media.video import VideoWriter
from .sampler import State
from .window_checkpoint import WindowCheckpoint

OnStep = Callable[[int, int], None]  # (steps done, total)
OnStage = Callable[[str], None]  # "prompt", "denoise", "decode" as each begins
DEFAULT_STEPS = 30


@dataclass
class Rendered:
    frames: np.ndarray | FrameStore | None  # (output_frames, H, W, 3) uint8; a long clip's on disk; None: in `video`
    audio: np.ndarray  # (channels, samples) float32
    sample_rate: int
    state: State | None  # the final sampler state (guide tokens included), normalised latents; None once dropped
    timings: dict[str, float] = field(default_factory=dict)
    base_tokens: int = 0  # video tokens of the clip itself; guide tokens follow
    memory_fallbacks: list[str] = field(default_factory=list)  # what was given up after running out of memory
    gpu_peak_gib: float | None = None  # torch.cuda.max_memory_allocated over the render (weights included)
    windows: list[dict] = field(default_factory=list)  # jobs.windows: the windows a long clip was rendered in
    checkpoint: WindowCheckpoint | None = None  # its finished windows on disk: discard once the clip is delivered
    memory_lessons: list[str] = field(default_factory=list)  # earlier jobs' out-of-memory retries it followed
    video: VideoWriter | None = None  # the MP4 its frames were encoded into as they were decoded: finish it
    gpu_phases: dict[str, dict[str, float]] = field(default_factory=dict)  # engine.memory.peaks, per phase

    @property
    def video_latents(self) -> torch.Tensor:
        assert self.state is not None
        return self.state.video.x[:, : self.base_tokens]

    @property
    def audio_latents(self) -> torch.Tensor:
        assert self.state is not None
        return self.state.audio.x


class Steps:
    """Counts denoising steps across stages (and windows) for the progress bar."""

    def __init__(self, on_step: OnStep | None, total: int):
        self.on_step, self.total, self.done = on_step, total, 0

    def callback(self, _info: dict) -> None:
        self.done += 1
        if self.on_step is not None:
            self.on_step(self.done, self.total)


def step_count(spec: RenderSpec) -> int:
    """Denoising steps of one pass over a spec's grid (both stages of a two-stage preset)."""
    first = len([s for s in spec.sigmas if s > 0]) if spec.sigmas else spec.steps or DEFAULT_STEPS
    second = len([s for s in spec.stage2_sigmas or [] if s > 0]) if spec.two_stage else 0
    return first + second


def to_u8(frames: np.ndarray | torch.Tensor) -> np.ndarray:
    """Float frames in [0, 1] -> uint8; a tensor is converted where it is (on the GPU: a quarter of the bytes to copy
    back, and no host core busy while the next chunk decodes), with the same float32 rounding as numpy's."""
    if isinstance(frames, torch.Tensor):
        return (frames * 255).round().to(torch.uint8).cpu().numpy()
    return (frames * 255).round().astype(np.uint8)


class FramesOut:
    """Where a render's uint8 frames go, in order, as they are decoded, cut at the clip's length (`limit`): to the
    MP4 being written (media.video.VideoWriter), to a FrameStore (a long clip's checkpoint, or its frames when no MP4
    is written), or, where neither is given, kept in memory."""

    def __init__(self, limit: int, video: VideoWriter | None = None, store: FrameStore | None = None):
        self.limit, self.video, self.store = limit, video, store
        self.count = len(store) if store is not None else 0  # a resumed clip's store holds its finished windows
        self._held: list[np.ndarray] | None = [] if video is None and store is None else None

    def append(self, frames: np.ndarray) -> None:
        frames = frames[: max(self.limit - self.count, 0)]
        if not len(frames):
            return
        self.count += len(frames)
        if self.store is not None:
            self.store.append(frames)
        if self.video is not None:
            self.video.append(frames)
        if self._held is not None:
            self._held.append(frames)

    def frames(self) -> np.ndarray | FrameStore | None:
        """What Rendered.frames holds: the store, the frames kept in memory, or None (they are in the MP4 only)."""
        if self.store is not None:
            return self.store
        if self._held is not None:
            return np.concatenate(self._held) if self._held else np.zeros((0, 0, 0, 3), np.uint8)
        return None


def lap(t0: float) -> float:
    return round(time.perf_counter() - t0, 4)
