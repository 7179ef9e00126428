"""Which component is on the GPU in which phase of a render, chosen per GPU size: the memory plan.

A plan is a row of the table below, fastest first; `choose` takes the first row (and, within it, whole before
tiled decode, whole before chunked FFNs) whose estimated peak (estimate.py) fits the GPU's budget. What is off
the GPU waits in CPU memory (pinned, so moving it back is one fast copy) and is never read from disk again.

| plan | transformer | Gemma | connectors, VAE, audio |
| 80 | bf16, resident | bf16, resident | resident |
| 48 | bf16; off the GPU while prompts encode | bf16, on the GPU for the prompt phase only | resident |
| 32 | FP8 blocks; off the GPU while prompts encode | bf16, prompt phase only | resident |
| 24 | FP8 blocks, off for prompts and decode; may stream blocks | FP8 layers, prompts only | in their phases |

A job's LoRAs count too (LoraLoad), on the GPU exactly when the component they adapt is: on the FP8 path their
matrices move with the transformer (or the text connectors), those of streamed blocks streamed with their block; on
the bf16 path they are peft's layers inside it.

Rules (each unit-tested): FP8 only where bf16 does not fit; outside the 80-GB plan Gemma and the transformer are
never on the GPU together (a batch encodes all its prompts first, so the transformer moves once per batch); the
decode is tiled (spatially and in time) only when whole does not fit; then FFN chunks; streaming transformer
blocks from host memory (engine.memory.streaming: a copy per block per step) last, the fewest that fit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ...jobs.job import LoraRef
from ...jobs.spec import RenderSpec
from ...jobs.timeline import audio_latent_count, timeline
from .estimate import BF16, FRAGMENTATION, GIB, GPU_OVERHEAD, Clip, Weights, activations, voice_samples, weights
from .ffn_chunks import FFN_CHUNKS
from .placement import PHASES, Plan, apply
from .vram import parse_vram

HEADROOM = 0.92  # of the card: the CUDA context and library handles live outside torch's accounting
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


_BLOCK = re.compile(r"^transformer\.transformer_blocks\.(\d+)\.")  # a LoRA module name inside a transformer block


@dataclass(frozen=True)
class LoraSize:
    """One LoRA file's A and B matrices in the compute dtype (bf16), by the component they adapt."""

    transformer: int = 0
    connectors: int = 0
    blocks: tuple[int, ...] = ()  # of `transformer`, the bytes in each transformer block (all of them, in order)

    @property
    def bytes(self) -> int:
        return self.transformer + self.connectors


@dataclass(frozen=True)
class LoraLoad:
    """The LoRAs a process holds beside the model (it loads each at its first use and keeps it), on the GPU exactly
    when the component they adapt is (placement.settle_loras on the FP8 path; peft's layers inside it on the
    bf16 path). The adapters of streamed blocks stay in host memory and come in with their block: one block's at a
    time, those of every held LoRA counted (an upper bound where a batch's jobs use different LoRAs; exact for one
    job's). A file is read whole, so one adapting the text connectors is there (transformer part too) from the
    prompt phase, where they encode."""

    sizes: tuple[LoraSize, ...] = ()
    during_prompts: bool = False  # all loaded before prompts are encoded (a worker: earlier requests'); a batch
    # encodes all its prompts before its first render

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.sizes)

    def in_phase(self, plan: Plan, phase: str) -> int:
        on_gpu = plan.on_gpu(phase)
        loaded = [s for s in self.sizes if phase != "prompt" or self.during_prompts or s.connectors]
        out = sum(s.connectors for s in loaded) if "connectors" in on_gpu else 0
        if "transformer" not in on_gpu:
            return out
        blocks = [sum(b) for b in zip(*(s.blocks for s in loaded if s.blocks), strict=True)]
        streamed = blocks[len(blocks) - plan.streamed_blocks :] if plan.streamed_blocks else []
        return out + sum(s.transformer for s in loaded) - sum(streamed) + max(streamed, default=0)


NO_LORAS = LoraLoad()


