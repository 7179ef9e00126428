"""Peak GPU memory of a render, estimated before anything loads: from the components' configs and a job's shape.

Weights: every component is built on the meta device (no memory, no file read) and its parameters counted; bf16
is 2 bytes a parameter, FP8 block Linears 1 (weights.fp8). A job's LoRAs are counted by the planner
(residency.LoraLoad).

Activations: the real diffusers modules run on the meta device with the job's real shapes, and `LiveBytes` adds
up the tensors they create that are alive at once (the same tensors a real CPU run creates; the tests check it
there). Meta tensors compute only shapes, so a full-size 48-block forward or a 300-frame decode takes a fraction
of a second. What each phase runs, and why that is its peak:
- denoise: ONE transformer block with the job's token counts and guidance rows. Inference keeps no activations
  between blocks, so every block peaks alike (a two-block run measures the same); the per-token timestep
  modulation (6-9 x width per token) and RoPE tables made once per forward are in it. Under an FP8 plan the
  block's Linears are weights.fp8.Fp8Linear, run as the GPU runs them (torch._scaled_mm works on meta): each
  quantises its input through float32 copies, which raises the peak (LTX-2, 10 s at 768x512: 4.75 -> 6.12 GiB;
  eager: compiled blocks fuse them, but compile is off where blocks stream).
- decode: the video VAE decoder, whole or with diffusers' tiling, on the largest chunk the clip's video is decoded
  in (engine.memory.decode_spans: 17 latent frames at most, however long the clip).
- condition: the video VAE encoding one conditioning frame; for a lip-sync, also the whole voice's log-mel and
  audio VAE encoding (done once for the clip, windows or not: ~3.8 GiB for a 600-s voice), whichever is larger.
- prompt: Gemma cannot run on meta (it calls .item()), so a formula, checked on the tiny Gemma on a CPU: every
  layer's hidden states are kept (output_hidden_states) and stacked once more by the pipeline, plus the
  vocabulary logits of the last layer and one layer's MLP.

On a GPU the caching allocator and cuDNN workspaces add to the live tensors: GPU_OVERHEAD is that ratio for the
bytes torch.cuda.max_memory_allocated counts, fitted on ONE H200 peak (bench/logs/2026-11-30-h200-run2.json: the
decode phase of the 80-GB plan, bf16, nothing moving, 10-s 768x512 lip-sync, whole decode: 77.24 GiB peak with
64.07 GiB of weights, where these formulas give 9.47 GiB for the decode). It predicts the other three decode peaks
of that plan benchmarked on the H200 within 3%; every other phase and plan (denoise, prompt, FP8, components
moving, streamed blocks, 24-48 GB cards) is a prediction no GPU has checked yet. FRAGMENTATION adds what
allocated bytes do not see (reserved minus allocated).
"""

from __future__ import annotations

import json
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ...jobs.spec import RenderSpec
from ...media.mel import SAMPLE_RATE, log_mel
from .decode_spans import decode_spans
from .estimate_cache import persisted

GIB = 2**30
BF16 = 2  # bytes a parameter / activation value on the GPU
GPU_OVERHEAD = 1.39  # allocated GPU bytes over live tensors: fitted on one H200 decode peak (see above)
# Reserved minus allocated at a peak, per live activation byte: the caching allocator reuses a freed block for any
# request that fits in it, so what it cannot reuse is a hole smaller than what is being asked for, at most about
# the largest single activation. On the meta device that is 14-16% of the live peak in the denoise (bf16 and FP8)
# and 20-24% in the decode (LTX-2, 5-10 s, whole and tiled, FFNs whole and chunked): 0.25 covers each. Not measured
# on a GPU: the benchmarks record max_memory_allocated only. Weights are not charged: they are allocated once a
# phase, in blocks they fill.
FRAGMENTATION = 0.25
TEXT_TOKENS = 1024  # the prompt is padded to this many tokens (Renderer.max_sequence_length)
COMPONENTS = ("transformer", "connectors", "text_encoder", "vae", "audio_vae", "vocoder", "latent_upsampler")


