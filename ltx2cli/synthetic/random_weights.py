"""LTX-2 at its real size with random weights, made directly on the target device (benchmarks: speed and memory
do not depend on the weights' values, and no machine here can download the real ones).

Each component is constructed from its diffusers / transformers config under accelerate's
`init_empty_weights(include_buffers=False)`: parameters land on the meta device (no memory), while buffers are
built on the CPU by the classes' own __init__ (RoPE inv_freq, position ids, blur kernels, latent stats: a few KB
in all), so they hold exactly what a normal construction computes. Parameters are then allocated empty on the
device and filled there in place; the full weights never exist on the CPU.

    models = random_models(device="cuda", dtype=torch.bfloat16)   # synthetic.random_models: the full-size LTX-2, 63 GiB
    Renderer(models).render(spec, inputs)

diffusers and transformers are imported inside the functions that need them.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..weights.components import UPSAMPLER, construct
from ..weights.fp8 import FP8_DTYPE, Fp8Linear, swap_block_linears

WEIGHTED = ("transformer", "connectors", "vae", "audio_vae", "vocoder", "text_encoder")
INIT_STD = 0.02  # the std transformers / DiT codebases initialise Linear weights with
FP8 = "fp8"
# Norms whose forward multiplies by (1 + weight): their identity weight is 0, not 1.
ZERO_CENTRED_NORMS = frozenset({"Gemma3RMSNorm"})


def parameter_count(module: nn.Module) -> int:
    """Unique parameters (tied ones once, as the checkpoint stores them)."""
    _tie(module)
    return sum(p.numel() for p in module.parameters())


def _tie(module: nn.Module) -> None:
    if hasattr(module, "tie_weights"):  # Gemma's lm_head shares the embedding (transformers ties after loading)
        module.tie_weights()


def materialize(module: nn.Module, device: Any, seed: int = 0, fp8: bool = False) -> nn.Module:
    """Allocate every meta parameter empty on `device` and fill it there; move the (real) buffers along.

    `fp8`: nn.Linear layers inside transformer blocks become `Fp8Linear` (float8_e4m3fn weight + per-tensor scale).
    """
    if fp8:
        swap_block_linears(module)
    _tie(module)
    generator = torch.Generator(device=device).manual_seed(seed)
    fresh: dict[int, torch.nn.Parameter] = {}  # id(meta param) -> its device copy: keeps tied weights tied
    for sub in module.modules():
        for name, param in list(sub._parameters.items()):
            if param is None:
                continue
            if id(param) not in fresh:
                real = torch.empty_like(param, device=device)
                _fill(real, sub, name, generator)
                fresh[id(param)] = torch.nn.Parameter(real, requires_grad=False)
            sub._parameters[name] = fresh[id(param)]
        for name, buf in list(sub._buffers.items()):
            if buf is not None:
                sub._buffers[name] = buf.to(device)
        if isinstance(sub, Fp8Linear):
            sub.fill_(generator, INIT_STD)
    return module


def _fill(t: torch.Tensor, owner: nn.Module, name: str, generator: torch.Generator) -> None:
    """Biases 0, norm weights their identity (1; 0 for (1 + w) norms), anything else N(0, INIT_STD)."""
    kind = type(owner).__name__
    if t.dtype == FP8_DTYPE:
        return  # an Fp8Linear's weight: quantised from a random draw by the layer itself (fill_)
    if name.endswith("bias") or kind in ZERO_CENTRED_NORMS:
        t.zero_()
    elif "Norm" in kind:
        t.fill_(1.0)
    elif t.is_floating_point():
        t.normal_(0.0, INIT_STD, generator=generator)
    else:
        t.zero_()


# ---- the pipeline --------------------------------------------------------------------------------------------


def build_pipeline(
    config_dir: Path,
    device: Any,
    dtype: Any,
    seed: int = 0,
    fp8: bool = False,
    progress: Callable[[str], None] | None = None,
) -> tuple[Any, Any]:
    """(LTX2ImageToVideoPipeline, latent upsampler or None), every weight random and made on `device`."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTX2ImageToVideoPipeline

    from .tiny import make_tokenizer

    note = progress or (lambda _name: None)
    parts: dict[str, Any] = {}
    for i, name in enumerate(WEIGHTED):
        note(name)
        parts[name] = materialize(
            construct(config_dir, name, dtype), device, seed * 1000 + i, fp8=fp8 and name == "transformer"
        )
    upsampler = None
    if (Path(config_dir) / UPSAMPLER / "config.json").is_file():
        note(UPSAMPLER)
        upsampler = materialize(construct(config_dir, UPSAMPLER, dtype), device, seed * 1000 + len(WEIGHTED))
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(
        FlowMatchEulerDiscreteScheduler.load_config(Path(config_dir) / "scheduler")
    )
    # No tokenizer files ship with the configs: the tiny model's byte-level tokenizer (ids < 384) is in range for
    # any Gemma vocabulary, and prompt length (not the ids) is what costs time.
    pipe = LTX2ImageToVideoPipeline(**parts, tokenizer=make_tokenizer(), scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe, upsampler