def peaks(plan: Plan, w: Weights, acts: Mapping[str, int], loras: LoraLoad = NO_LORAS) -> dict[str, int]:
    """Estimated GPU bytes at each phase's peak: the weights and LoRAs on the GPU then, plus its activations
    (what the allocator holds for them: GPU_OVERHEAD allocated, FRAGMENTATION more reserved)."""
    out = {}
    fp8 = {"transformer": plan.transformer_fp8, "text_encoder": plan.text_encoder_fp8}
    streamed = max(plan.streamed_blocks - 1, 0) * w.block_bytes(plan.transformer_fp8)  # one is in at a time
    for phase in PHASES:
        on_gpu = plan.on_gpu(phase)
        resident = sum(w.bytes(c, fp8.get(c, False)) for c in on_gpu) - streamed * ("transformer" in on_gpu)
        out[phase] = resident + loras.in_phase(plan, phase) + int(acts[phase] * (GPU_OVERHEAD + FRAGMENTATION))
    return out


@dataclass(frozen=True)
class Choice:
    plan: Plan
    peaks: dict[str, int]  # by phase
    budget: int
    lora_bytes: int = 0  # the LoRAs counted in the peaks (LoraLoad)

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
            "loras_gib": round(self.lora_bytes / GIB, 2),
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


def choose(
    configs: Mapping[str, dict],
    clips: list[Clip],
    vram_gib: float,
    start: Plan | None = None,
    loras: LoraLoad = NO_LORAS,
) -> Choice:
    """The fastest plan whose every phase fits `vram_gib` for every clip with `loras`; else the leanest, with fits
    False. `start`: no plan faster than this one (models already following it cannot go back without reloading)."""
    w = weights(configs)
    limit = budget(vram_gib)
    order = candidates()
    best = None
    for plan in order[order.index(start) if start in order else 0 :]:
        worst = _worst(plan, w, configs, clips, loras)
        best = Choice(plan, worst, limit, loras.bytes)
        if best.fits:
            return best
    assert best is not None
    return best


def _worst(
    plan: Plan, w: Weights, configs: Mapping[str, dict], clips: list[Clip], loras: LoraLoad = NO_LORAS
) -> dict[str, int]:
    out = dict.fromkeys(PHASES, 0)
    for clip in set(clips):
        acts = activations(configs, clip, plan.tiled_decode, plan.ffn_chunks, plan.transformer_fp8)
        for phase, b in peaks(plan, w, acts, loras).items():
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
    from ...jobs.guidance import Scales

    tl = timeline(seconds, fps)
    width, height = preset.size
    rows = Scales.from_spec(preset.full_guidance).most_rows
    return Clip(width, height, tl.num_frames, tl.audio_latent_frames, rows, two_stage=preset.two_stage)


def longest_fitting(
    configs: Mapping[str, dict], clip: Clip, vram_gib: float, fps: float, loras: LoraLoad = NO_LORAS
) -> float | None:
    """The longest duration (seconds) of `clip`'s size that some plan fits in `vram_gib` with `loras`; None if not
    even one second does. Binary search over whole latent frames (8 pixel frames each); a lip-sync's voice is as
    long as the clip."""
    lo, hi = 0, clip.latent_frames

    leanest, w, limit = candidates()[-1], weights(configs), budget(vram_gib)  # if any plan fits, this one does

    def fits(latent_frames: int) -> bool:
        frames = (latent_frames - 1) * 8 + 1
        audio, voice = max(audio_latent_count(frames, fps), 1), voice_samples(frames, fps) if clip.voice_samples else 0
        trial = replace(clip, num_frames=frames, audio_latents=audio, voice_samples=voice)
        return max(_worst(leanest, w, configs, [trial], loras).values()) <= limit

    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    seconds = ((lo - 1) * 8 + 1) / fps if lo else 0.0
    return round(seconds, 1) if seconds >= 1 else None


_RANK = re.compile(r"-lora-(\d+)(?!\d)")  # Lightricks name a LoRA's rank: ltx-2-19b-distilled-lora-384


