"""Transformer blocks that live in (pinned) CPU memory and are copied to the GPU only for their own forward: the
24-GB plan's last lever, after FP8, moving every other component out, tiled decode and chunked feed-forwards.

Each streamed block costs one host-to-device copy of its weights per forward (FP8 LTX-2 19B: 0.36 GiB a block,
~15 ms at 25 GB/s over PCIe 4), so a plan streams the fewest blocks that make the denoise fit. The copy back is
free: the block's tensors are pointed at their host copies again and the GPU copies are released. The FP8 LoRA
adapters of a streamed block's Linears (models.lora_hooks) stream with it (`carry`; placement.settle_loras).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


class StreamedBlocks:
    """Forward hooks on `blocks` that bring their weights to `device` for the forward and take them away after."""

    def __init__(self, blocks: list[nn.Module], device: Any):
        self.blocks, self.device, self.copies = blocks, torch.device(device), 0
        self.host: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self.riders: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # carried: not the block's own
        self._hooks = []
        for block in blocks:
            pinned = torch.cuda.is_available()
            pairs = []
            for t in _tensors(block):
                t.data = t.data.to("cpu")
                if pinned:
                    t.data = t.data.pin_memory()
                pairs.append((t, t.data))
            self.host[id(block)] = pairs
            self._hooks.append(block.register_forward_pre_hook(self._bring))
            self._hooks.append(block.register_forward_hook(self._release))

    @property
    def ids(self) -> frozenset[int]:
        return frozenset(self.host)

    def carry(self, riders: Mapping[int, list[torch.Tensor]]) -> None:
        """From now on bring these tensors, by the id of the block whose forward uses them (its Linears' LoRA
        adapters), in with that block, from the host memory they are in now: these, and no others any more."""
        self.riders = {block: [(t, t.data) for t in tensors] for block, tensors in riders.items()}

    def _pairs(self, block: nn.Module) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return self.host[id(block)] + self.riders.get(id(block), [])

    def _bring(self, block: nn.Module, args: Any) -> None:
        for t, host in self._pairs(block):
            t.data = host.to(self.device, non_blocking=True)
        self.copies += 1

    def _release(self, block: nn.Module, args: Any, output: Any) -> None:
        for t, host in self._pairs(block):
            t.data = host

    def remove(self, device: Any) -> None:
        """Stop streaming: the blocks' weights go to `device` (where the rest of the transformer is) for good."""
        for hook in self._hooks:
            hook.remove()
        for pairs in self.host.values():
            for t, host in pairs:
                t.data = host.to(device)


def _tensors(module: nn.Module) -> list[torch.Tensor]:
    return list(module.parameters()) + list(module.buffers())


def stream_last_blocks(transformer: nn.Module, count: int, device: Any) -> StreamedBlocks | None:
    """Stream the last `count` transformer blocks (None for 0)."""
    if count <= 0:
        return None
    blocks = list(transformer.transformer_blocks)
    return StreamedBlocks(blocks[len(blocks) - count :], device)


def move_transformer(transformer: nn.Module, device: Any, streamed: StreamedBlocks | None) -> None:
    """transformer.to(device), leaving streamed blocks in host memory (moving them would copy them in for
    nothing, and raise the peak by their size)."""
    if streamed is None:
        transformer.to(device)
        return
    skip = streamed.ids
    for name, child in transformer.named_children():
        if name == "transformer_blocks":
            for block in child:
                if id(block) not in skip:
                    block.to(device)
        else:
            child.to(device)
    for t in list(transformer.parameters(recurse=False)) + list(transformer.buffers(recurse=False)):
        t.data = t.data.to(device)
