"""Noise schedules, computed by diffusers' own FlowMatchEulerDiscreteScheduler from the model's config."""

from __future__ import annotations

import numpy as np
import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.pipelines.ltx2.pipeline_ltx2_image2video import calculate_shift

# ltx-core's LTX2Scheduler (Lightricks/LTX-2 packages/ltx-core/src/ltx_core/components/schedulers.py @ 400fd31,
# unchanged since the release but for the default token count): always shifted by the token count and stretched to
# this terminal sigma, whatever the release. LTX-2.5's shipped scheduler config is its distilled one (no dynamic
# shift, no terminal), which read as written gave 2.5's dev schedule plain linear sigmas.
TERMINAL = 0.1


def dev_sigmas(config: dict, steps: int, video_tokens: int) -> torch.Tensor:
    """The dev model's schedule, as ltx-core's LTX2Scheduler computes it: `steps` linear sigmas, shifted by mu
    from the clip's packed token count (base/max shift and sequence lengths from the config), stretched so the last
    nonzero sigma is TERMINAL; computed by diffusers' own scheduler."""
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        config, use_dynamic_shifting=True, shift_terminal=TERMINAL, time_shift_type="exponential"
    )
    mu = calculate_shift(
        video_tokens,
        config.get("base_image_seq_len", 1024),
        config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.95),
        config.get("max_shift", 2.05),
    )
    scheduler.set_timesteps(sigmas=np.linspace(1.0, 1 / steps, steps), mu=mu)
    return scheduler.sigmas.to(torch.float32)


def fixed_sigmas(config: dict, sigmas: list[float]) -> torch.Tensor:
    """A given sigma list (the distilled schedules) used as written: no shift, no terminal stretch."""
    values = [s for s in sigmas if s > 0]  # the scheduler appends the final 0 itself
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        config, use_dynamic_shifting=False, shift_terminal=None, shift=1.0
    )
    scheduler.set_timesteps(sigmas=values)
    return scheduler.sigmas.to(torch.float32)
