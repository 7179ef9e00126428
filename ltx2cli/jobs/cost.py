"""A render's estimated cost, from its spec alone: what shards are balanced by.

The unit is token-steps: latent tokens x denoising steps x guidance passes, summed over every pass the engine
makes (each window of a long clip, both stages of a two-stage preset). It compares jobs with each other; it is not
seconds, and it leaves out what does not grow with steps (prompts, the decode, encoding the MP4) and attention's
quadratic share.
"""

from __future__ import annotations

from collections import Counter

from .guidance import Scales
from .spec import RenderSpec
from .windows import owner, spec_windows

SPATIAL_COMPRESSION = 32  # pixels per latent row/column (the video VAE's; patch size 1)


def render_cost(spec: RenderSpec) -> int:
    """Token-steps of one render (see the module's docstring)."""
    rows, cols = spec.height // SPATIAL_COMPRESSION, spec.width // SPATIAL_COMPRESSION
    passes = Scales.from_spec(spec.guidance).most_rows
    first = _steps(spec.sigmas, spec.steps)
    total = 0
    for frames, audio, guides in _windows(spec):
        latent_frames = (frames - 1) // 8 + 1 + guides  # each keyframe past frame 0 adds one latent frame of tokens
        if spec.two_stage:  # stage 1 at half the rows and columns (rounded up) with guidance, stage 2 refines once
            low = latent_frames * -(-rows // 2) * -(-cols // 2) + audio
            total += low * first * passes + (latent_frames * rows * cols + audio) * _steps(spec.stage2_sigmas, None)
        else:
            total += (latent_frames * rows * cols + audio) * first * passes
    return total


def _steps(sigmas: list[float] | None, steps: int | None) -> int:
    """Denoising steps of a schedule: its non-zero sigmas, else `steps` (the planner sets one of the two)."""
    return len([s for s in sigmas if s > 0]) if sigmas else steps or 0


def _windows(spec: RenderSpec) -> list[tuple[int, int, int]]:
    """(pixel frames, audio latents, guide keyframes) of each pass over the clip: one, or one per window."""
    guides = [kf.frame for kf in spec.keyframes if kf.frame != 0]
    if spec.window is None:
        return [(spec.num_frames, spec.audio_latent_frames, len(guides))]
    windows = spec_windows(spec)
    owned = Counter(owner(windows, f) for f in guides)
    return [(w.frames, w.audio_latents, owned[w.index]) for w in windows]
