"""FP8 linear layers: float8_e4m3fn weights with one float32 scale each (weight ~= weight_fp8 * weight_scale), the
layout of Lightricks' FP8 checkpoints, multiplied with `torch._scaled_mm` where the GPU has FP8 matmuls.

Measured on an H200 (bench/RESULTS.md): with the transformer blocks compiled, a full-size step ran 1.25x faster
than bf16; eager, the per-call activation quantisation made it 0.90x. Only the transformer blocks' Linears are
FP8: they hold nearly all the FLOPs and weights; embeddings, adaLN and proj_in/out stay in the compute dtype.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

FP8_MAX = 448.0  # largest finite float8_e4m3fn
FP8_DTYPE = torch.float8_e4m3fn


def fp8_matmul_ok(device: torch.device) -> bool:
    """torch._scaled_mm multiplies fp8 x fp8 on Ada/Hopper (sm 8.9+) and, in recent torch, on the CPU; on the meta
    device (shapes only) it runs as such a GPU runs it, for the memory estimate (engine.memory.estimate)."""
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 9)
    return device.type in ("cpu", "meta")


class Fp8Linear(nn.Module):
    """A Linear whose weight is float8_e4m3fn plus one float32 scale (weight ~= weight_fp8 * weight_scale).

    Forward: `torch._scaled_mm` with the input quantised per tensor on the fly (device ops only, no host sync)
    where the device and shapes allow it; otherwise the weight is dequantised for an ordinary matmul.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool, dtype: torch.dtype, scaled_mm: bool = True):
        super().__init__()
        self.in_features, self.out_features, self.scaled_mm = in_features, out_features, scaled_mm
        self.weight_fp8 = nn.Parameter(torch.empty(out_features, in_features, dtype=FP8_DTYPE), requires_grad=False)
        self.weight_scale = nn.Parameter(torch.ones((), dtype=torch.float32), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype), requires_grad=False) if bias else None
        self.dtype = dtype

    @torch.no_grad()
    def fill_(self, generator: torch.Generator, std: float) -> None:
        """Random N(0, std) weight, drawn in the compute dtype one layer at a time, then quantised."""
        w = torch.empty(self.weight_fp8.shape, dtype=self.dtype, device=self.weight_fp8.device)
        self.quantize_(w.normal_(0.0, std, generator=generator))

    @torch.no_grad()
    def quantize_(self, weight: torch.Tensor) -> None:
        scale = weight.abs().amax().float().clamp(min=1e-12) / FP8_MAX
        self.weight_scale.copy_(scale)
        self.weight_fp8.copy_(to_fp8(weight, scale))

    def dequantized(self, dtype: torch.dtype) -> torch.Tensor:
        return (self.weight_fp8.float() * self.weight_scale).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        bias = None if self.bias is None else self.bias.to(x.dtype)
        if self.scaled_mm and self.in_features % 16 == 0 and self.out_features % 16 == 0 and fp8_matmul_ok(x.device):
            x_scale = flat.abs().amax().float().clamp(min=1e-12) / FP8_MAX
            out = torch._scaled_mm(
                to_fp8(flat, x_scale), self.weight_fp8.t(), scale_a=x_scale, scale_b=self.weight_scale,
                bias=bias, out_dtype=x.dtype,
            )  # fmt: skip
        else:
            out = F.linear(flat, self.dequantized(x.dtype), bias)
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, weight=float8_e4m3fn"


def to_fp8(t: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (t.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)


def block_linears(module: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, layer) for every plain nn.Linear under `transformer_blocks` (none if there are none).

    Only the blocks: they hold ~all the FLOPs and weights; embeddings, adaLN and proj_in/out stay in bf16.
    """
    blocks = getattr(module, "transformer_blocks", None)
    return [] if blocks is None else _linears(blocks)


def text_layer_linears(module: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    """Gemma's decoder-layer Linears (attention and MLP projections), as ComfyUI's fp8_scaled files hold them in
    FP8; embeddings, norms and the vision tower stay in the compute dtype."""
    return [
        (parent, name, child)
        for path, parent in module.named_modules()
        if ".layers." in f"{path}." and "vision" not in path
        for name, child in list(parent.named_children())
        if type(child) is torch.nn.Linear
    ]


def _linears(root: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    return [
        (parent, name, child)
        for parent in list(root.modules())
        for name, child in list(parent.named_children())
        if type(child) is torch.nn.Linear
    ]


def swap_block_linears(module: nn.Module) -> int:
    """Replace every block Linear by an empty (meta) Fp8Linear; returns how many."""
    from accelerate import init_empty_weights

    found = block_linears(module)
    for parent, name, child in found:
        with init_empty_weights(include_buffers=False):
            new = Fp8Linear(child.in_features, child.out_features, child.bias is not None, child.weight.dtype)
        setattr(parent, name, new)
    return len(found)


Swapped = list[tuple[nn.Module, str, nn.Linear]]  # (parent, attribute, the Linear an Fp8Linear replaced there)


def quantize_linears(
    found: list[tuple[nn.Module, str, nn.Linear]],
    scaled_mm: bool = True,
    keep: Callable[[tuple[nn.Module, str, nn.Linear]], None] | None = None,
) -> None:
    """Replace each loaded Linear by an Fp8Linear quantised from its own weight (per-tensor scale), in place, one
    layer at a time. Each is taken out of `found` as its FP8 copy is made, so a Linear nothing else holds is freed
    before the next is quantised: the peak holds one layer in both precisions, not the whole model in both.
    `keep` is handed each replaced (parent, attribute, Linear) for those who put it back (`put_back`)."""
    while found:
        parent, name, child = found.pop(0)
        with torch.device(child.weight.device):
            bias, dtype = child.bias is not None, child.weight.dtype
            new = Fp8Linear(child.in_features, child.out_features, bias, dtype, scaled_mm)
        new.quantize_(child.weight)
        if child.bias is not None:
            new.bias.copy_(child.bias)
        setattr(parent, name, new)
        if keep is not None:
            keep((parent, name, child))
        del child, new  # the loop's own references: the bf16 weight goes now, not when the next layer rebinds them


def put_back(swapped: Swapped) -> None:
    """Undo quantize_linears: each original Linear back in its place (last swapped first)."""
    for parent, name, child in reversed(swapped):
        setattr(parent, name, child)


@contextmanager
def fp8_block_linears(module: nn.Module, scaled_mm: bool = True) -> Iterator[int]:
    """Within the block: every block Linear of a loaded model is an Fp8Linear quantised from its own weight (the
    same model in fp8, for speed and numerics side by side with bf16); the originals are put back on exit.
    Yields how many layers were swapped. Needs room for the fp8 copies (half the blocks' bf16 bytes): the
    originals are kept where they are to be put back."""
    originals: Swapped = []
    try:
        quantize_linears(block_linears(module), scaled_mm, keep=originals.append)
        yield len(originals)
    finally:
        put_back(originals)
