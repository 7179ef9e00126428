"""Which attention kernel the transformer runs (`--attention`): one of diffusers' attention-dispatcher backends, set
on the attention that carries no mask (video and audio self-attention, audio<->video cross-attention: nearly all of
a step's attention FLOPs). The text cross-attention carries the prompt's padding mask, which SageAttention and
FlashAttention do not take, so it stays on PyTorch's SDPA.

`auto` on a GPU times each kernel that can run there once, on LTX-2's own attention shape, and checks its output
against SDPA's on the same inputs: the fastest within ACCURACY_BAR wins. The verdict is kept per GPU, torch and
kernel versions in $LTX2_CACHE_DIR/attention.json, so later processes do not time again. On the CPU: sdpa.

SageAttention: diffusers 0.42.1 asks `sageattention>=2.1.1`, which has no wheel on PyPI (it builds from source
against CUDA); PyPI's 1.0.6 (Triton, INT8 QK^T, what ComfyUI users of LTX-2 turn on) has the same `sageattn` call,
so ltx2 registers its `sage` backend over diffusers' own when it is chosen.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum
from importlib import metadata
from typing import Any

from ...cache import add_to_cache_json, read_cache_json
from ...errors import UsageError

ATTENTION_ENV = "LTX2_ATTENTION"
# --attention name -> diffusers' dispatcher backend
KERNELS: dict[str, str] = {
    "sdpa": "native",  # PyTorch's choice: cuDNN's flash kernel for bf16 on Hopper
    "cudnn": "_native_cudnn",
    "flash": "flash",  # flash-attn 2 (pip flash-attn)
    "fa3": "_flash_3",  # FlashAttention-3 (flash_attn_interface, Hopper)
    "sage": "sage",  # SageAttention: INT8 Q.K^T, fp16 P.V (pip sageattention)
}
UNMASKED = ("attn1", "audio_attn1", "audio_to_video_attn", "video_to_audio_attn")  # each block's maskless attention
# `auto` takes a kernel only if its output on the probe is within this relative L2 of SDPA's: no further than FP8
# transformer blocks are from bf16 (3.7% on one step's output, H200), the README's one bar for non-default choices.
ACCURACY_BAR = 0.05
PROBE_TOKENS = 8192  # a 10-s 768x512 clip's video tokens are 3,648 at the first stage and 14,592 at full size
CACHE_FILE = "attention.json"
Log = Callable[[str], None]


class AttentionChoice(StrEnum):
    auto = "auto"
    sdpa = "sdpa"
    cudnn = "cudnn"
    flash = "flash"
    fa3 = "fa3"
    sage = "sage"


def unusable(name: str, device: Any) -> str | None:
    """Why kernel `name` cannot run on `device` (None: it can)."""
    import torch

    if name in ("sdpa", AttentionChoice.auto):
        return None
    if torch.device(device).type != "cuda":
        return f"needs a CUDA GPU (this run is on {torch.device(device).type})"
    from diffusers.models import attention_dispatch as d

    missing = {
        "flash": None if d._CAN_USE_FLASH_ATTN else "pip install flash-attn (2.6.3 or later)",
        "fa3": None if d._CAN_USE_FLASH_ATTN_3 else "FlashAttention-3's flash_attn_interface (built from its hopper/)",
        "sage": None if _has("sageattention") else "pip install sageattention",
    }.get(name)
    return f"not installed: {missing}" if missing else None


def require(name: str, device: Any) -> None:
    """Refuse --attention `name` where its kernel cannot run on `device`, naming what would."""
    if name != AttentionChoice.auto and (why := unusable(name, device)) is not None:
        raise UsageError(f"--attention {name}: {why}; use auto or sdpa")


def set_attention(transformer: Any, name: str) -> None:
    """Run every block's maskless attention on kernel `name` (an --attention name, or any dispatcher backend)."""
    from diffusers.models.attention_dispatch import AttentionBackendName

    if name == "sage":
        _register_sage()
    backend = AttentionBackendName(KERNELS.get(name, name))
    for block in transformer.transformer_blocks:
        for role in UNMASKED:
            if (module := getattr(block, role, None)) is not None:
                module.processor._attention_backend = backend


def choose_attention(transformer: Any, choice: str, device: Any, log: Log | None = None) -> str:
    """Set the kernel `choice` names (auto: the one `pick` finds) and return its name, for the sidecar."""
    choice = AttentionChoice(choice)
    require(choice.value, device)
    name = pick(device, _probe_shape(transformer), log=log) if choice is AttentionChoice.auto else choice.value
    set_attention(transformer, name)
    return name