class LiveBytes(TorchDispatchMode):
    """Peak bytes of tensor storages created inside the block and alive at once (on any device, meta included).

    Every op's outputs pass through here; a storage counts from its first tensor until the last tensor viewing it
    is garbage. Tensors made before the block (weights, inputs) are not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.refs: dict[int, int] = {}
        self.size: dict[int, int] = {}
        self.current = self.peak = 0

    def _drop(self, key: int) -> None:
        self.refs[key] -= 1
        if not self.refs[key]:
            del self.refs[key]
            self.current -= self.size.pop(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {id(a) for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)}
        for t in tree_flatten(out)[0]:
            if not isinstance(t, torch.Tensor) or id(t) in inputs:  # in-place ops return their input
                continue
            storage = t.untyped_storage()
            key = storage._cdata  # the StorageImpl: unique on meta too, where every data_ptr is 0
            if key not in self.refs:
                self.refs[key], self.size[key] = 0, storage.nbytes()
                self.current += self.size[key]
                self.peak = max(self.peak, self.current)
            self.refs[key] += 1
            weakref.finalize(t, self._drop, key)
        return out


@dataclass(frozen=True)
class Clip:
    """What a render's memory depends on: its latent grid, guidance rows, prompt length and conditioning."""

    width: int
    height: int
    num_frames: int  # rendered pixel frames (8k+1)
    audio_latents: int
    rows: int = 1  # guidance passes batched in one forward (cond, uncond, STG, isolated)
    guides: int = 0  # keyframes appended as one latent frame of tokens each
    two_stage: bool = False
    text_tokens: int = TEXT_TOKENS
    voice_samples: int = 0  # a lip-sync's voice, encoded whole in the condition phase (16 kHz samples)

    @property
    def latent_frames(self) -> int:
        return (self.num_frames - 1) // 8 + 1

    @property
    def video_tokens(self) -> int:
        return (self.latent_frames + self.guides) * (self.height // 32) * (self.width // 32)

    def half(self) -> Clip:
        """Stage 1 of a two-stage render: half the latent rows and columns (rounded up)."""
        rows, cols = -(-self.height // 64), -(-self.width // 64)
        return Clip(cols * 32, rows * 32, self.num_frames, self.audio_latents, self.rows, self.guides)

    @classmethod
    def of(cls, spec: RenderSpec) -> Clip:
        """A RenderSpec's clip: for a clip rendered in windows, its largest window (each window is denoised and
        decoded on its own; the held overlap replaces tokens, the keyframes it owns are appended)."""
        from ...jobs.guidance import Scales
        from ...jobs.windows import owner, spec_windows

        rows = Scales.from_spec(spec.guidance).most_rows
        guides = [kf.frame for kf in spec.keyframes if kf.frame != 0]
        voice = voice_samples(spec.num_frames, spec.fps) if spec.mode == "lipsync" else 0
        if spec.window is None:
            frames, audio, most_guides = spec.num_frames, spec.audio_latent_frames, len(guides)
        else:
            windows = spec_windows(spec)
            frames, audio = max(w.frames for w in windows), max(w.audio_latents for w in windows)
            most_guides = max(Counter(owner(windows, f) for f in guides).values(), default=0)
        return cls(spec.width, spec.height, frames, audio, rows, most_guides, spec.two_stage, voice_samples=voice)


def voice_samples(num_frames: int, fps: float) -> int:
    """The samples of a lip-sync's voice, as engine.inputs fits it to the whole clip's frames."""
    return round(num_frames / fps * SAMPLE_RATE)


def folder_configs(folder: Path) -> dict[str, dict]:
    """{component: config} of a diffusers-format folder (or a folder of reference configs)."""
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(folder.glob("*/config.json"))}


def model_configs(path: Path, version: str | None = None) -> dict[str, dict]:
    """The component configs of resolved weights: a diffusers folder's files, or a single file's own metadata
    (its text encoder, which it does not hold, from the version's reference Gemma)."""
    if path.is_dir():
        return folder_configs(path)
    from ...weights import single_file
    from ...weights.configs import reference_configs

    plan = single_file.plan(path)
    return {"text_encoder": reference_configs(plan.version)["text_encoder"]} | plan.configs


@dataclass(frozen=True)
class Weights:
    """Parameter counts by component, and how many of the transformer's sit in FP8-able block Linears."""

    params: Mapping[str, int]
    block_linear_params: int  # transformer blocks' Linear weights: 1 byte each in FP8
    text_linear_params: int  # Gemma's decoder-layer Linear weights: 1 byte each in FP8
    block_params: int = 0  # every parameter of the transformer blocks
    layers: int = 1  # transformer blocks
    block_io: tuple[int, ...] = ()  # each block's in + out features over its Linears: a rank-r LoRA has r x this

    def lora_bytes(self, rank: int) -> int:
        """GPU bytes of a rank-`rank` LoRA over every block Linear (its A and B matrices in bf16)."""
        return sum(self.lora_blocks(rank))

    def lora_blocks(self, rank: int) -> tuple[int, ...]:
        """The bytes of such a LoRA in each transformer block."""
        return tuple(BF16 * rank * io for io in self.block_io)

    def bytes(self, component: str, fp8: bool = False) -> int:
        n = self.params.get(component, 0)
        shrink = {"transformer": self.block_linear_params, "text_encoder": self.text_linear_params}.get(component, 0)
        return BF16 * n - (shrink if fp8 else 0)

    def block_bytes(self, fp8: bool = False) -> int:
        """One transformer block's weights (what streaming a block takes off the GPU)."""
        return (BF16 * self.block_params - (self.block_linear_params if fp8 else 0)) // self.layers


def weights(configs: Mapping[str, dict]) -> Weights:
    key = json.dumps({k: configs[k] for k in COMPONENTS if k in configs}, sort_keys=True)
    return _weights(key)


@persisted(load=lambda fields: Weights(**{**fields, "block_io": tuple(fields["block_io"])}))
def _weights(key: str) -> Weights:
    from ...weights.fp8 import block_linears, text_layer_linears

    configs = json.loads(key)
    params, block, text, blocks, layers, io = {}, 0, 0, 0, 1, ()
    for name, config in configs.items():
        module = _meta_module(name, config)
        params[name] = sum(p.numel() for p in {id(p): p for p in module.parameters()}.values())
        if name == "transformer":
            linears = [layer for _, _, layer in block_linears(module)]
            block = sum(layer.weight.numel() for layer in linears)
            io = tuple(_linear_io(b) for b in module.transformer_blocks)
            blocks = sum(p.numel() for p in module.transformer_blocks.parameters())
            layers = len(module.transformer_blocks)
        if name == "text_encoder":
            text = sum(layer.weight.numel() for _, _, layer in text_layer_linears(module))
    return Weights(params, block, text, blocks, layers, io)


def _linear_io(block: torch.nn.Module) -> int:
    """In + out features summed over a block's Linears (those weights.fp8.block_linears finds)."""
    return sum(m.in_features + m.out_features for m in block.modules() if type(m) is torch.nn.Linear)


def _meta_module(name: str, config: dict) -> torch.nn.Module:
    from accelerate import init_empty_weights

    from ...weights.components import component_classes
    from ...weights.quiet import quiet_libraries

    quiet_libraries()
    with init_empty_weights(include_buffers=True):
        if name == "text_encoder":
            import transformers

            cls = getattr(transformers, config.get("architectures", ["Gemma3ForConditionalGeneration"])[0])
            return cls._from_config(transformers.AutoConfig.for_model(**config), dtype=torch.bfloat16)
        if name == "vocoder" and config.get("_class_name") == "LTX2VocoderWithBWE":
            from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE as cls
        else:
            cls = component_classes()[name]
        return cls.from_config(config).to(torch.bfloat16).eval()


def activations(
    configs: Mapping[str, dict], clip: Clip, tiled: bool = False, ffn_chunks: int = 1, fp8: bool = False
) -> dict[str, int]:
    """Live activation bytes of each phase's peak (before GPU_OVERHEAD), bf16; `fp8`: the transformer blocks'
    Linears in FP8, as the plan runs them."""
    stages = [clip.half(), Clip(**{**clip.__dict__, "rows": 1, "two_stage": False})] if clip.two_stage else [clip]
    voice = _voice(json.dumps(configs["audio_vae"]), clip.voice_samples) if clip.voice_samples else 0
    rows, cols = clip.height // 32, clip.width // 32
    return {
        "prompt": _prompt(configs, clip.text_tokens),
        "condition": max(_condition(json.dumps(configs["vae"]), clip.width, clip.height), voice),
        "denoise": max(_denoise(json.dumps(configs["transformer"]), s, ffn_chunks, fp8) for s in stages),
        "decode": _decode(json.dumps(configs["vae"]), decoded_frames(clip.latent_frames), rows, cols, tiled),
    }


@persisted
def _denoise(config_json: str, clip: Clip, ffn_chunks: int, fp8: bool = False) -> int:
    from ...weights.fp8 import swap_block_linears
    from .ffn_chunks import chunk_feed_forwards

    config = {**json.loads(config_json), "num_layers": 1}
    model = _meta_module("transformer", config)
    if fp8:
        swap_block_linears(model)
    chunk_feed_forwards(model, ffn_chunks)

    def meta(*shape: int, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
        return torch.empty(*shape, dtype=dtype, device="meta")

    with torch.no_grad(), fused_attention(), LiveBytes() as live:
        model(**forward_inputs(config, clip, meta))
    return live.peak


def forward_inputs(config: dict, clip: Clip, tensor: Callable[..., torch.Tensor]) -> dict[str, Any]:
    """The transformer's forward arguments for `clip`, each tensor made by `tensor(*shape, dtype=...)` (meta for
    the estimate, random for a benchmark); masks and timesteps are float32, the rest bf16."""
    d = config["num_attention_heads"] * config["attention_head_dim"]
    a = config["audio_num_attention_heads"] * config["audio_attention_head_dim"]
    # Text widths the blocks see: Gemma's, projected inside (2.0), or the connectors' own per stream (2.3 on).
    text_v, text_a = (config["caption_channels"],) * 2 if config.get("use_prompt_embeddings", True) else (d, a)
    n, nv, na, nt = clip.rows, clip.video_tokens, clip.audio_latents, clip.text_tokens
    f32 = torch.float32
    sigma = tensor(n, dtype=f32)
    return {
        "hidden_states": tensor(n, nv, config["in_channels"], dtype=torch.bfloat16),
        "audio_hidden_states": tensor(n, na, config["audio_in_channels"], dtype=torch.bfloat16),
        "encoder_hidden_states": tensor(n, nt, text_v, dtype=torch.bfloat16),
        "audio_encoder_hidden_states": tensor(n, nt, text_a, dtype=torch.bfloat16),
        "timestep": tensor(n, nv, dtype=f32),
        "audio_timestep": tensor(n, na, dtype=f32),
        "sigma": sigma,
        "audio_sigma": sigma,
        "encoder_attention_mask": tensor(n, nt, dtype=f32),
        "audio_encoder_attention_mask": tensor(n, nt, dtype=f32),
        "num_frames": nv // ((clip.height // 32) * (clip.width // 32)),
        "height": clip.height // 32,
        "width": clip.width // 32,
        "audio_num_frames": na,
        "use_cross_timestep": not config.get("use_prompt_embeddings", True),
        "return_dict": False,
    }


@contextmanager
def fused_attention() -> Iterator[None]:
    """SDPA as the GPU runs it (flash / cuDNN kernels): the output and a float32 log-sum-exp per query, never the
    query x key scores, which the meta device's math fallback would materialise."""
    sdpa = F.scaled_dot_product_attention

    def fused(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        torch.empty(query.shape[:-1], dtype=torch.float32, device=query.device)  # the log-sum-exp, freed at once
        return query.new_empty(*query.shape[:-1], value.shape[-1])

    F.scaled_dot_product_attention = fused
    try:
        yield
    finally:
        F.scaled_dot_product_attention = sdpa


def decoded_frames(latent_frames: int) -> int:
    """Latent frames in the largest decode of a clip: its chunks are decoded one at a time and each leaves for the
    encoder before the next (engine.memory.decode_spans), so no decode holds the whole clip."""
    return max(span.stop - span.start for span in decode_spans(latent_frames))


TILED_EXACT_FRAMES = 9  # latent frames up to which a tiled decode is run whole on meta (longer: ~0.35 s a tile)


def _decode(config_json: str, frames: int, rows: int, cols: int, tiled: bool) -> int:
    """Whole: one meta run. Tiled: the decoded tiles pile up linearly in the frame count, so a long clip is
    extrapolated from runs at 5 and 9 latent frames, plus the final concatenation of the whole output (which
    makes it an overestimate: 2.39 vs 2.07 GiB measured for LTX-2's 39 latent frames of 768x512)."""
    if not tiled or frames <= TILED_EXACT_FRAMES:
        return _decode_run(config_json, frames, rows, cols, tiled)
    short, long = (_decode_run(config_json, f, rows, cols, True) for f in (5, TILED_EXACT_FRAMES))
    per_frame = (long - short) / (TILED_EXACT_FRAMES - 5)
    output = BF16 * 3 * ((frames - 1) * 8 + 1) * rows * cols * 32 * 32
    return int(long + per_frame * (frames - TILED_EXACT_FRAMES) + output)


@persisted
def _decode_run(config_json: str, frames: int, rows: int, cols: int, tiled: bool) -> int:
    config = json.loads(config_json)
    vae = _meta_module("vae", config)
    if tiled:
        from .retry import enable_tiles

        enable_tiles(vae)
    latent = torch.empty(1, config["latent_channels"], frames, rows, cols, dtype=torch.bfloat16, device="meta")
    with torch.no_grad(), LiveBytes() as live:
        vae.decode(latent, return_dict=False)
    return live.peak


@persisted
def _voice(config_json: str, samples: int) -> int:
    """A lip-sync's whole voice as engine.latents.encode_audio encodes it: copied to the GPU as float32 stereo,
    its log-mel, and the audio VAE's encoder over every mel frame."""
    vae = _meta_module("audio_vae", json.loads(config_json))
    with torch.no_grad(), LiveBytes() as live:
        mel = log_mel(torch.empty(2, samples, dtype=torch.float32, device="meta"))
        vae.encode(mel.to(torch.bfloat16)).latent_dist.mode().float()
    return live.peak


@persisted
def _condition(config_json: str, width: int, height: int) -> int:
    vae = _meta_module("vae", json.loads(config_json))
    with torch.no_grad(), LiveBytes() as live:
        vae.encode(torch.empty(1, 3, 1, height, width, dtype=torch.bfloat16, device="meta"))
    return live.peak


def _prompt(configs: Mapping[str, dict], tokens: int) -> int:
    """Gemma's forward as diffusers' encode_prompt runs it (see the module docstring)."""
    config = configs.get("text_encoder", {})
    text = config.get("text_config", config)
    hidden, layers = text.get("hidden_size", 3840), text.get("num_hidden_layers", 48)
    vocab, mlp = text.get("vocab_size", 262208), text.get("intermediate_size", 15360)
    kept = 2 * (layers + 1) * tokens * hidden  # the hidden states, and the pipeline's stacked copy
    return BF16 * (kept + tokens * vocab + 3 * tokens * mlp)
