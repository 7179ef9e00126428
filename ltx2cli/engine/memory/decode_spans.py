"""The chunks a clip's video is decoded in (streamed to the encoder chunk by chunk): which latent frames each
decodes and which of its pixel frames it keeps. The render decodes by them (engine.render); the memory estimate
sizes the decode phase by the largest (engine.memory.estimate)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

# A clip's video is decoded in chunks of about DECODE_CHUNK latent frames (64 pixel frames), each decoded with
# DECODE_CONTEXT latent frames more on either side whose pixels are cut off, so each chunk can go to the encoder as
# soon as it exists. LTX-2's decoder is not causal: an output frame depends on ~22 latent frames either way,
# fading with distance, so a chunk differs from the whole decode by what lies beyond its context. Measured on the
# full-size decoder (random weights, 24 latent frames), context 2 / 3 / 4 gave 30.0 / 35.8 / 41.9 dB against the
# whole decode (mean |diff| 0.017 / 0.008 / 0.004, max 0.39 / 0.21 / 0.09 on [0, 1]) for 1.33 / 1.50 / 1.67x its
# work; ltx-core's blended temporal tiles (8 latent frames, overlap 3) gave less at equal work. diffusers' tiled
# decode, for comparison, differs by 0.030 mean / 0.95 max (bench/RESULTS.md).
DECODE_CHUNK = 8
DECODE_CONTEXT = 4


@dataclass(frozen=True)
class Span:
    """One chunk of a streamed decode: latent frames [start, stop) are decoded, pixel frames `keep` (of that
    decode) are the chunk's."""

    start: int
    stop: int
    keep: slice


def decode_spans(frames: int, chunk: int = DECODE_CHUNK, context: int = DECODE_CONTEXT) -> list[Span]:
    """The chunks a clip of `frames` latent frames is decoded in, in order; their kept pixel frames join to the
    clip's 8(frames - 1) + 1. A clip that fits one chunk with its context is decoded whole (exactly)."""
    if frames <= chunk + context:
        return [Span(0, frames, slice(0, None))]
    count = max(round(frames / chunk), 2)
    cuts = [round(i * frames / count) for i in range(count + 1)]  # cores of equal length
    spans = []
    for a, b in itertools.pairwise(cuts):
        start, stop = max(a - context, 0), min(b + context, frames)
        # latent frame j > 0 owns pixel frames 8j-7 .. 8j; a decode from latent `start` begins at pixel 8*start
        first = 0 if a == 0 else 8 * a - 7
        spans.append(Span(start, stop, slice(first - 8 * start, 8 * (b - 1) + 1 - 8 * start)))
    return spans
