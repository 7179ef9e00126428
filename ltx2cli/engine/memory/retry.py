"""Running out of GPU memory mid-render: free what the failed attempt held and try once more with the next cheaper
setting, before the job fails with E_OOM (and the batch goes on).

- The video decode runs whole (fastest; bench/RESULTS.md) and, if that runs out of memory, again tiled: the
  denoised latents are kept, only the decode is redone. Tiles blend at their seams, so the retry is noted in the
  sidecar.
- The denoising runs once more with Gemma moved off the GPU (about 23 GiB for LTX-2's 12B) when it is there,
  else with the feed-forwards in token chunks (engine.memory.ffn_chunks). Either lesson holds for the rest of the
  process's jobs (placement.Lessons: later placements and plans keep it), so no later job runs out the same way.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def enable_tiles(vae: Any) -> None:
    """diffusers' spatial tiles AND its temporal ("framewise") ones: spatial tiles alone still decode every frame
    of a tile at once (measured on the meta device: 10-s 768x512, 9.5 GiB whole, 6.3 spatial, see estimate.py)."""
    vae.enable_tiling()
    vae.use_framewise_decoding = True


@contextmanager
def tiled_vae(vae: Any) -> Iterator[None]:
    was = bool(getattr(vae, "use_tiling", False)), bool(getattr(vae, "use_framewise_decoding", False))
    enable_tiles(vae)
    try:
        yield
    finally:
        if not was[0]:
            vae.disable_tiling()
        vae.use_framewise_decoding = was[1]


def decode_with_fallback(vae: Any, decode: Callable[[], T], notes: list[str]) -> T:
    """decode(); on out-of-memory and an untiled VAE, decode() again with tiling on."""
    try:
        return decode()
    except torch.OutOfMemoryError:
        if getattr(vae, "use_tiling", False):
            raise
    free()  # outside the except block: its traceback no longer holds the failed attempt's tensors
    notes.append("video decode ran out of GPU memory whole; decoded in tiles")
    with tiled_vae(vae):
        return decode()


def denoise_with_fallback(models: Any, denoise: Callable[[], T], notes: list[str]) -> T:
    """denoise(); on out-of-memory, free the next lever and denoise() once more: Gemma moved off the GPU when it
    is there, else the feed-forwards run in token chunks (engine.memory.ffn_chunks; the same numbers). The lever stays
    pulled for the models' later jobs (Models.lessons)."""
    from .ffn_chunks import FFN_CHUNKS, chunk_feed_forwards, ffn_chunks

    transformer = models.transformer
    try:
        return denoise()
    except torch.OutOfMemoryError:
        offload = models.text_encoder_offloadable
        if not offload and ffn_chunks(transformer) >= FFN_CHUNKS:
            raise
    free()
    if offload:
        models.offload_text_encoder()
        notes.append("denoising ran out of GPU memory; retried with the text encoder moved to the CPU")
    else:
        models.lessons = replace(models.lessons, ffn_chunks=FFN_CHUNKS)
        chunk_feed_forwards(transformer, FFN_CHUNKS)
        notes.append(f"denoising ran out of GPU memory; retried with the feed-forwards in {FFN_CHUNKS} token chunks")
    return denoise()
