"""Which timesteps drive the audio<->video cross-attention AdaLN: Lightricks' rule, for every LTX-2 release.

Each stream's a2v/v2a scale and shift come from its own per-token timesteps; the gate on what a stream takes from
the other comes from the OTHER stream's sigma (scaled like the rest: x cross_attn/timestep scale multipliers), a
frozen stream's sigma being 0 (ltx-core `transformer_args.py`, `_prepare_cross_attention_timestep`, since
Lightricks/LTX-2 203d484, 2026-05-28; frozen sigma 0: `ltx_pipelines.utils.helpers.modality_from_latent_state`,
2362161; ComfyUI's LTXAVModel the same, Comfy-Org/ComfyUI PR #14097). diffusers' `use_cross_timestep` switches
scale/shift and gate together, so neither of its settings is this rule: a hook on the transformer's forward forces
`False` (scale/shift from the own timesteps) and hooks on the two gate AdaLNs feed them the other stream's sigma.
Installed once per loaded transformer (Models.__post_init__), so whatever calls it -- ltx2's sampler, or a
diffusers pipeline built from the same components -- runs under the same rule.
"""

from __future__ import annotations

from typing import Any

from ...jobs.releases import AV_CROSS_TIMESTEPS

RULE = AV_CROSS_TIMESTEPS
_HOOKS = "_ltx2_av_timestep_hooks"  # attribute on the transformer holding its hook handles


def apply_rule(transformer: Any) -> None:
    """Make `transformer` (diffusers' LTX2VideoTransformer3DModel) follow the rule on every forward; idempotent."""
    if getattr(transformer, _HOOKS, None):
        return
    config = transformer.config
    factor = config.cross_attn_timestep_scale_multiplier / config.timestep_scale_multiplier
    sigmas: dict[str, Any] = {}  # the forward under way: each stream's sigma (timestep units), per row

    def on_forward(_module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        sigmas.clear()
        if kwargs.get("sigma") is None:  # a bare call (FLOP counts, shapes): diffusers' own modulation, untouched
            return args, kwargs
        sigmas["video"] = kwargs["sigma"]
        sigmas["audio"] = kwargs["audio_sigma"] if kwargs.get("audio_sigma") is not None else kwargs["sigma"]
        return args, {**kwargs, "use_cross_timestep": False}

    def gate_from(stream: str):
        def on_gate(_module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
            if not sigmas:
                return args, kwargs
            return (sigmas[stream].flatten() * factor, *args[1:]), kwargs

        return on_gate

    setattr(transformer, _HOOKS, [
        transformer.register_forward_pre_hook(on_forward, with_kwargs=True),
        # a2v: the gate on what the video takes from the audio follows the audio's noise level; v2a the reverse
        transformer.av_cross_attn_video_a2v_gate.register_forward_pre_hook(gate_from("audio"), with_kwargs=True),
        transformer.av_cross_attn_audio_v2a_gate.register_forward_pre_hook(gate_from("video"), with_kwargs=True),
    ])  # fmt: skip


def remove_rule(transformer: Any) -> None:
    """Back to diffusers' own modulation (its `use_cross_timestep` decides): for tests measuring the difference."""
    for handle in getattr(transformer, _HOOKS, None) or ():
        handle.remove()
    setattr(transformer, _HOOKS, None)
