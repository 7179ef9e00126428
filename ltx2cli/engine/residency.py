"""Which component is on the GPU in which phase of a render, chosen per GPU size: the memory plan.

A plan is a row of the table below, fastest first; `choose` takes the first row (and, within it, whole before
tiled decode, whole before chunked FFNs) whose estimated peak (estimate.py) fits the GPU's budget. What is off
the GPU waits in CPU memory (pinned, so moving it back is one fast copy) and is never read from disk again.

| plan | transformer | Gemma | connectors, VAE, audio |
| 80 | bf16, resident | bf16, resident | resident |
| 48 | bf16; off the GPU while prompts encode | bf16, on the GPU for the prompt phase only | resident |
| 32 | FP8 blocks; off the GPU while prompts encode | bf16, prompt phase only | resident |
| 24 | FP8 blocks, off for prompts and decode; may stream blocks | FP8 layers, prompts only | in their phases |

Rules (each unit-tested): FP8 only where bf16 does not fit; outside the 80-GB plan Gemma and the transformer are
never on the GPU together (a batch encodes all its prompts first, so the transformer moves once per batch); the
decode is tiled (spatially and in time) only when whole does not fit; then FFN chunks; streaming transformer
blocks from host memory (engine.streaming: a copy per block per step) last, the fewest that fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ..spec import RenderSpec
from ..timeline import audio_latent_count, timeline
from .estimate import GIB, GPU_OVERHEAD, Clip, Weights, activations, weights
from .ffn_chunks import FFN_CHUNKS
from .placement import PHASES, Plan, apply
from .vram import parse_vram

HEADROOM = 0.92  # of the card: the CUDA context and allocator slack live outside torch's accounting
STREAMED = (8, 16, 24, 32)  # transformer blocks a streaming plan may keep in host memory, fewest first


PLANS = (
    Plan("80"),
    Plan("48", text_encoder_resident=False, transformer_for_prompts=False),
    Plan("32", transformer_fp8=True, text_encoder_resident=False, transformer_for_prompts=False),
    Plan(
        "24", transformer_fp8=True, text_encoder_fp8=True, text_encoder_resident=False, transformer_for_prompts=False,
        transformer_for_decode=False, parts_resident=False, streams=True,
    ),
)  # fmt: skip


def peaks(plan: Plan, w: Weights, acts: Mapping[str, int]) -> dict[str, int]:
    """Estimated GPU bytes at each phase's peak: the weights on the GPU then, plus its activations."""
    out = {}
    fp8 = {"transformer": plan.transformer_fp8, "text_encoder": plan.text_encoder_fp8}
    streamed = max(plan.streamed_blocks - 1, 0) * w.block_bytes(plan.transformer_fp8)  # one is in at a time
    for phase in PHASES:
        on_gpu = plan.on_gpu(phase)
        resident = sum(w.bytes(c, fp8.get(c, False)) for c in on_gpu) - streamed * ("transformer" in on_gpu)
        out[phase] = resident + int(acts[phase] * GPU_OVERHEAD)
    return out


@dataclass(frozen=True)
class Choice:
    plan: Plan
    peaks: dict[str, int]  # by phase
    budget: int

    @property
    def peak(self) -> int:
        return max(self.peaks.values())

    @property
    def fits(self) -> bool:
        return self.peak <= self.budget

    def as_dict(self) -> dict:
        return {
            "plan": self.plan.label,
            "estimated_peak_gib": round(self.peak / GIB, 2),
            "budget_gib": round(self.budget / GIB, 2),
            "phases_gib": {k: round(v / GIB, 2) for k, v in self.peaks.items()},
        }


def budget(vram_gib: float) -> int:
    return int(vram_gib * HEADROOM * GIB)


def candidates(start: str | None = None) -> list[Plan]:
    """Every plan with its fallbacks, fastest first (from the plan named `start`, when given)."""
    plans = PLANS[[p.name for p in PLANS].index(start) :] if start else PLANS
    return [
        replace(p, tiled_decode=t, ffn_chunks=c, streamed_blocks=k)
        for p in plans
        for k in ((0, *STREAMED) if p.streams else (0,))
        for t in (False, True)
        for c in (1, FFN_CHUNKS)
    ]


def choose(configs: Mapping[str, dict], clips: list[Clip], vram_gib: float, start: Plan | None = None) -> Choice:
    """The fastest plan whose every phase fits `vram_gib` for every clip; else the leanest, with fits False.
    `start`: no plan faster than this one (models already following it cannot go back without reloading)."""
    w = weights(configs)
    limit = budget(vram_gib)
    order = candidates()
    best = None
    for plan in order[order.index(start) if start in order else 0 :]:
        worst = _worst(plan, w, configs, clips)
        best = Choice(plan, worst, limit)
        if best.fits:
            return best
    assert best is not None
    return best


def _worst(plan: Plan, w: Weights, configs: Mapping[str, dict], clips: list[Clip]) -> dict[str, int]:
    out = dict.fromkeys(PHASES, 0)
    for clip in set(clips):
        for phase, b in peaks(plan, w, activations(configs, clip, plan.tiled_decode, plan.ffn_chunks)).items():
            out[phase] = max(out[phase], b)
    return out


