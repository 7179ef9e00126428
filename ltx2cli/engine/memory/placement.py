"""Following a memory plan with loaded models: which component sits on the GPU in each render phase, moved
there (or to pinned host memory) as the phases change. The plans themselves, and choosing one: residency.py."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import torch

from .peaks import phase_entered

if TYPE_CHECKING:
    from ...weights.fp8 import Swapped

PHASES = ("prompt", "condition", "denoise", "decode")


@dataclass(frozen=True)
class Plan:
    name: str  # the card size it is made for, in GB
    transformer_fp8: bool = False
    text_encoder_fp8: bool = False  # Gemma's decoder-layer Linears in FP8 (as the original service's fp8_scaled file)
    text_encoder_resident: bool = True  # False: on the GPU only while prompts are encoded
    transformer_for_prompts: bool = True  # the transformer stays on the GPU while Gemma encodes
    transformer_for_decode: bool = True  # ... and while the video decodes
    parts_resident: bool = True  # connectors, video VAE, audio VAE + vocoder, upsampler stay on the GPU
    tiled_decode: bool = False
    ffn_chunks: int = 1
    streams: bool = False  # may stream transformer blocks from host memory (engine.memory.streaming)
    streamed_blocks: int = 0

    @property
    def label(self) -> str:
        extras = ["tiled decode"] * self.tiled_decode + [f"FFN in {self.ffn_chunks} chunks"] * (self.ffn_chunks > 1)
        extras += [f"{self.streamed_blocks} blocks streamed"] * (self.streamed_blocks > 0)
        return f"{self.name} GB" + (f" ({', '.join(extras)})" if extras else "")

    def on_gpu(self, phase: str) -> frozenset[str]:
        """The components on the GPU during `phase`."""
        used = {
            "prompt": {"text_encoder", "connectors"},
            "condition": {"vae", "audio_vae", "vocoder"},
            "denoise": {"transformer", "latent_upsampler"},
            "decode": {"vae", "audio_vae", "vocoder"},
        }[phase]
        if self.parts_resident:
            used |= {"connectors", "vae", "audio_vae", "vocoder", "latent_upsampler"}
        if self.text_encoder_resident:
            used |= {"text_encoder"}
        stays = {"prompt": self.transformer_for_prompts, "decode": self.transformer_for_decode}.get(phase, True)
        if stays:
            used |= {"transformer"}
        return frozenset(used)


@dataclass(frozen=True)
class Lessons:
    """What this process's out-of-memory retries gave up (memory.retry), kept for the rest of its jobs: every later
    placement, and every plan it switches to, keeps them (else each later job would run out of memory once more)."""

    text_encoder_out: bool = False  # Gemma on the GPU for the prompt phase only
    ffn_chunks: int = 1

    def on(self, plan: Plan) -> Plan:
        """`plan` with these lessons kept."""
        resident = plan.text_encoder_resident and not self.text_encoder_out
        return replace(plan, text_encoder_resident=resident, ffn_chunks=max(plan.ffn_chunks, self.ffn_chunks))

    @property
    def notes(self) -> list[str]:
        """Each lesson in words (the batch summary's and later jobs' sidecars' `memory_lessons`)."""
        notes = ["the text encoder stays off the GPU outside the prompt phase"] * self.text_encoder_out
        notes += [f"the feed-forwards run in {self.ffn_chunks} token chunks"] * (self.ffn_chunks > 1)
        return [f"{note}: a denoise ran out of GPU memory without that" for note in notes]


HOST = "cpu"  # where components wait off the GPU (pinned when a GPU is there: the copy back is one fast DMA)
AS_LOADED = Plan("as loaded")  # models without a plan: every component stays on the device it loaded on


def modules(models: Any) -> dict[str, Any]:
    """The movable components of loaded models, by the names plans use."""
    pipe = models.pipe
    names = ("transformer", "text_encoder", "connectors", "vae", "audio_vae", "vocoder")
    out = {name: getattr(pipe, name) for name in names}
    if models.upsampler is not None:
        out["latent_upsampler"] = models.upsampler
    return out


def followed(models: Any) -> Plan | None:
    """The plan `models` follow now: their own with this process's lessons kept. None (nothing moves) without a
    plan, unless a lesson took Gemma off the GPU."""
    if models.plan is None and not models.lessons.text_encoder_out:
        return None
    return models.lessons.on(models.plan or AS_LOADED)


@dataclass(frozen=True)
class _Before:
    """What a plan switch changes, to put back if it fails."""

    plan: Plan | None
    where: dict[str, str]
    ffn_chunks: int
    streamed_blocks: int

    @classmethod
    def of(cls, models: Any) -> _Before:
        from .ffn_chunks import ffn_chunks

        parts = modules(models)
        where = dict(models.where) or {name: _where(module, models.device) for name, module in parts.items()}
        streamed = len(models.streamed.blocks) if models.streamed is not None else 0
        return cls(models.plan, where, ffn_chunks(parts["transformer"]), streamed)


def apply(models: Any, plan: Plan) -> None:
    """Make loaded models follow `plan` (and this process's lessons): FP8 layers where it says (quantised from the
    loaded weights, in place, layer by layer; a transformer loaded in FP8 stays so), its FFN chunks and streamed
    blocks; components move at each phase (`place`). What the plan does not keep on the GPU in the current phase
    leaves it first, and is quantised in host memory. A switch that fails (out of GPU memory halfway) puts the
    models back as they were, bf16 Linears included, and raises."""
    before, kept = _Before.of(models), []
    try:
        _switch(models, plan, before, kept)
    except BaseException:
        _roll_back(models, before, kept)
        raise


def _switch(models: Any, plan: Plan, before: _Before, kept: Swapped) -> None:
    from ...weights.fp8 import block_linears, quantize_linears, text_layer_linears
    from .ffn_chunks import chunk_feed_forwards
    from .streaming import stream_last_blocks

    parts, target = modules(models), models.lessons.on(plan)
    _stop_streaming(models)
    if before.plan is not None and models.phase is not None:  # a switch between renders: make room first
        _send_out(models, target.on_gpu(models.phase))
    where = models.where or before.where
    if plan.transformer_fp8 and not models.fp8_blocks:
        quantize_linears(block_linears(parts["transformer"]), keep=_keeper(kept, where["transformer"]))
    if plan.text_encoder_fp8:
        quantize_linears(text_layer_linears(parts["text_encoder"]), keep=_keeper(kept, where["text_encoder"]))
    chunk_feed_forwards(parts["transformer"], target.ffn_chunks)
    models.streamed = stream_last_blocks(parts["transformer"], plan.streamed_blocks, models.device)
    if before.streamed_blocks and where["transformer"] == "gpu":  # blocks the old plan streamed, this one not
        move(parts["transformer"], models.device, models.streamed)
    models.plan, models.where = plan, dict(where)
    settle_loras(models)


def _keeper(kept: Swapped, where: str) -> Callable[[tuple], None]:
    """Keeps each Linear quantize_linears replaces, to put back if the switch fails. One on the GPU is kept as a
    bf16 copy in host memory, so the GPU frees its weight as its FP8 copy is made (a real copy even where the
    "GPU" is the CPU: the device's tensor is what must go). Host memory rather than dequantising back on failure:
    FP8 is not the weight it was, and a model rolled back must render as before; host memory holds them only while
    switching (LTX-2 19B's transformer blocks: ~35 GiB), beside what plans keep waiting there anyway."""

    def keep(entry: tuple) -> None:
        if where == "gpu":
            for param in entry[2].parameters():
                param.data = param.data.to(HOST, copy=True)
        kept.append(entry)

    return keep


def _roll_back(models: Any, before: _Before, kept: Swapped) -> None:
    """Put back what a failed switch changed: the bf16 Linears, FFN chunks, streamed blocks, places and plan."""
    from ...weights.fp8 import put_back
    from .ffn_chunks import chunk_feed_forwards
    from .retry import free
    from .streaming import stream_last_blocks

    parts = modules(models)
    _stop_streaming(models)
    put_back(kept)
    kept.clear()
    chunk_feed_forwards(parts["transformer"], before.ffn_chunks)
    models.streamed = stream_last_blocks(parts["transformer"], before.streamed_blocks, models.device)
    free()  # the FP8 copies, before the originals go back to the GPU
    for name, module in parts.items():
        if before.where[name] == "gpu":  # what was sent out, and originals kept in host memory
            move(module, models.device, models.streamed if name == "transformer" else None)
    models.plan, models.where = before.plan, dict(before.where)
    settle_loras(models)


def _stop_streaming(models: Any) -> None:
    """Streamed blocks stay in host memory, streamed no more (a plan streams its own, or places them back)."""
    if models.streamed is not None:
        models.streamed.remove(HOST)
        models.streamed = None


def place(models: Any, phase: str) -> None:
    """Move components so that exactly the followed plan's set for `phase` is on the GPU: what leaves goes first,
    so the peak never holds both. Without a plan (or on the CPU, where everything is in one memory) nothing
    moves."""
    phase_entered(models, phase)  # its memory peaks are counted from here, moves included
    plan = followed(models)
    if plan is None:
        return
    wanted, parts = plan.on_gpu(phase), modules(models)
    _send_out(models, wanted)
    for name in sorted(wanted & parts.keys()):
        if models.where.get(name) != "gpu":
            move(parts[name], models.device, models.streamed if name == "transformer" else None)
            models.where[name] = "gpu"
    settle_loras(models)
    models.phase = phase


def _send_out(models: Any, wanted: frozenset[str]) -> None:
    """Components on the GPU that are not `wanted` there go to host memory."""
    parts = modules(models)
    leaving = [n for n in parts if n not in wanted and models.where.get(n) == "gpu"]
    for name in leaving:
        move(parts[name], HOST, models.streamed if name == "transformer" else None)
        models.where[name] = "host"
    settle_loras(models, bring=False)
    if leaving:
        from .retry import free

        free()


def settle_loras(models: Any, bring: bool = True) -> None:
    """Every FP8 LoRA adapter (engine.models.lora_hooks) where the module it adapts computes, as the components move:
    with the transformer (or the text connectors) on the GPU or in host memory; `bring` False: only those whose
    component left. The adapters of streamed blocks stay in host memory, and those in use come in with their
    block for each forward (engine.memory.streaming): a block is streamed to keep its bytes off the GPU, and a rank-384
    LoRA adds 40% to an FP8 block's (0.14 of 0.36 GiB on LTX-2 19B); kept resident, they would give that back for
    every block streamed. (peft's LoRA layers, on the bf16 path, are submodules: they move with their module.)"""
    streamed = _streamed_blocks(models)
    riders: dict[int, list[torch.Tensor]] = {}
    for name, tensors, active in models.fp8_lora_tensors():
        block = next((b for prefix, b in streamed.items() if name.startswith(prefix)), None)
        here = block is None and models.where.get(name.partition(".")[0], "gpu") == "gpu"
        if bring or not here:
            for tensor in tensors:
                _put(tensor, models.device if here else HOST)
        if block is not None and active:
            riders.setdefault(id(block), []).extend(tensors)
    if models.streamed is not None:
        models.streamed.carry(riders)


def _streamed_blocks(models: Any) -> dict[str, Any]:
    """{`transformer.transformer_blocks.<i>.` (the start of a LoRA's module names in it): block} of the blocks
    streamed now."""
    if models.streamed is None:
        return {}
    ids, blocks = models.streamed.ids, models.pipe.transformer.transformer_blocks
    return {f"transformer.transformer_blocks.{i}.": b for i, b in enumerate(blocks) if id(b) in ids}


def _put(tensor: torch.Tensor, device: Any) -> None:
    """`tensor` on `device` in place (LoRA hooks hold the tensor object), pinned in host memory as `move` does."""
    tensor.data = tensor.data.to(device)
    if device == HOST and torch.cuda.is_available():
        tensor.data = tensor.data.pin_memory()


def _where(module: Any, device: Any) -> str:
    param = next(module.parameters(), None)
    return "gpu" if param is None or param.device == torch.device(device) else "host"


def move(module: Any, device: Any, streamed: Any = None) -> None:
    from .streaming import move_transformer

    move_transformer(module, device, streamed) if streamed is not None else module.to(device)
    if device == HOST and torch.cuda.is_available():
        for tensor in list(module.parameters()) + list(module.buffers()):
            tensor.data = tensor.data.pin_memory()
