"""Feed-forwards run over the tokens in chunks: the 4x-wide hidden layer (and its GELU copy) exists for one chunk
at a time instead of the whole clip, the last memory lever before a job fails for lack of GPU memory.

The FFN acts on each token alone, so chunking changes no number (tested bit for bit on the CPU).
"""

from __future__ import annotations

import torch
from torch import nn

FFN_CHUNKS = 4  # the token chunks a plan or an out-of-memory retry splits each feed-forward into


class ChunkedFeedForward(nn.Module):
    """Wraps a FeedForward; forward writes each token chunk's output into one preallocated tensor."""

    def __init__(self, ff: nn.Module, chunks: int):
        super().__init__()
        self.ff, self.chunks = ff, chunks

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        tokens = hidden_states.shape[1]
        size = -(-tokens // self.chunks)
        out = None
        for start in range(0, tokens, size):
            part = self.ff(hidden_states[:, start : start + size], *args, **kwargs)
            if out is None:
                out = part.new_empty(*hidden_states.shape[:-1], part.shape[-1])
            out[:, start : start + size] = part
        return out


def chunk_feed_forwards(transformer: nn.Module, chunks: int) -> None:
    """Run every block's video and audio FFN in `chunks` token chunks (1: whole, undoing an earlier call)."""
    for block in getattr(transformer, "transformer_blocks", []):
        for name in ("ff", "audio_ff"):
            ff = getattr(block, name)
            inner = ff.ff if isinstance(ff, ChunkedFeedForward) else ff
            setattr(block, name, inner if chunks <= 1 else ChunkedFeedForward(inner, chunks))


def ffn_chunks(transformer: nn.Module) -> int:
    """How many chunks the blocks' FFNs run in now."""
    blocks = getattr(transformer, "transformer_blocks", [])
    ff = getattr(blocks[0], "ff", None) if len(blocks) else None
    return ff.chunks if isinstance(ff, ChunkedFeedForward) else 1
