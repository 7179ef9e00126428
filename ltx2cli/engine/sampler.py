"""The denoising loop: one plain function for every mode.

Modes differ only in the state they hand it: which tokens are generated (mask 1), held to a clean
latent (mask 0: the first-frame image at strength 1, lip-sync audio), or partly held (keyframes of
strength s have mask 1 - s). The model is one callable returning clean-latent estimates (x0); CFG,
STG and the per-token timesteps live in that callable, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch


@dataclass(frozen=True)
class Stream:
    """One modality's tokens (video or audio), packed as (batch, tokens, channels)."""

    x: torch.Tensor  # the current noisy latent
    clean: torch.Tensor  # conditioning latents, same shape (zeros where nothing conditions)
    mask: torch.Tensor  # (batch, tokens): 1 = generate, 0 = keep `clean`, between = partial
    positions: torch.Tensor  # RoPE coordinates the model sees for each token
    # (batch, tokens): 1 = the token gets the model's learned keyframe embedding (LTX-2.5); None = no such model
    keyframes: torch.Tensor | None = None


@dataclass(frozen=True)
class State:
    video: Stream
    audio: Stream


Denoise = Callable[[State, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]  # -> (video x0, audio x0)
Step = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Callback = Callable[[dict[str, Any]], None]


def euler(x: torch.Tensor, denoised: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """Flow-matching Euler step, written as diffusers' scheduler computes it (velocity, then x + dt * v).

    For a token held at noise level sigma * m the same update is exact, so one formula serves all.
    """
    velocity = (x - denoised) / sigma
    return x + (sigma_next - sigma) * velocity


def noised(stream: Stream, noise: torch.Tensor, sigma: torch.Tensor) -> Stream:
    """Start a stream at noise level sigma: each token at sigma * mask, held tokens exactly clean."""
    level = (stream.mask * sigma).unsqueeze(-1)
    return replace(stream, x=noise * level + stream.clean * (1 - level))


def _hold(denoised: torch.Tensor, stream: Stream) -> torch.Tensor:
    m = stream.mask.unsqueeze(-1).to(denoised.dtype)
    return denoised * m + stream.clean * (1 - m)


def sample(
    denoise: Denoise, state: State, sigmas: torch.Tensor, *, step: Step = euler, callback: Callback | None = None
) -> State:
    """Run the schedule `sigmas` (decreasing, ending at 0) from `state`; returns the final state."""
    for i in range(len(sigmas) - 1):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        video_x0, audio_x0 = denoise(state, sigma)
        video_x0, audio_x0 = _hold(video_x0, state.video), _hold(audio_x0, state.audio)
        state = State(
            video=replace(state.video, x=step(state.video.x, video_x0, sigma, sigma_next)),
            audio=replace(state.audio, x=step(state.audio.x, audio_x0, sigma, sigma_next)),
        )
        if callback is not None:
            callback(
                {"i": i, "sigma": sigma, "sigma_next": sigma_next, "denoised": video_x0, "audio_denoised": audio_x0}
            )
    return state
