"""What a render hands back (frames, sound, the final latents, timings, memory notes), and the small counters and
conversions every kind of render shares."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..jobs.spec import RenderSpec
from ..media.frame_store import FrameStore
from .models.loaded import Models
from .sampler import State
from .window_checkpoint import WindowCheckpoint

OnStep = Callable[[int, int], None]  # (steps done, total)
OnStage = Callable[[str], None]  # "prompt", "denoise", "decode" as each begins
DEFAULT_STEPS = 30


@dataclass
class Rendered:
    frames: np.ndarray | FrameStore  # (output_frames, H, W, 3) uint8; a long clip's on disk
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


def peak_gib(m: Models) -> float | None:
    """torch's peak GPU memory since the render began (weights included); None on a CPU."""
    if torch.device(m.device).type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(m.device) / 2**30, 2)


def to_u8(frames: np.ndarray) -> np.ndarray:
    return (frames * 255).round().astype(np.uint8)


def lap(t0: float) -> float:
    return round(time.perf_counter() - t0, 4)
