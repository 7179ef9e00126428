"""A tiny random-weight LTX-2 saved in the real diffusers folder layout (for tests, demos and benchmarks).

Same component classes, feature flags and compression ratios as `Lightricks/LTX-2` (video VAE 32x spatial and 8x
temporal, audio 16 kHz / 64 mel bins / hop 160 / 4x latent downsampling, vocoder 24 kHz, split RoPE, audio stream
with a2v/v2a cross-attention); only widths and depths shrink. Real sizes are noted next to each tiny value.

Also as LTX-2.3 and LTX-2.5 (`variant="2.3"` / `"2.5"`, synthetic.tiny25): the same dimensions with that release's
components and flags, and its distilled LoRA under the file name the release ships it as.

Heavy libraries (torch, diffusers, transformers) are imported inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path
from typing import Any

from ..weights.source import MODEL_ENV, TINY
from . import tiny25
from .tiny_configs import (
    AUDIO_VAE,
    CONNECTORS,
    EXTRA_SPECIAL_TOKENS,
    LATENT_UPSAMPLER,
    LORAS,
    MAX_SEQUENCE_LENGTH,
    SCHEDULER,
    SPECIAL_TOKENS,
    TEXT_ENCODER,
    TRANSFORMER,
    VAE,
    VOCAB_SIZE,
    VOCODER,
)

TINY_VERSION = 2  # bump when the build code changes in a way the configs below do not show

# Shared dimensions: every consistency rule between components is written once, here.
VARIANTS = ("2.0", "2.3", "2.5")  # LTX releases the tiny model comes as (2.3, 2.5: synthetic.tiny25)


def tiny_config_hash(variant: str = "2.0") -> str:
    """Hash of everything that shapes the saved folder: configs, build version, library versions."""
    blob: dict[str, Any] = {
        "version": TINY_VERSION,
        "components": [TRANSFORMER, CONNECTORS, VAE, AUDIO_VAE, VOCODER, LATENT_UPSAMPLER, SCHEDULER, TEXT_ENCODER],
        "tokens": SPECIAL_TOKENS + EXTRA_SPECIAL_TOKENS,
        "loras": LORAS,
        "libs": [version(p) for p in ("torch", "diffusers", "transformers", "tokenizers", "safetensors")],
    }
    if variant != "2.0":  # the 2.0 blob stays as it was: its folder name must not change
        blob["variant"] = [variant, tiny25.CONFIGS[variant], tiny25.loras(variant)]
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:12]


def resolve_tiny(model: str | None) -> str | None:
    """`tiny` (from --model or $LTX2_MODEL_DIR) -> the tiny model's folder, built on first use; any other model as
    given. The commands and the worker call this before the engine sees the model: the engine knows only folders
    and files."""
    chosen = model or os.environ.get(MODEL_ENV)
    return str(tiny_model_dir()) if chosen == TINY else model


def tiny_model_dir(cache_dir: Path | None = None, variant: str = "2.0") -> Path:
    """The tiny model's folder in the cache, built on first use; a config or library change gets a new folder."""
    from ..cache import cache_root

    if variant not in VARIANTS:
        raise ValueError(f"no tiny LTX-{variant}; there are {', '.join(VARIANTS)}")
    root = Path(cache_dir) if cache_dir else cache_root()
    name = "tiny-ltx2" if variant == "2.0" else f"tiny-ltx{variant.replace('.', '')}"
    final = root / f"{name}-v{TINY_VERSION}-{tiny_config_hash(variant)}"
    if (final / "model_index.json").is_file():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".building-tiny-", dir=root))
    try:
        build_tiny_model(tmp, variant=variant)
        os.replace(tmp, final)  # atomic; fails if another process finished first
    except OSError:
        if not (final / "model_index.json").is_file():
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def build_tiny_model(path: Path, seed: int = 0, variant: str = "2.0") -> Path:
    """Build every component from `seed` and save the diffusers folder (float32) plus `loras/` at `path`."""
    import torch
    from diffusers import LTX2Pipeline

    from ..weights.quiet import quiet_libraries

    quiet_libraries()
    path = Path(path)
    makers, tokenizer = _MAKERS, make_tokenizer()
    if variant == "2.5":
        makers, tokenizer = {**_MAKERS, **tiny25.MAKERS}, make_tokenizer(add_bos=False)  # Gemma 4's: no BOS
    elif variant == "2.3":
        makers = {**_MAKERS, **tiny25.MAKERS_23}  # Gemma 3, as 2.0
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG untouched
        parts = {name: _seeded(seed, i, make) for i, (name, make) in enumerate(makers.items())}
        upsampler = _seeded(seed, len(makers), _make_latent_upsampler)
    pipe = LTX2Pipeline(**parts, tokenizer=tokenizer, scheduler=_make_scheduler())
    pipe.save_pretrained(path, safe_serialization=True)
    upsampler.save_pretrained(path / "latent_upsampler", safe_serialization=True)
    _match_reference_index(path / "model_index.json")
    if variant == "2.0":  # LORAS are named for LTX-2 19B: the LoRA check refuses them on another release
        build_tiny_loras(path, seed)
    else:
        build_tiny_loras(path, seed, tiny25.loras(variant))
    return path


