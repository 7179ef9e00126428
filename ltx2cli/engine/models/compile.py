"""Regional torch.compile of the transformer: diffusers' `compile_repeated_blocks` compiles the block class once
and the 48 blocks share that graph, so compiling costs one block's worth, not the model's.

Measured on an H200 (bench/RESULTS.md, 2026-11-30, full-size LTX-2, 10-s 768x512 clip): a denoising step went
from 1.40 s to 1.07 s (1.31x; the norms, gates and residual adds between the GEMMs and the attention fuse, and
they were 37% of the eager step's kernel time), for ~13.5 s of compiling on the first step of each new clip
shape. `auto` therefore compiles only where that pays back: on a GPU, for runs of at least AUTO_MIN_JOBS jobs
(a batch) or a long-lived worker; a single render stays eager.
"""

from __future__ import annotations

import os
from enum import StrEnum
from pathlib import Path
from typing import Any

from ...cache import cache_root

COMPILE_ENV = "LTX2_COMPILE"
AUTO_MIN_JOBS = 4  # 13.5 s of compiling is won back by ~41 compiled 10-s steps: about five fast-preset jobs


class CompileMode(StrEnum):
    auto = "auto"
    on = "on"
    off = "off"


def compile_wanted(mode: CompileMode | str, device: Any, jobs: int | None) -> bool:
    """Whether to compile for `jobs` renders on `device` (`jobs` None: a long-lived process such as the worker)."""
    mode = CompileMode(mode)
    if mode is not CompileMode.auto:
        return mode is CompileMode.on
    import torch

    return torch.device(device).type == "cuda" and (jobs is None or jobs >= AUTO_MIN_JOBS)


def fp8_blocks_wanted(precision: str, compiling: bool, device: Any) -> bool:
    """Whether the transformer blocks run in FP8: `--precision fp8`, or `auto` where they compile on a GPU that
    multiplies FP8 (Ada, Hopper, Blackwell). Compiled, FP8 block GEMMs made a step 1.25x faster on an H200 (eager,
    0.90x: the activations' quantisation is fused only when compiled), and one step's x0 stayed within 3.7% of
    bf16's (relative L2), inside the accuracy bar every non-default kernel must pass (attention.ACCURACY_BAR).
    `auto` also keeps a single file's FP8 weights where bf16 would not fit (weights.single_file.resolve_precision);
    a memory plan may quantise whatever was asked."""
    import torch

    from ...weights.fp8 import fp8_matmul_ok

    if precision != "auto":
        return precision == "fp8"
    device = torch.device(device)
    return compiling and device.type == "cuda" and fp8_matmul_ok(device)


def use_compile_cache() -> Path:
    """Keep inductor's and Triton's on-disk caches (FX graphs, AOT autograd, kernels, autotuning) under
    $LTX2_CACHE_DIR/compile rather than /tmp, so the next process (the next batch, a restarted worker, workers
    sharing a network volume) compiles the same shapes from warm caches. A variable the deployment set is left alone;
    torch's own default, which it writes into the environment once anything imports dynamo, is not a choice."""
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    root = cache_root() / "compile"
    torch_default = os.path.abspath(default_cache_dir())
    for variable, folder in (("TORCHINDUCTOR_CACHE_DIR", "inductor"), ("TRITON_CACHE_DIR", "triton")):
        if os.environ.get(variable) in (None, torch_default):
            os.environ[variable] = str(root / folder)
    return root


def compile_blocks(models: Any, **options: Any) -> bool:
    """Compile the transformer's repeated blocks in place, once per loaded model; True if this call did it.

    `options` go to torch.compile (the tests pass backend="eager"). Shapes are not fixed in advance: the first
    clip shape compiles a static graph, a second shape recompiles once with dynamic sizes, later shapes reuse it.
    """
    if models.compiled:
        return False
    use_compile_cache()
    models.transformer.compile_repeated_blocks(fullgraph=False, **options)
    models.compiled = True
    return True
