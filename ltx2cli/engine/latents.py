"""Pixels and sound <-> the normalised, packed latent tokens the transformer sees, and their RoPE coordinates.

Packing, normalisation and coordinates use diffusers' LTX-2 helpers themselves, so our tokens are the
pipelines' tokens bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import LTX2ImageToVideoPipeline as _Pipe

from ..media.mel import SAMPLE_RATE, log_mel
from .models.loaded import Models


@dataclass(frozen=True)
class Grid:
    """The latent grid of one render: pixel frames and size -> latent frames, rows, columns, audio latents."""

    num_frames: int  # pixel frames rendered (8k+1)
    height: int  # pixels
    width: int
    fps: float
    audio_latents: int

    @property
    def frames(self) -> int:
        return (self.num_frames - 1) // 8 + 1

    @property
    def rows(self) -> int:
        return self.height // 32

    @property
    def cols(self) -> int:
        return self.width // 32

    @property
    def frame_tokens(self) -> int:
        return self.rows * self.cols

    @property
    def video_tokens(self) -> int:
        return self.frames * self.frame_tokens


def encode_image(models: Models, frame: np.ndarray) -> torch.Tensor:
    """One RGB frame -> packed, normalised latent tokens (1, rows*cols, C), float32."""
    return encode_frames(models, np.asarray(frame)[None])


def encode_frames(models: Models, frames: np.ndarray) -> torch.Tensor:
    """RGB frames (8k+1, H, W, 3), uint8 or float 0..255 -> packed, normalised latent tokens (1, (k+1)*rows*cols,
    C), float32: the first frame is the VAE's causal single frame, as at the start of any clip."""
    vae = models.vae
    x = torch.from_numpy(np.array(frames)).to(torch.float32).permute(3, 0, 1, 2)  # a writable copy: (3, n, H, W)
    x = (x / 127.5 - 1.0)[None].to(models.device, models.dtype)  # the VAE's input range, [-1, 1]
    latent = vae.encode(x).latent_dist.mode()
    latent = _Pipe._normalize_latents(latent.float(), vae.latents_mean.float(), vae.latents_std.float())
    return _Pipe._pack_latents(latent)


def encode_audio(models: Models, waveform: np.ndarray, count: int) -> torch.Tensor:
    """16 kHz stereo samples (2, n) -> packed, normalised audio tokens (1, count, C), float32.

    The audio VAE is causal in time, so encoding the whole track and cutting to `count` latents equals
    encoding just the clip; a track shorter than the clip has been padded with silence by the caller.
    """
    audio_vae = models.audio_vae
    mel = log_mel(torch.from_numpy(waveform).to(models.device), SAMPLE_RATE)
    latent = audio_vae.encode(mel.to(models.dtype)).latent_dist.mode().float()
    if latent.shape[2] < count:
        raise ValueError(f"audio gives {latent.shape[2]} latents, the clip needs {count}")
    packed = _Pipe._pack_audio_latents(latent[:, :, :count])
    return _Pipe._normalize_audio_latents(packed, audio_vae.latents_mean.float(), audio_vae.latents_std.float())


def video_coords(models: Models, grid: Grid) -> torch.Tensor:
    """RoPE coordinates of the base grid (1, 3, tokens, 2): time in seconds (causal first frame), space in pixels."""
    return models.transformer.rope.prepare_video_coords(
        1, grid.frames, grid.rows, grid.cols, models.device, fps=grid.fps
    )


def guide_coords(models: Models, grid: Grid, pixel_frame: int) -> torch.Tensor:
    """Coordinates of one appended guide frame at an exact pixel frame: time [p, p+1) / fps, the base frame's space.

    This is how diffusers' LTX2ConditionPipeline places a single-image keyframe (its `_prepare_keyframe_coords`),
    except that any pixel frame is allowed, not only the first pixel of a latent frame.
    """
    base = video_coords(models, Grid(1, grid.height, grid.width, grid.fps, grid.audio_latents))
    time = torch.tensor([pixel_frame, pixel_frame + 1], dtype=torch.float32, device=base.device) / grid.fps
    base[:, 0] = time.to(base.dtype).expand_as(base[:, 0])
    return base


def audio_coords(models: Models, grid: Grid) -> torch.Tensor:
    return models.transformer.audio_rope.prepare_audio_coords(1, grid.audio_latents, models.device)


def decode_video(models: Models, tokens: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Base-grid tokens (1, frames*rows*cols, C) -> float frames (num_frames, H, W, 3) in [0, 1], decoded whole."""
    return decode_latent(models, video_latent(models, tokens, grid))


def video_latent(models: Models, tokens: torch.Tensor, grid: Grid) -> torch.Tensor:
    """Base-grid tokens -> the VAE's latent (1, C, frames, rows, cols), denormalised."""
    vae = models.vae
    latent = _Pipe._unpack_latents(tokens, grid.frames, grid.rows, grid.cols)
    return _Pipe._denormalize_latents(latent, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)


def decode_latent(models: Models, latent: torch.Tensor) -> torch.Tensor:
    """Latent frames (1, C, f, rows, cols) -> float frames (8(f - 1) + 1, H, W, 3) in [0, 1]: the first latent
    frame gives one pixel frame (the causal first frame), each later one eight."""
    vae = models.vae
    video = vae.decode(latent.to(vae.dtype), None, return_dict=False)[0]
    return (video[0].float() * 0.5 + 0.5).clamp(0, 1).permute(1, 2, 3, 0)


def decode_audio(models: Models, tokens: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Audio tokens (1, L, C) -> waveform (channels, samples) at the vocoder's rate, and that rate."""
    audio_vae = models.audio_vae
    latent = _Pipe._denormalize_audio_latents(tokens, audio_vae.latents_mean, audio_vae.latents_std)
    latent = _Pipe._unpack_audio_latents(latent, tokens.shape[1], num_mel_bins=models.audio_latent_mel_bins)
    mel = audio_vae.decode(latent.to(audio_vae.dtype), return_dict=False)[0]
    wave = models.vocoder(mel.to(models.vocoder.dtype))
    return wave[0].float(), int(models.vocoder.config.output_sampling_rate)
