"""The model as the sampler sees it: state + sigma -> guided clean-latent estimates (x0) for video and audio.

CFG, STG and modality-isolation guidance each need the transformer run on a differently conditioned copy of
the same tokens. diffusers runs up to three forwards per step (2B for CFG, then B for STG, B for modality);
here every pass is one row group of a single batched forward. STG perturbs only its rows (the transformer's
per-sample `perturbation_mask`); modality isolation zeroes the a2v/v2a cross-attention output of only its rows
(a hook), which adds exactly nothing, as skipping the attention does. The guidance arithmetic then follows
diffusers' LTX-2 pipelines term for term: x0 = x - v * sigma, deltas added in the order cfg, stg, modality,
and the std-ratio rescale.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from ..jobs.guidance import Scales
from .models.loaded import Models
from .sampler import State


@dataclass(frozen=True)
class Prompt:
    """Connector outputs for one prompt (rows: [positive] or [negative, positive])."""

    video: torch.Tensor  # (rows, T, D) text tokens the video stream cross-attends to
    audio: torch.Tensor
    mask: torch.Tensor  # (rows, T)

    @property
    def has_negative(self) -> bool:
        return self.video.shape[0] == 2

    def positive(self) -> Prompt:
        return Prompt(self.video[-1:], self.audio[-1:], self.mask[-1:])

    def row(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.video[i : i + 1], self.audio[i : i + 1], self.mask[i : i + 1]


# Row groups of the batched forward; "cond" is always present.
COND, UNCOND, STG, ISOLATED = "cond", "uncond", "stg", "isolated"


def passes(scales: Scales, models: Models) -> list[str]:
    out = [COND]
    if scales.uses_cfg:
        out.append(UNCOND)
    # Without perturbable attention the STG pass IS the cond pass (diffusers still runs it; its delta is ~0).
    if scales.uses_stg and models.perturbed_attn:
        out.append(STG)
    if scales.uses_modality:
        out.append(ISOLATED)
    return out


@contextmanager
def _isolate_rows(models: Models, keep: torch.Tensor | None) -> Iterator[None]:
    """Scale every block's a2v / v2a cross-attention output by `keep` (rows, 1, 1): 0 = modality isolated."""
    if keep is None:
        yield
        return
    hooks = []
    for block in models.transformer.transformer_blocks:
        for attn in (block.audio_to_video_attn, block.video_to_audio_attn):
            hooks.append(attn.register_forward_hook(lambda _m, _i, out: out * keep.to(out.dtype)))
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


class GuidedDenoiser:
    """Callable(state, sigma) -> (video x0, audio x0) for `sample`: one transformer forward per step."""

    def __init__(self, models: Models, prompt: Prompt, scales: Scales, fps: float):
        if scales.uses_cfg and not prompt.has_negative:
            raise ValueError("CFG needs the negative prompt encoded")
        self.models, self.prompt, self.scales, self.fps = models, prompt, scales, fps
        self.passes = passes(scales, models)
        n = len(self.passes)
        rows = [prompt.row(0 if (p == UNCOND) else prompt.video.shape[0] - 1) for p in self.passes]
        self.text_video = torch.cat([r[0] for r in rows])
        self.text_audio = torch.cat([r[1] for r in rows])
        self.text_mask = torch.cat([r[2] for r in rows])
        device = models.device
        self.perturb = None
        if STG in self.passes:
            self.perturb = torch.tensor([0.0 if p == STG else 1.0 for p in self.passes], device=device)
        self.keep = None
        if ISOLATED in self.passes:
            self.keep = torch.tensor([0.0 if p == ISOLATED else 1.0 for p in self.passes], device=device)[:, None, None]
        self.rows = n

    def __call__(self, state: State, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        models, n = self.models, self.rows
        dtype = self.text_video.dtype
        video, audio = state.video, state.audio
        t = sigma * 1000  # the transformer's timestep units (diffusers' scheduler: timesteps = sigmas * 1000)
        video_t = (t * video.mask).repeat(n, 1)  # per token: held tokens see their own (lower) noise level
        audio_t = (t * audio.mask).repeat(n, 1)
        # Each stream's sigma, 0 for a frozen one (nothing left to generate): the prompt AdaLN's and the other
        # stream's a2v/v2a gate's input (engine.models.av_timesteps)
        video_sigma = (t * video.mask.amax(dim=1)).repeat(n)
        audio_sigma = (t * audio.mask.amax(dim=1)).repeat(n)
        keyframes = None if video.keyframes is None else video.keyframes.repeat(n, 1).unsqueeze(-1).to(dtype)
        with _isolate_rows(models, self.keep):
            v_video, v_audio = models.transformer(
                hidden_states=video.x.repeat(n, 1, 1).to(dtype),
                audio_hidden_states=audio.x.repeat(n, 1, 1).to(dtype),
                encoder_hidden_states=self.text_video,
                audio_encoder_hidden_states=self.text_audio,
                timestep=video_t,
                audio_timestep=audio_t,
                sigma=video_sigma,
                audio_sigma=audio_sigma,
                encoder_attention_mask=self.text_mask,
                audio_encoder_attention_mask=self.text_mask,
                fps=self.fps,
                video_coords=video.positions.repeat(n, 1, 1, 1),
                audio_coords=audio.positions.repeat(n, 1, 1, 1),
                video_keyframes_mask=keyframes,
                spatio_temporal_guidance_blocks=list(self.scales.stg_blocks) if self.perturb is not None else None,
                perturbation_mask=self.perturb,
                return_dict=False,
            )
        x0_video = dict(zip(self.passes, (video.x - v_video.float() * sigma).chunk(n), strict=True))
        x0_audio = dict(zip(self.passes, (audio.x - v_audio.float() * sigma).chunk(n), strict=True))
        s = self.scales
        return (
            _guide(x0_video, s.cfg, s.stg, s.modality, s.rescale),
            _guide(x0_audio, s.audio_cfg, s.audio_stg, s.audio_modality, s.audio_rescale),
        )


def _guide(x0: dict[str, torch.Tensor], cfg: float, stg: float, modality: float, rescale: float) -> torch.Tensor:
    cond = x0[COND]
    guided = cond
    if UNCOND in x0:
        guided = guided + (cfg - 1) * (cond - x0[UNCOND])
    if STG in x0:
        guided = guided + stg * (cond - x0[STG])
    if ISOLATED in x0:
        guided = guided + (modality - 1) * (cond - x0[ISOLATED])
    if rescale > 0 and guided is not cond:
        # diffusers' rescale_noise_cfg: match the std of the conditional estimate (arXiv 2305.08891, 3.4)
        ratio = cond.std(dim=(1, 2), keepdim=True) / guided.std(dim=(1, 2), keepdim=True)
        guided = rescale * (guided * ratio) + (1 - rescale) * guided
    return guided
