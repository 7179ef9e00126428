"""Model FLOPs of one LTX-2 transformer forward, from its config: the numerator of achieved TFLOP/s and MFU."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) for MFU; fp8 doubles them on these parts.
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0}


def transformer_flops(config: Mapping[str, Any], video_tokens: int, audio_tokens: int, text_tokens: int) -> int:
    """FLOPs (2 per multiply-add) of the 48 (num_layers) audio-video blocks for ONE sample in the batch.

    Counts every matmul of a block and the two attention matmuls (QK^T and AV: 4*Sq*Sk*inner); leaves out
    elementwise work (norms, RoPE, softmax, gating) and what runs once per forward outside the blocks (patchify,
    adaLN timestep MLP, caption projection, proj_out): under 2% at full size. Per block, with d = video width
    (heads x head dim), a = audio width, c / ca = the text widths the video / audio cross-attention read:
      video self-attn   Q,K,V,O d->d over Nv        + 4*Nv*Nv*d
      video text-attn   Q,O d->d over Nv, K,V c->d over Nt + 4*Nv*Nt*d
      audio self-attn   Q,K,V,O a->a over Na        + 4*Na*Na*a
      audio text-attn   Q,O a->a over Na, K,V ca->a over Nt + 4*Na*Nt*a
      a2v (Q video)     Q d->a, O a->d over Nv, K,V a->a over Na + 4*Nv*Na*a
      v2a (Q audio)     Q,O a->a over Na, K,V d->a over Nv       + 4*Na*Nv*a
      feed-forwards     d->4d->d over Nv, a->4a->a over Na
    """
    d = config["num_attention_heads"] * config["attention_head_dim"]
    a = config["audio_num_attention_heads"] * config["audio_attention_head_dim"]
    c, ca = config["cross_attention_dim"], config["audio_cross_attention_dim"]
    nv, na, nt = video_tokens, audio_tokens, text_tokens

    def lin(n: int, i: int, o: int) -> int:
        return 2 * n * i * o

    def attn(sq: int, sk: int, inner: int) -> int:
        return 4 * sq * sk * inner

    block = (
        4 * lin(nv, d, d) + attn(nv, nv, d)
        + 2 * lin(nv, d, d) + 2 * lin(nt, c, d) + attn(nv, nt, d)
        + 4 * lin(na, a, a) + attn(na, na, a)
        + 2 * lin(na, a, a) + 2 * lin(nt, ca, a) + attn(na, nt, a)
        + lin(nv, d, a) + lin(nv, a, d) + 2 * lin(na, a, a) + attn(nv, na, a)
        + 2 * lin(na, a, a) + 2 * lin(nv, d, a) + attn(na, nv, a)
        + 2 * lin(nv, d, 4 * d) + 2 * lin(na, a, 4 * a)
    )  # fmt: skip
    return config["num_layers"] * block


def peak_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of a known GPU by its torch name (e.g. 'NVIDIA H100 80GB HBM3'), else None."""
    for key, peak in PEAK_BF16_TFLOPS.items():
        if key in device_name:
            return peak
    return None
