"""Loading LTX-2 weights into `Models`, once per process (the one cache of loaded models): a diffusers-format
folder (the tiny model's too) through `LTX2ImageToVideoPipeline.from_pretrained`, the loader diffusers' own LTX-2
pipelines use, or a single-file checkpoint assembled into the same pipeline with its text encoder."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from ...errors import ModelError
from ...weights.lora_files import is_distilled_checkpoint
from ...weights.quiet import quiet_libraries
from ...weights.source import ModelSource, find_upsampler, model_identity, resolve_model, text_encoder_files
from .loaded import Models


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str):
    """bf16 on GPUs (how LTX-2 ships and runs), float32 on CPU (bf16 matmuls there are slow and inexact)."""
    import torch

    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


_cache: dict[tuple, Models] = {}
_lock = threading.Lock()


def load_models(
    model: str | ModelSource | None, device: str | None = None, dtype: Any = None, on_host: bool = False
) -> Models:
    """Load (or return the already loaded) models for `model` (tiny, a folder, a single file, a ComfyUI root, or
    $LTX2_MODEL_DIR). `on_host`: the weights stay in CPU memory and a memory plan (engine.memory.residency) brings each
    component to the GPU when a phase needs it: how a model bigger than the GPU loads at all."""
    source = ModelSource.of(model).resolved()
    path = resolve_model(source)
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    load_on = "cpu" if on_host else device
    key = (str(path), str(device), str(dtype), load_on)
    if path.is_file():
        key += (source.text_encoder, source.precision)
    elif source.precision == "fp8":  # a folder's bf16 blocks quantised at load: other models than its bf16 ones
        key += ("fp8",)
    with _lock:
        if key not in _cache:
            if path.is_file():
                models = _load_single_file(path, source, load_on, dtype)
            else:
                models = _load(path, load_on, dtype, fp8=source.precision == "fp8")
            import torch

            models.device = torch.device(device)  # where it renders; placement.place moves components there
            _cache[key] = models
        return _cache[key]


def remember(models: Models) -> None:
    """Make `load_models(str(models.path))` return these models (benchmarks that built random weights in place)."""
    device = default_device()
    with _lock:
        _cache[(str(models.path), device, str(default_dtype(device)), device)] = models


def _load(path: Path, device: str, dtype: Any, fp8: bool = False) -> Models:
    import torch
    from diffusers import LTX2ImageToVideoPipeline

    quiet_libraries()
    try:
        pipe = LTX2ImageToVideoPipeline.from_pretrained(path, dtype=dtype, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"cannot load LTX-2 from {path}: {e.__class__.__name__}: {e}") from e
    pipe.set_progress_bar_config(disable=True)
    clamp_first_vocoder_stage(pipe.vocoder)
    pipe.to(device)
    upsampler = None
    if (folder := find_upsampler(path)) is not None:
        from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

        upsampler = LTX2LatentUpsamplerModel.from_pretrained(folder, dtype=dtype).to(device).eval()
    if torch.device(device).type == "cpu":
        _own_memory([*pipe.components.values(), upsampler])
    torch.set_grad_enabled(False)
    if fp8:  # --precision fp8 (or auto where it pays, engine.models.compile): the block Linears, layer by layer
        from ...weights.fp8 import block_linears, quantize_linears

        quantize_linears(block_linears(pipe.transformer))
    from ...weights.versions import folder_version

    identity = model_identity(path)
    return Models(path, pipe, torch.device(device), dtype, upsampler, identity, version=folder_version(path))


def clamp_first_vocoder_stage(vocoder: Any) -> None:
    """A bandwidth-extension vocoder (LTX-2.3 on) clamps its 16 kHz stage to +-1 before the BWE, as ltx-core builds
    it from the checkpoints' own config (`use_tanh_at_final: false` with the final activation on:
    ltx_core/model/audio_vae/vocoder.py); diffusers' converted configs say `final_act_fn: null`, which drops the
    clamp (tests/test_ltx_core_oracle.py measures 2.0e-1 where that stage exceeds 1)."""
    stage = getattr(vocoder, "vocoder", None)
    if getattr(vocoder, "bwe_generator", None) is not None and getattr(stage, "final_act_fn", "") is None:
        stage.final_act_fn = "clamp"
        vocoder.register_to_config(final_act_fn="clamp")  # the config says what runs (a single file's says so too)


def _own_memory(modules: list[Any]) -> None:
    """Give every CPU weight its own allocation. from_pretrained leaves them in the files' memory maps, at whatever
    byte offset the file layout gives; an unaligned weight takes other SIMD paths, so the same weights rendered
    differently (last bit) from a folder and from a single file (weights.owned says why)."""
    import torch

    from ...weights.owned import owned

    for module in modules:
        if isinstance(module, torch.nn.Module):
            for tensor in [*module.parameters(), *module.buffers()]:
                tensor.data = owned(tensor.data, tensor.device)


def _load_single_file(path: Path, source: ModelSource, device: str, dtype: Any) -> Models:
    """A Lightricks single-file checkpoint plus a text encoder from a folder, assembled like a diffusers folder."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, LTX2ImageToVideoPipeline
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from ...weights import single_file

    quiet_libraries()
    plan = single_file.plan(path)
    precision = single_file.resolve_precision(source.precision or "auto", plan, device)
    weights_dir, tokenizer_dir = text_encoder_files(path, source.text_encoder)
    from ...weights.text_encoder import wrong_family

    if wrong := wrong_family(plan.version, weights_dir):  # from headers, before anything loads
        raise ModelError(f"{path.name}: {wrong}")
    parts = single_file.load_components(plan, device, dtype, precision)
    if weights_dir.is_file():
        from ...weights.text_encoder import load_gemma_file

        text_encoder, tokenizer = load_gemma_file(weights_dir, device, dtype)
    else:
        try:
            text_encoder = AutoModelForImageTextToText.from_pretrained(  # Gemma 3 or Gemma 4, by its config
                weights_dir, dtype=dtype, local_files_only=True
            )
            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelError(f"cannot load the text encoder from {weights_dir}: {e.__class__.__name__}: {e}") from e
    if torch.device(device).type == "cpu":
        _own_memory([text_encoder])  # the components from the file are fresh allocations already
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(plan.configs["scheduler"])
    pipe = LTX2ImageToVideoPipeline(
        **parts, text_encoder=text_encoder.to(device).eval(), tokenizer=tokenizer, scheduler=scheduler
    )
    pipe.set_progress_bar_config(disable=True)
    torch.set_grad_enabled(False)
    from ...weights.upscaler import load_upscaler

    upscaler_file = find_upsampler(path)
    upsampler = load_upscaler(upscaler_file, device, dtype) if upscaler_file else None
    from ...weights.fingerprint import fingerprint

    te_files = [weights_dir] if weights_dir.is_file() else weights_dir.glob("*.safetensors")
    te = f"{weights_dir.name}@{fingerprint(te_files)}"  # encoded prompts are stored under this identity
    identity = f"{single_file.identity(plan)}+te:{te}"  # FP8 kept as such shows in Models.identity
    return Models(
        path, pipe, torch.device(device), dtype, upsampler, identity, version=plan.version,
        distilled=is_distilled_checkpoint(path),
    )  # fmt: skip


def clear_cache() -> None:
    """Forget loaded models (tests; freeing GPU memory between model sets)."""
    with _lock:
        _cache.clear()
