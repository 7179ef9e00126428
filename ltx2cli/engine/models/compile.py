"""Regional torch.compile of the transformer: diffusers' `compile_repeated_blocks` compiles the block class once
and the 48 blocks share that graph, so compiling costs one block's worth, not the model's.

Measured on an H200 (bench/RESULTS.md, 2026-11-30, full-size LTX-2, 10-s 768x512 clip): a denoising step went
from 1.40 s to 1.07 s (1.31x; the norms, gates and residual adds between the GEMMs and the attention fuse, and
they were 37% of the eager step's kernel time), for ~13.5 s of compiling on the first step of each new clip
shape. `auto` therefore compiles only where that pays back: on a GPU, for runs of at least AUTO_MIN_JOBS jobs
(a batch) or a long-lived worker; a single render stays eager.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

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


def compile_blocks(models: Any, **options: Any) -> bool:
    """Compile the transformer's repeated blocks in place, once per loaded model; True if this call did it.

    `options` go to torch.compile (the tests pass backend="eager"). Shapes are not fixed in advance: the first
    clip shape compiles a static graph, a second shape recompiles once with dynamic sizes, later shapes reuse it.
    """
    if models.compiled:
        return False
    models.transformer.compile_repeated_blocks(fullgraph=False, **options)
    models.compiled = True
    return True