def lora_load(path: Path, configs: Mapping[str, dict], loras: list[LoraRef], during_prompts: bool = False) -> LoraLoad:
    """The LoRAs of `loras` a render of the weights at `path` applies, each counted once (one whose size cannot be
    known counts 0: see lora_sizes)."""
    return held(lora_sizes(path, configs, loras).values(), during_prompts)


def held(sizes: Iterable[LoraSize | None], during_prompts: bool = False) -> LoraLoad:
    """The LoraLoad of these LoRAs (those of unknown size left out)."""
    return LoraLoad(tuple(filter(None, sizes)), during_prompts)


def lora_sizes(path: Path, configs: Mapping[str, dict], loras: list[LoraRef]) -> dict[str, LoraSize | None]:
    """{LoraRef.key: its LoraSize} of the LoRAs of `loras` a render of the weights at `path` applies
    (lora_files.applied_loras; a short name the weights' release lacks is none of them). A file's from its header
    (its A and B matrices in bf16, as both LoRA paths hold them; no tensor data read); a short-named one not on disk
    by the rank its release's file name says over every block Linear (ltx-2-19b-distilled-lora-384: 6.89 GiB on
    LTX-2 19B); None where neither tells (not on disk and no rank in its name, or unreadable), a problem validate
    reports, so no batch renders with it."""
    from ...errors import ModelError
    from ...jobs.releases import lora_stems
    from ...weights.header import HeaderError, read_header
    from ...weights.lora_files import applied_loras, is_distilled_checkpoint, lora_file
    from ...weights.versions import path_version

    version, w = path_version(path), weights(configs)
    out: dict[str, LoraSize | None] = {}
    for lora in applied_loras(loras, is_distilled_checkpoint(path)):
        try:
            stems = lora_stems(lora.name, version) if lora.name is not None else ()
        except KeyError:
            continue
        try:
            header = read_header(lora_file(path, lora, version))
            out[lora.key] = _file_size({key: t.numel for key, t in header.tensors.items()}, w.layers)
        except HeaderError:
            out[lora.key] = None
        except ModelError:  # not on disk
            rank = _RANK.search(stems[0]) if stems else None
            out[lora.key] = LoraSize(w.lora_bytes(int(rank[1])), blocks=w.lora_blocks(int(rank[1]))) if rank else None
    return out


def _file_size(numels: Mapping[str, int], layers: int) -> LoraSize:
    """A LoRA file's LoraSize from {key: element count}: each `.lora_*` matrix by the module it adapts
    (weights.layout.lora_module; one under no name LTX-2 reads, which validation refuses, counts as the
    transformer's)."""
    from ...weights.layout import lora_module

    parts, blocks = {"transformer": 0, "connectors": 0}, [0] * layers
    for key, n in numels.items():
        if ".lora_" not in key:
            continue
        module = lora_module(key.rsplit(".lora_", 1)[0]) or "transformer."
        parts[module.partition(".")[0]] += BF16 * n
        if (block := _BLOCK.match(module)) and int(block[1]) < layers:
            blocks[int(block[1])] += BF16 * n
    return LoraSize(parts["transformer"], parts["connectors"], tuple(blocks))


def job_loras(loras: list[LoraRef], two_stage: bool) -> list[LoraRef]:
    """Every LoRA a job (or preset) loads: a two-stage render's refine stage adds the distilled LoRA."""
    from ...jobs.loras import stage2_loras

    return stage2_loras(loras) if two_stage else list(loras)


def load_source(model: Any, plan: Plan) -> Any:
    """The model source a plan loads: a single file's FP8 transformer kept in FP8 where the plan runs it so
    (`--precision auto`), instead of dequantised on the host and quantised again."""
    from ...weights.source import ModelSource

    source = ModelSource.of(model)
    if plan.transformer_fp8 and (source.resolved().precision or "auto") == "auto":
        return replace(source, precision="fp8")
    return source


# -- before a batch renders ------------------------------------------------------------------------------------


