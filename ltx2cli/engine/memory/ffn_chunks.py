"""Feed-forwards run over the tokens in chunks: the 4x-wide hidden layer (and its GELU copy) exists for one chunk
at a time instead of the whole clip, the last memory lever before a job fails for lack of GPU memory.

The FFN acts on each token alone, so chunking changes no number beyond what a GEMM over fewer rows may round
differently (and, on FP8 blocks, the activations' per-tensor scale, then taken per chunk: FP8 rounding).

Chunking replaces only the FeedForward's `forward`, on the instance: no module is wrapped or renamed, so a LoRA
finds `transformer_blocks.N.ff.net.0.proj` whether the FFNs are chunked or not, and whichever comes first (LoRAs
load between jobs; a plan or an out-of-memory retry chunks the FFNs at any time).
"""

from __future__ import annotations

from types import MethodType

import torch
from torch import nn

FFN_CHUNKS = 4  # the token chunks a plan or an out-of-memory retry splits each feed-forward into
FFN_NAMES = ("ff", "audio_ff")  # each transformer block's video and audio feed-forward


def _chunked_forward(ff: nn.Module, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """The class's own forward over each token chunk, written into one preallocated output."""
    forward = type(ff).forward
    tokens = hidden_states.shape[1]
    size = -(-tokens // ff.ffn_chunks)
    out = None
    for start in range(0, tokens, size):
        part = forward(ff, hidden_states[:, start : start + size], *args, **kwargs)
        if out is None:
            out = part.new_empty(*hidden_states.shape[:-1], part.shape[-1])
        out[:, start : start + size] = part
    return out


def chunk_feed_forwards(transformer: nn.Module, chunks: int) -> None:
    """Run every block's video and audio FFN in `chunks` token chunks (1: whole, undoing an earlier call)."""
    for block in getattr(transformer, "transformer_blocks", []):
        for name in FFN_NAMES:
            ff = getattr(block, name)
            ff.__dict__.pop("forward", None)  # back to the class's forward
            ff.ffn_chunks = max(chunks, 1)
            if chunks > 1:
                ff.forward = MethodType(_chunked_forward, ff)


def ffn_chunks(transformer: nn.Module) -> int:
    """How many chunks the blocks' FFNs run in now."""
    blocks = getattr(transformer, "transformer_blocks", [])
    ff = getattr(blocks[0], "ff", None) if len(blocks) else None
    return getattr(ff, "ffn_chunks", 1)