def pick(device: Any, shape: tuple[int, int, int], candidates: list[str] | None = None, log: Log | None = None) -> str:
    """The fastest of `candidates` (default: every kernel that can run on `device`) within ACCURACY_BAR of SDPA on
    a probe of `shape` (tokens, heads, head dim), timed once per GPU and software versions (kept in the cache);
    sdpa where nothing else can run."""
    import torch

    device = torch.device(device)
    candidates = candidates or [name for name in KERNELS if unusable(name, device) is None]
    if candidates == ["sdpa"]:
        return "sdpa"
    key = _cache_key(device, shape, candidates)
    known = read_cache_json(CACHE_FILE).get(key)
    if known is None:
        numbers = probe(candidates, device, shape)
        known = {"choice": fastest_within(numbers, ACCURACY_BAR), "numbers": numbers}
        add_to_cache_json(CACHE_FILE, {key: known})
        if log is not None:
            times = ", ".join(f"{n} {r['seconds'] * 1e3:.2f} ms" for n, r in numbers.items() if "seconds" in r)
            log(f"attention auto: {known['choice']} ({times}; within {ACCURACY_BAR:.0%} of sdpa)")
    return known["choice"]


def fastest_within(numbers: dict[str, dict], bar: float) -> str:
    """The fastest kernel whose relative L2 against SDPA is within `bar` (SDPA itself, 0, always is; sdpa also
    where even it failed on the probe, which then says nothing)."""
    passing = [n for n, r in numbers.items() if "error" not in r and r["rel_l2"] <= bar]
    return min(passing, key=lambda n: numbers[n]["seconds"], default="sdpa")


def probe(names: list[str], device: Any, shape: tuple[int, int, int], repeats: int = 5) -> dict[str, dict]:
    """Each kernel on one random bf16 attention of `shape` (fp32 on the CPU): median seconds and relative L2 of
    its output against SDPA's on the same inputs ({"error": ...} for a kernel that failed)."""
    import torch
    from diffusers.models.attention_dispatch import AttentionBackendName, dispatch_attention_fn

    tokens, heads, dim = shape
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    g = torch.Generator(device).manual_seed(0)
    q, k, v = (torch.randn(1, tokens, heads, dim, generator=g, device=device, dtype=dtype) for _ in range(3))
    out: dict[str, dict] = {}
    reference = None
    for name in ["sdpa", *(n for n in names if n != "sdpa")]:
        if name == "sage":
            _register_sage()
        backend = AttentionBackendName(KERNELS.get(name, name))
        try:
            with torch.no_grad():
                result = dispatch_attention_fn(q, k, v, backend=backend)  # also the warm-up (Triton compiles here)
                seconds = []
                for _ in range(repeats):
                    _sync(device)
                    t0 = time.perf_counter()
                    dispatch_attention_fn(q, k, v, backend=backend)
                    _sync(device)
                    seconds.append(time.perf_counter() - t0)
        except Exception as e:  # a kernel that cannot take these shapes or this GPU is left out, not fatal
            out[name] = {"error": f"{e.__class__.__name__}: {e}"[:300]}
            if name == "sdpa":  # nothing to hold the others against
                return out | {n: {"error": "no SDPA reference"} for n in names if n != "sdpa"}
            continue
        reference = result.float() if reference is None else reference
        rel = ((result.float() - reference).norm() / reference.norm()).item()
        out[name] = {"seconds": sorted(seconds)[len(seconds) // 2], "rel_l2": rel}
    return out


def _probe_shape(transformer: Any) -> tuple[int, int, int]:
    config = transformer.config
    return PROBE_TOKENS, int(config["num_attention_heads"]), int(config["attention_head_dim"])


def _register_sage() -> None:
    """diffusers' `sage` backend, calling whichever sageattention is installed (1.0.6 or 2.x: same `sageattn`)."""
    from diffusers.models.attention_dispatch import AttentionBackendName, _AttentionBackendRegistry

    registry = _AttentionBackendRegistry._backends
    if registry.get(AttentionBackendName.SAGE) is _sage:
        return
    _AttentionBackendRegistry.register(AttentionBackendName.SAGE)(_sage)


def _sage(query, key, value, attn_mask=None, is_causal: bool = False, scale: float | None = None):
    from sageattention import sageattn

    if attn_mask is not None:
        raise ValueError("SageAttention takes no attention mask")
    return sageattn(query, key, value, tensor_layout="NHD", is_causal=is_causal, sm_scale=scale)


def _cache_key(device: Any, shape: tuple[int, int, int], candidates: list[str]) -> str:
    import torch

    versions = [f"torch {torch.__version__}"] + [f"{p} {_version(p)}" for p in ("flash-attn", "sageattention")]
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    return " | ".join([gpu, *versions, "x".join(map(str, shape)), ",".join(candidates)])


def _has(package: str) -> bool:
    return _version(package) is not None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)