def what_fits(
    configs: Mapping[str, dict], clip: Clip, vram_gib: float, spec: RenderSpec, loras: LoraLoad = NO_LORAS
) -> str:
    """What would fit instead, said for a job: the longest clip of its size, or that none does."""
    longest = longest_fitting(configs, clip, vram_gib, spec.fps, loras)
    return f"up to {longest:g} s fits at {spec.width}x{spec.height}" if longest else "no clip of this size fits"


def plan_batch(specs: list[RenderSpec], model: Any, vram: str | None) -> tuple[Choice | None, list, dict[str, Choice]]:
    """(the plan for these jobs on this GPU, one Problem per job no plan fits, each job's own best plan). No plan
    without a GPU unless --vram names a size; nothing is checked when the model cannot be found (loading it
    reports that)."""
    from ...errors import ModelError, Problem
    from ...weights.source import resolve_model
    from .estimate import model_configs

    gib = vram_gib(vram)
    if gib is None or not specs:
        return None, [], {}
    try:
        path = resolve_model(model)
        configs = model_configs(path)
    except (ModelError, OSError, ValueError, KeyError):
        return None, [], {}
    problems, fitting, each, kept = [], [], {}, {}
    for spec in specs:
        clip, sizes = Clip.of(spec), lora_sizes(path, configs, job_loras(spec.loras, spec.two_stage))
        loras = held(sizes.values())
        best = each[spec.id] = choose(configs, [clip], gib, loras=loras)
        if best.fits:
            fitting.append(clip)
            kept |= sizes  # a process keeps every LoRA it loads: the batch holds them all by its last job
            continue
        problems.append(
            Problem(
                spec.source,
                f"needs ~{best.peak / GIB:.1f} GiB of GPU memory even with the leanest plan ({best.plan.label}), "
                f"over the {best.budget / GIB:.1f} GiB this {gib:g} GiB GPU has to spare: "
                f"{what_fits(configs, clip, gib, spec, loras)}; shorten it, "
                "lower the resolution, or use a preset with fewer guidance passes",
                job=spec.id,
                field="duration",
            )
        )
    batch = choose(configs, fitting, gib, loras=held(kept.values())) if fitting else None
    return batch, problems, each


# -- a long-lived process (the RunPod worker): one plan at start, each request checked against it -------------


@dataclass
class Budget:
    configs: dict
    gib: float
    path: Path | None = None  # the weights (their LoRAs are found beside them)


def worker_budget(path: Any, vram: str | None = None) -> Budget | None:
    """The GPU's memory and the model's configs, for planning requests as they come (None without a GPU)."""
    from .estimate import model_configs

    gib = vram_gib(vram)
    return None if gib is None else Budget(model_configs(path), gib, Path(path))


def start_plan(room: Budget, preset: Any, seconds: float) -> Choice:
    """The plan a worker loads with: the fastest that fits its default preset and its LoRAs for `seconds` (else
    the leanest). A worker encodes each request's prompt with earlier requests' LoRAs loaded."""
    loras = job_loras(preset.loras, preset.two_stage)
    load = lora_load(room.path, room.configs, loras, during_prompts=True) if room.path else NO_LORAS
    return choose(room.configs, [preset_clip(preset, seconds)], room.gib, loras=load)


def fit_request(room: Budget, models: Any, spec: RenderSpec) -> tuple[Choice | None, str | None]:
    """(the plan this job renders with, None) after moving `models` to a leaner plan if it needs one (never back
    to a richer one: that would mean reloading), or (None, why it cannot fit this GPU)."""
    clip, loras = Clip.of(spec), lora_load(models.path, room.configs, job_loras(spec.loras, spec.two_stage), True)
    choice = choose(room.configs, [clip], room.gib, start=models.plan, loras=loras)
    if not choice.fits:
        return None, (
            f"needs more GPU memory than this worker's {room.gib:g} GiB under any plan "
            f"({what_fits(room.configs, clip, room.gib, spec, loras)}); shorten it or lower the resolution"
        )
    if choice.plan != models.plan:
        apply(models, choice.plan)
    return choice, None
