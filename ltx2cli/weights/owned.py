"""Tensors read from safetensors files, copied into torch's own memory.

safetensors maps a file and hands out tensors at whatever offset its header leaves them. An unaligned input takes
other SIMD paths in the CPU's matmuls: last-bit differences that reach the pixels, so the same job would render
other numbers from a cached prompt than from a fresh one, or from a single file than from its folder. torch's CPU
allocator aligns every allocation to 64 bytes; a copy there also stops the tensor from pinning the file mapping.
"""

from __future__ import annotations

from typing import Any

import torch


def owned(tensor: torch.Tensor, device: Any = "cpu", dtype: torch.dtype | None = None) -> torch.Tensor:
    """`tensor` as `dtype` (floating-point tensors only; None keeps it) on `device`, always a fresh allocation."""
    if dtype is not None and tensor.is_floating_point():
        return tensor.to(device, dtype, copy=True)
    return tensor.to(device, copy=True)
