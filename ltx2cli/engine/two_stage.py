"""Two-stage presets: stage 1 denoises at half size with guidance, the latent upsampler doubles it, and stage 2
refines at full size with the distilled schedule. What the stages share with one-pass renders is in render.py;
what only the two-stage path needs is here."""

from __future__ import annotations

from dataclasses import replace

import torch

from . import latents as lat
from .conditions import Condition, FirstFrame, GuideFrame, HeldFrames
from .models.loaded import Models


def half_grid(grid: lat.Grid) -> lat.Grid:
    """Stage 1's grid: half the latent rows and columns, rounded up (the upsampled result is cropped back)."""
    rows, cols = -(-grid.rows // 2), -(-grid.cols // 2)
    return lat.Grid(grid.num_frames, rows * 32, cols * 32, grid.fps, grid.audio_latents)


def shrink(conditions: list[Condition], grid: lat.Grid) -> list[Condition]:
    """The same conditions with their images cover-fitted to stage 1's size, by the resize that fitted them to
    the render size (ltx-pipelines fits stage 1's images from the source; here from the render-size image)."""
    from ..media.image import cover_crop

    def shrunk(c: Condition) -> Condition:
        if isinstance(c, FirstFrame | GuideFrame):
            return replace(c, image=cover_crop(c.image, grid.width, grid.height))
        if isinstance(c, HeldFrames):
            return replace(c, frames=cover_crop(c.frames, grid.width, grid.height))
        return c

    return [shrunk(c) for c in conditions]


def upsample(models: Models, tokens: torch.Tensor, low: lat.Grid, grid: lat.Grid) -> torch.Tensor:
    """Stage-1 tokens -> the latent upsampler (it works on raw latents) -> normalised full-size tokens."""
    from diffusers import LTX2ImageToVideoPipeline as P

    if models.upsampler is None:
        from ..errors import ModelError
        from ..weights.source import UPSAMPLER_DIR

        raise ModelError(
            f"two-stage presets need the latent upsampler ({UPSAMPLER_DIR}/ in a diffusers folder, a spatial "
            f"upscaler in latent_upscale_models/ of a ComfyUI root; model {models.path}); "
            "use a one-stage preset (fast, balanced) or add the upsampler weights"
        )
    vae = models.vae
    latent = P._unpack_latents(tokens, low.frames, low.rows, low.cols)
    latent = P._denormalize_latents(latent, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    big = models.upsampler(latent.to(models.upsampler.dtype)).float()[..., : grid.rows, : grid.cols]
    big = P._normalize_latents(big, vae.latents_mean.float(), vae.latents_std.float(), vae.config.scaling_factor)
    return P._pack_latents(big)
