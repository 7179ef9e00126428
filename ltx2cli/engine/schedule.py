"""Noise schedules, computed by diffusers' own FlowMatchEulerDiscreteScheduler from the model's config."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.ltx2.pipeline_ltx2_image2video import calculate_shift


def dev_sigmas(config: dict, steps: int, video_tokens: int) -> torch.Tensor:
    """The dev model's schedule: `steps` linear sigmas, shifted for the token count (as LTX-2's pipelines do)."""
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(config)
    mu = calculate_shift(
        video_tokens,
        config.get("base_image_seq_len", 1024),
        config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.95),
        config.get("max_shift", 2.05),
    )
    scheduler.set_timesteps(
        sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu if config.get("use_dynamic_shifting") else None
    )
    return scheduler.sigmas.to(torch.float32)


def fixed_sigmas(config: dict, sigmas: list[float]) -> torch.Tensor:
    """A given sigma list (the distilled schedules) used as written: no shift, no terminal stretch."""
    values = [s for s in sigmas if s > 0]  # the scheduler appends the final 0 itself
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        config, use_dynamic_shifting=False, shift_terminal=None, shift=1.0
    )
    scheduler.set_timesteps(sigmas=values)
    return scheduler.sigmas.to(torch.float32)