def build_tiny_loras(path: Path, seed: int, loras: dict[str, tuple[int, tuple[str, ...]]] | None = None) -> None:
    """Write `<path>/loras/<name>.safetensors` for each of `loras` (LORAS), shaped for the transformer saved at
    `path`."""
    import torch
    from diffusers import LTX2VideoTransformer3DModel
    from safetensors.torch import save_file

    config = json.loads((Path(path) / "transformer" / "config.json").read_text())
    with torch.device("meta"):  # shapes only, no memory
        model = LTX2VideoTransformer3DModel.from_config(config)
    out = Path(path) / "loras"
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(seed + 1)
    for name, (rank, layers) in (LORAS if loras is None else loras).items():
        linears = {
            f"diffusion_model.transformer_blocks.{i}.{layer}": block.get_submodule(layer)
            for i, block in enumerate(model.transformer_blocks)
            for layer in layers
        }
        save_file(lora_tensors(linears, rank, gen), out / f"{name}.safetensors")


def lora_tensors(linears: dict[str, Any], rank: int, gen: Any) -> dict[str, Any]:
    """A random LoRA's tensors: lora_A / lora_B for each {key stem (the file's name of a layer): the Linear it
    adapts}, drawn from `gen` on its device, bf16 as released LTX-2 LoRAs are."""
    import torch

    tensors = {}
    for key, linear in linears.items():
        a = torch.randn(rank, linear.in_features, generator=gen, device=gen.device) / linear.in_features**0.5
        b = torch.randn(linear.out_features, rank, generator=gen, device=gen.device) * 0.5 / rank**0.5
        tensors[f"{key}.lora_A.weight"] = a.to(torch.bfloat16)
        tensors[f"{key}.lora_B.weight"] = b.to(torch.bfloat16)
    return tensors


def _seeded(seed: int, index: int, make: Any) -> Any:
    """Build one component from its own seed, so each is independent of the build order (float32 by default)."""
    import torch

    torch.manual_seed(seed * 1000 + index)
    return make().eval()


def _randomize_latent_stats(model: Any) -> Any:
    """Non-trivial latent mean/std (real checkpoints have them), so a forgotten (de)normalization shows."""
    import torch

    with torch.no_grad():
        model.latents_mean.copy_(torch.randn_like(model.latents_mean) * 0.1)
        model.latents_std.copy_(torch.rand_like(model.latents_std) + 0.5)
    return model


def _make_transformer() -> Any:
    from diffusers import LTX2VideoTransformer3DModel

    return LTX2VideoTransformer3DModel.from_config(TRANSFORMER)


def _make_connectors() -> Any:
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors

    return LTX2TextConnectors.from_config(CONNECTORS)


def _make_vae() -> Any:
    from diffusers import AutoencoderKLLTX2Video

    return _randomize_latent_stats(AutoencoderKLLTX2Video.from_config(VAE))


def _make_audio_vae() -> Any:
    from diffusers import AutoencoderKLLTX2Audio

    return _randomize_latent_stats(AutoencoderKLLTX2Audio.from_config(AUDIO_VAE))


def _make_vocoder() -> Any:
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder

    return LTX2Vocoder.from_config(VOCODER)


def _make_latent_upsampler() -> Any:
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    return LTX2LatentUpsamplerModel.from_config(LATENT_UPSAMPLER)


def _make_scheduler() -> Any:
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(SCHEDULER)


def _make_text_encoder() -> Any:
    from transformers import Gemma3Config, Gemma3ForConditionalGeneration

    return Gemma3ForConditionalGeneration(Gemma3Config(**TEXT_ENCODER))


def make_tokenizer(add_bos: bool = True) -> Any:
    """A byte-fallback BPE with Gemma's special tokens (no merges: one piece per character), built offline.

    Gemma 3's tokenizer adds BOS; Gemma 4's (LTX-2.5) does not."""
    from transformers import GemmaTokenizerFast

    pieces = SPECIAL_TOKENS + EXTRA_SPECIAL_TOKENS + [f"<0x{b:02X}>" for b in range(256)]
    pieces += ["▁"] + [chr(c) for c in range(33, 127)]  # "▁" is the space after Gemma's normalizer
    assert len(pieces) <= VOCAB_SIZE
    return GemmaTokenizerFast(
        vocab={p: i for i, p in enumerate(pieces)},
        merges=[],
        add_bos_token=add_bos,
        add_eos_token=False,
        model_max_length=MAX_SEQUENCE_LENGTH,
        extra_special_tokens=EXTRA_SPECIAL_TOKENS,
    )


_MAKERS: dict[str, Any] = {  # the weighted components, in seed order
    "transformer": _make_transformer,
    "connectors": _make_connectors,
    "vae": _make_vae,
    "audio_vae": _make_audio_vae,
    "vocoder": _make_vocoder,
    "text_encoder": _make_text_encoder,
}


def _match_reference_index(index_path: Path) -> None:
    """Make model_index.json read like the hub's: tokenizer class GemmaTokenizerFast (an alias in transformers 5)."""
    index = json.loads(index_path.read_text())
    index = {k: v for k, v in index.items() if v != [None, None]}  # unset optional components: not listed there
    index["tokenizer"] = ["transformers", "GemmaTokenizerFast"]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
