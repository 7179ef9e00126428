"""What a render is conditioned on, as small frozen objects. Each `apply(streams) -> streams` holds some tokens
to clean latents (mask 1 - strength: 0 = kept exactly, 1 = generated) at their exact time, or appends tokens.
A render is the list of conditions of one grid plus the sampler: modes and windows differ only in their lists.

    lip-sync        FirstFrame, GuideFrame..., Voice
    audio-gen       FirstFrame, GuideFrame...
    a later window  HeldFrames (the previous window's tail), GuideFrame..., FrozenAudio (its slice of the voice)
                    or HeldAudio (the previous window's sound over the overlap)

Appended tokens (guide frames) follow the grid's own; `clip_tokens` is the one place they are cut off again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np
import torch

from . import latents as lat
from .sampler import State, Stream


@dataclass(frozen=True)
class Streams:
    """The streams of one grid while conditions are applied (clean latents; noise comes after)."""

    models: Any
    grid: lat.Grid
    video: Stream
    audio: Stream


class Condition(Protocol):
    def apply(self, s: Streams) -> Streams: ...


def _hold(stream: Stream, tokens: torch.Tensor, strength: float) -> Stream:
    """`tokens` replace the stream's first tokens, held at `strength`."""
    clean, mask = stream.clean.clone(), stream.mask.clone()
    n = tokens.shape[1]
    clean[:, :n] = tokens
    mask[:, :n] = 1 - strength
    return replace(stream, x=clean, clean=clean, mask=mask)


@dataclass(frozen=True)
class FirstFrame:
    """An image as the clip's first frame (latent frame 0: the VAE's causal single frame)."""

    image: np.ndarray
    strength: float

    def apply(self, s: Streams) -> Streams:
        return replace(s, video=_hold(s.video, lat.encode_image(s.models, self.image), self.strength))


@dataclass(frozen=True)
class HeldFrames:
    """Pixel frames (8k+1) at the start of the grid: a window's overlap with the window before."""

    frames: np.ndarray
    strength: float

    def apply(self, s: Streams) -> Streams:
        return replace(s, video=_hold(s.video, lat.encode_frames(s.models, self.frames), self.strength))


@dataclass(frozen=True)
class GuideFrame:
    """An image at an exact pixel frame: one latent frame of tokens appended with that frame's RoPE time."""

    frame: int
    image: np.ndarray
    strength: float

    def apply(self, s: Streams) -> Streams:
        v, m, grid = s.video, s.models, s.grid
        tokens = lat.encode_image(m, self.image)
        mask = torch.full((1, tokens.shape[1]), 1 - self.strength, device=m.device)
        clean = torch.cat([v.clean, tokens], dim=1)
        video = replace(
            v,
            x=clean,
            clean=clean,
            mask=torch.cat([v.mask, mask], dim=1),
            positions=torch.cat([v.positions, lat.guide_coords(m, grid, self.frame)], dim=2),
        )
        return replace(s, video=video)


@dataclass(frozen=True)
class Voice:
    """A voice (16 kHz stereo samples, padded to the clip) encoded and frozen: lip-sync in one pass."""

    waveform: np.ndarray

    def apply(self, s: Streams) -> Streams:
        return FrozenAudio(lat.encode_audio(s.models, self.waveform, s.grid.audio_latents)).apply(s)


@dataclass(frozen=True)
class FrozenAudio:
    """Audio latents kept exactly for the whole grid: a window's slice of the clip's voice."""

    latents: torch.Tensor

    def apply(self, s: Streams) -> Streams:
        a = s.audio
        mask = torch.zeros(1, self.latents.shape[1], device=self.latents.device)
        return replace(s, audio=replace(a, x=self.latents, clean=self.latents, mask=mask))


@dataclass(frozen=True)
class HeldAudio:
    """Audio latents at the start of the grid, held at `strength`: generated sound carried into a window."""

    latents: torch.Tensor
    strength: float

    def apply(self, s: Streams) -> Streams:
        return replace(s, audio=_hold(s.audio, self.latents, self.strength))


def streams(
    models: Any, grid: lat.Grid, conditions: list[Condition], video_init: Any = None, audio_init: Any = None
) -> State:
    """The clean streams of `grid` with every condition applied, in order (`*_init`: latents to refine instead of
    generating from nothing).

    On a model with the learned keyframe embedding (LTX-2.5), the first latent frame's tokens are marked for it,
    conditioned or not: the causal VAE encodes that frame from one pixel frame. Guide tokens (given content) are
    not marked. Both as ltx-core (`VideoLatentTools._first_frame_keyframes_mask`; `VideoConditionByKeyframeIndex`:
    `marked=False`) and diffusers' DFR pipeline do; only generated keyframe slots, which ltx2 does not make, are
    marked besides.
    """
    device, config = models.device, models.transformer.config
    n = grid.video_tokens
    video = torch.zeros(1, n, config.in_channels, device=device) if video_init is None else video_init.clone()
    audio = torch.zeros(1, grid.audio_latents, config.audio_in_channels, device=device)
    if audio_init is not None:
        audio = audio_init.clone()
    s = Streams(
        models,
        grid,
        Stream(video, video, torch.ones(1, n, device=device), lat.video_coords(models, grid)),
        Stream(audio, audio, torch.ones(1, grid.audio_latents, device=device), lat.audio_coords(models, grid)),
    )
    for condition in conditions:
        s = condition.apply(s)
    video = s.video
    if models.keyframe_embedding:
        marks = torch.zeros(1, video.clean.shape[1], device=device)
        marks[:, : grid.frame_tokens] = 1
        video = replace(video, keyframes=marks)
    return State(video=video, audio=s.audio)


def clip_tokens(tokens: torch.Tensor, grid: lat.Grid) -> torch.Tensor:
    """The grid's own video tokens, without the guide tokens conditions appended."""
    return tokens[:, : grid.video_tokens]