def vram_gib(choice: str | None) -> float | None:
    """--vram / $LTX2_VRAM in GiB; auto (or unset) -> this GPU's total, None without a GPU (nothing to plan: the
    CPU renders with everything in memory)."""
    gib = parse_vram(choice)
    if gib is not None:
        return gib
    import torch

    return torch.cuda.mem_get_info()[1] / GIB if torch.cuda.is_available() else None


def preset_clip(preset, seconds: float, fps: float = 30.0) -> Clip:
    """The clip a preset renders at its own size for `seconds` (guidance rows from its guidance)."""
    from .guidance import Scales

    tl = timeline(seconds, fps)
    width, height = preset.size
    rows = Scales.from_spec(preset.full_guidance).most_rows
    return Clip(width, height, tl.num_frames, tl.audio_latent_frames, rows, two_stage=preset.two_stage)


def longest_fitting(configs: Mapping[str, dict], clip: Clip, vram_gib: float, fps: float) -> float | None:
    """The longest duration (seconds) of `clip`'s size that some plan fits in `vram_gib`; None if not even one
    second does. Binary search over whole latent frames (8 pixel frames each)."""
    lo, hi = 0, clip.latent_frames

    leanest, w, limit = candidates()[-1], weights(configs), budget(vram_gib)  # if any plan fits, this one does

    def fits(latent_frames: int) -> bool:
        frames = (latent_frames - 1) * 8 + 1
        trial = replace(clip, num_frames=frames, audio_latents=max(audio_latent_count(frames, fps), 1))
        return max(_worst(leanest, w, configs, [trial]).values()) <= limit

    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    seconds = ((lo - 1) * 8 + 1) / fps if lo else 0.0
    return round(seconds, 1) if seconds >= 1 else None


def load_source(model: Any, plan: Plan) -> Any:
    """The model source a plan loads: a single file's FP8 transformer kept in FP8 where the plan runs it so
    (`--precision auto`), instead of dequantised on the host and quantised again."""
    from .model_source import ModelSource

    source = ModelSource.of(model)
    if plan.transformer_fp8 and (source.resolved().precision or "auto") == "auto":
        return replace(source, precision="fp8")
    return source


# -- before a batch renders ------------------------------------------------------------------------------------


def what_fits(configs: Mapping[str, dict], clip: Clip, vram_gib: float, spec: RenderSpec) -> str:
    """What would fit instead, said for a job: the longest clip of its size, or that none does."""
    longest = longest_fitting(configs, clip, vram_gib, spec.fps)
    return f"up to {longest:g} s fits at {spec.width}x{spec.height}" if longest else "no clip of this size fits"


def plan_batch(specs: list[RenderSpec], model: Any, vram: str | None) -> tuple[Choice | None, list, dict[str, Choice]]:
    """(the plan for these jobs on this GPU, one Problem per job no plan fits, each job's own best plan). No plan
    without a GPU unless --vram names a size; nothing is checked when the model cannot be found (loading it
    reports that)."""
    from ..errors import ModelError, Problem
    from .estimate import model_configs
    from .model_source import resolve_model

    gib = vram_gib(vram)
    if gib is None or not specs:
        return None, [], {}
    try:
        configs = model_configs(resolve_model(model))
    except (ModelError, OSError, ValueError, KeyError):
        return None, [], {}
    problems, fitting, each = [], [], {}
    for spec in specs:
        clip = Clip.of(spec)
        best = each[spec.id] = choose(configs, [clip], gib)
        if best.fits:
            fitting.append(clip)
            continue
        problems.append(
            Problem(
                spec.source,
                f"needs ~{best.peak / GIB:.1f} GiB of GPU memory even with the leanest plan ({best.plan.label}), "
                f"over the {best.budget / GIB:.1f} GiB this {gib:g} GiB GPU has to spare: "
                f"{what_fits(configs, clip, gib, spec)}; shorten it, "
                "lower the resolution, or use a preset with fewer guidance passes",
                job=spec.id,
                field="duration",
            )
        )
    return (choose(configs, fitting, gib) if fitting else None), problems, each


# -- a long-lived process (the RunPod worker): one plan at start, each request checked against it -------------


@dataclass
class Budget:
    configs: dict
    gib: float


def worker_budget(path: Any, vram: str | None = None) -> Budget | None:
    """The GPU's memory and the model's configs, for planning requests as they come (None without a GPU)."""
    from .estimate import model_configs

    gib = vram_gib(vram)
    return None if gib is None else Budget(model_configs(path), gib)


def start_plan(room: Budget, preset: Any, seconds: float) -> Choice:
    """The plan a worker loads with: the fastest that fits its default preset for `seconds` (else the leanest)."""
    return choose(room.configs, [preset_clip(preset, seconds)], room.gib)


def fit_request(room: Budget, models: Any, spec: RenderSpec) -> tuple[Choice | None, str | None]:
    """(the plan this job renders with, None) after moving `models` to a leaner plan if it needs one (never back
    to a richer one: that would mean reloading), or (None, why it cannot fit this GPU)."""
    clip = Clip.of(spec)
    choice = choose(room.configs, [clip], room.gib, start=models.plan)
    if not choice.fits:
        return None, (
            f"needs more GPU memory than this worker's {room.gib:g} GiB under any plan "
            f"({what_fits(room.configs, clip, room.gib, spec)}); shorten it or lower the resolution"
        )
    if choice.plan != models.plan:
        apply(models, choice.plan)
    return choice, None
