"""Following a memory plan with loaded models: which component sits on the GPU in each render phase, moved
there (or to pinned host memory) as the phases change. The plans themselves, and choosing one: residency.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

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
    streams: bool = False  # may stream transformer blocks from host memory (engine.streaming)
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


HOST = "cpu"  # where components wait off the GPU (pinned when a GPU is there: the copy back is one fast DMA)


def modules(models: Any) -> dict[str, Any]:
    """The movable components of loaded models, by the names plans use."""
    pipe = models.pipe
    names = ("transformer", "text_encoder", "connectors", "vae", "audio_vae", "vocoder")
    out = {name: getattr(pipe, name) for name in names}
    if models.upsampler is not None:
        out["latent_upsampler"] = models.upsampler
    return out


def apply(models: Any, plan: Plan) -> None:
    """Make loaded models follow `plan`: FP8 layers where it says (quantised from the loaded weights, in place; a
    transformer loaded in FP8 stays so), its FFN chunks and tiles; components move at each phase (`place`)."""
    from .ffn_chunks import chunk_feed_forwards
    from .fp8 import block_linears, quantize_linears, text_layer_linears
    from .streaming import stream_last_blocks

    parts = modules(models)
    if plan.transformer_fp8 and not models.fp8_blocks:
        quantize_linears(block_linears(parts["transformer"]))
    if plan.text_encoder_fp8:
        quantize_linears(text_layer_linears(parts["text_encoder"]))
    chunk_feed_forwards(parts["transformer"], plan.ffn_chunks)
    if models.streamed is not None:  # a plan change: stream the new plan's blocks, not both
        models.streamed.remove(models.device if models.where.get("transformer") == "gpu" else HOST)
    models.streamed = stream_last_blocks(parts["transformer"], plan.streamed_blocks, models.device)
    models.plan = plan
    models.where = {name: _where(module, models.device) for name, module in parts.items()}


def place(models: Any, phase: str) -> None:
    """Move components so that exactly the plan's set for `phase` is on the GPU: what leaves goes first, so the
    peak never holds both. Without a plan (or on the CPU, where everything is in one memory) nothing moves."""
    plan = getattr(models, "plan", None)
    if plan is None:
        return
    wanted, parts = plan.on_gpu(phase), modules(models)
    leaving = [n for n in parts if n not in wanted and models.where.get(n) == "gpu"]
    for name in leaving:
        move(parts[name], HOST, models.streamed if name == "transformer" else None)
        models.where[name] = "host"
    if leaving:
        from .memory import free

        free()
    for name in sorted(wanted & parts.keys()):
        if models.where.get(name) != "gpu":
            move(parts[name], models.device, models.streamed if name == "transformer" else None)
            models.where[name] = "gpu"


def _where(module: Any, device: Any) -> str:
    param = next(module.parameters(), None)
    return "gpu" if param is None or param.device == torch.device(device) else "host"


def move(module: Any, device: Any, streamed: Any = None) -> None:
    from .streaming import move_transformer

    move_transformer(module, device, streamed) if streamed is not None else module.to(device)
    if device == HOST and torch.cuda.is_available():
        for tensor in list(module.parameters()) + list(module.buffers()):
            tensor.data = tensor.data.pin_memory()
