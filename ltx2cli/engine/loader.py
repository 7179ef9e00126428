"""A ready Renderer, the one way both the batch runner and the RunPod worker get theirs: models loaded once (in
host memory when they follow a memory plan), the plan applied, the transformer blocks compiled when wanted."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..weights.source import ModelSource
    from .render import Renderer


def load_renderer(
    model: str | ModelSource | None,
    memory: Any,
    compile_mode: str,
    jobs: int | None,
    log: Callable[[str], None],
    attention: str = "auto",
) -> Renderer:
    """`memory`: an engine.memory.residency.Choice (the plan and its estimate) or None (everything stays resident);
    `jobs`: how many renders will use it (None: a long-lived worker), which decides `compile_mode` auto;
    `attention`: the kernel (engine.models.attention), set before any compile traces the blocks."""
    from ..weights.source import ModelSource
    from .memory import residency
    from .memory.placement import apply
    from .models.attention import choose_attention
    from .models.compile import compile_blocks, compile_wanted, fp8_blocks_wanted
    from .models.loading import default_device, load_models
    from .render import Renderer

    t0 = time.perf_counter()
    source = ModelSource.of(model).resolved()
    asked, compiling = source.precision, compile_wanted(compile_mode, default_device(), jobs)
    fp8 = fp8_blocks_wanted(asked or "auto", compiling, default_device())
    if fp8:  # a single file's FP8 weights stay so; a bf16 model's block Linears are quantised at load
        source = replace(source, precision="fp8")
    if memory is not None:
        models = load_models(residency.load_source(source, memory.plan), on_host=True)
    else:
        models = load_models(source)
    dtype = str(models.dtype).removeprefix("torch.")
    log(f"model {models.identity} on {models.device} ({dtype}) loaded in {time.perf_counter() - t0:.1f} s")
    if memory is not None:
        apply(models, memory.plan)
        peak, budget = memory.peak / 2**30, memory.budget / 2**30
        log(f"memory plan {memory.plan.label}: estimated peak {peak:.1f} of {budget:.1f} GiB")
    fp8s = [name for name, p in models.precisions.items() if p == "fp8"]
    if fp8 and fp8s == ["transformer"]:
        why = "--precision fp8" if asked == "fp8" else "--precision auto: compiled, on a GPU with FP8 matmuls"
        log(f"transformer blocks in FP8 ({why}): model {models.identity}")
    elif fp8s and memory is not None:
        why = "; --precision bf16 cannot hold here" if asked == "bf16" else ""
        log(f"{' and '.join(fp8s)} in FP8 under this plan (bf16 does not fit){why}: model {models.identity}")
    models.attention = choose_attention(models.transformer, attention, models.device, log)
    # Streamed blocks swap their weights in and out around each forward: a compiled block would guard on them.
    if models.streamed is None and compiling and compile_blocks(models):
        log("transformer blocks set to compile (torch.compile): the first step of each new clip shape is slow")
    return Renderer(models)
