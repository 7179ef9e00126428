"""Finding and loading LTX-2 weights: once per process, from a diffusers-format folder (or the tiny model).

Everything goes through `LTX2ImageToVideoPipeline.from_pretrained`, the loader diffusers' own LTX-2 pipelines
use, so the tiny test model and real weights take exactly the same path.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import warnings
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..jobs import LoraRef
from .quiet import quiet_libraries

MODEL_ENV = "LTX2_MODEL_DIR"
TINY = "tiny"
LORA_DIR = "loras"  # LoRAs named by short name live in <model>/loras/<file stem>.safetensors
UPSAMPLER_DIR = "latent_upsampler"
HOW_TO_POINT = (
    f"pass --model PATH (a ComfyUI models root, a single-file LTX-2 .safetensors, or a diffusers-format folder such "
    f"as Lightricks/LTX-2 downloaded with `huggingface-cli download`), set {MODEL_ENV}, or use --model tiny for the "
    "built-in random-weight test model"
)


TEXT_ENCODER_ENV = "LTX2_TEXT_ENCODER"
CHECKPOINT_ENV = "LTX2_CHECKPOINT"
PRECISION_ENV = "LTX2_PRECISION"
COMFY_CHECKPOINTS = "checkpoints"
COMFY_TEXT_ENCODERS = "text_encoders"


class Precision(StrEnum):
    """What the FP8 weights of a single-file checkpoint become (weights.single_file.resolve_precision)."""

    auto = "auto"
    bf16 = "bf16"
    fp8 = "fp8"


@dataclass(frozen=True)
class ModelSource:
    """Where the weights come from: --model and the options that go with a single-file checkpoint. Unset fields
    fall back to their environment variables ($LTX2_MODEL_DIR, $LTX2_TEXT_ENCODER, ...)."""

    model: str | None = None  # tiny, a diffusers folder, a single-file .safetensors, or a ComfyUI models root
    text_encoder: str | None = None  # a diffusers LTX-2 folder or a Gemma transformers folder (single files)
    checkpoint: str | None = None  # which file of a ComfyUI root's checkpoints/ (needed when there are several)
    precision: str | None = None  # auto | bf16 | fp8: what FP8 weights of a single file become

    @classmethod
    def of(cls, model: str | ModelSource | None) -> ModelSource:
        return model if isinstance(model, ModelSource) else cls(model=model)

    def resolved(self) -> ModelSource:
        env = os.environ.get
        precision = (self.precision or env(PRECISION_ENV) or "auto").strip().lower()
        if precision not in Precision.__members__:
            raise ModelError(f"precision must be auto, bf16 or fp8, got {precision!r} (--precision or {PRECISION_ENV})")
        return ModelSource(
            model=self.model or env(MODEL_ENV),
            text_encoder=self.text_encoder or env(TEXT_ENCODER_ENV),
            checkpoint=self.checkpoint or env(CHECKPOINT_ENV),
            precision=precision,
        )


def resolve_model(model: str | ModelSource | None) -> Path:
    """--model (or $LTX2_MODEL_DIR) -> a diffusers folder or a single-file checkpoint; `tiny` builds/caches the
    tiny model; a ComfyUI models root gives its checkpoint (--checkpoint NAME when it has several)."""
    source = ModelSource.of(model).resolved()
    choice = source.model
    if not choice:
        raise ModelError(f"no model given: {HOW_TO_POINT}")
    if choice == TINY:
        from .tiny import tiny_model_dir

        return tiny_model_dir()
    path = Path(choice).expanduser()
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ModelError(f"{path}: a single-file checkpoint must be a .safetensors file; {HOW_TO_POINT}")
        return path.resolve()
    if not path.is_dir():
        raise ModelError(f"model not found: {path}; {HOW_TO_POINT}")
    if (path / "model_index.json").is_file():
        return path.resolve()
    if (path / COMFY_CHECKPOINTS).is_dir():
        return _comfy_checkpoint(path / COMFY_CHECKPOINTS, source.checkpoint)
    raise ModelError(f"{path} is neither a diffusers folder (model_index.json) nor a ComfyUI root; {HOW_TO_POINT}")


def _comfy_checkpoint(folder: Path, name: str | None) -> Path:
    files = sorted(folder.glob("*.safetensors"))
    if name:
        chosen = [f for f in files if name in (f.name, f.stem)]
        if not chosen:
            have = ", ".join(f.name for f in files) or "none"
            raise ModelError(f"checkpoint {name!r} not in {folder} (there: {have})")
        return chosen[0].resolve()
    if len(files) == 1:
        return files[0].resolve()
    if not files:
        raise ModelError(f"no .safetensors checkpoint in {folder}")
    raise ModelError(
        f"{folder} holds {len(files)} checkpoints: pick one with --checkpoint NAME ({', '.join(f.name for f in files)})"
    )


def lora_root(path: Path) -> Path:
    """Where short-named LoRAs live beside a model: DIR/loras, or a ComfyUI root's loras/ for its checkpoints."""
    if path.is_file():
        return path.parent.parent if path.parent.name == COMFY_CHECKPOINTS else path.parent
    return path


def text_encoder_source(checkpoint: Path, given: str | None) -> Path | None:
    """The text encoder of a single-file checkpoint: the one given, else what a ComfyUI tree's sibling
    text_encoders/ holds (one Gemma folder, or one Gemma single file)."""
    if given:
        return Path(given).expanduser()
    folder = lora_root(checkpoint) / COMFY_TEXT_ENCODERS
    if not folder.is_dir():
        return None
    folders = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "config.json").is_file())
    if len(folders) == 1:
        return folders[0]
    from ..weights.text_encoder import is_gemma_file

    files = [f for f in sorted(folder.glob("*.safetensors")) if is_gemma_file(f)]
    if len(files) == 1:
        return files[0]
    if len(files) + len(folders) > 1:
        names = ", ".join(p.name for p in folders + files)
        raise ModelError(f"{folder} holds several text encoders ({names}): pick one with --text-encoder PATH")
    return None


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str):
    """bf16 on GPUs (how LTX-2 ships and runs), float32 on CPU (bf16 matmuls there are slow and inexact)."""
    import torch

    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


COMPONENT_NAMES = frozenset(
    {"transformer", "connectors", "vae", "audio_vae", "vocoder", "text_encoder", "tokenizer", "scheduler"}
)


@dataclass
class Models:
    """Every LTX-2 component, loaded once, whatever the weights' source: what the rest of ltx2 renders with.

    `pipe`, the diffusers pipeline holding the components, is this class's own business (its prompt encoding and
    peft's LoRA loader); outside, only tests and benchmarks that compare with diffusers reach into it."""

    path: Path
    pipe: Any
    device: Any
    dtype: Any
    upsampler: Any | None
    identity: str  # model folder name + hash of its configs: recorded with every render
    loaded_loras: dict[str, str] = field(default_factory=dict)  # LoraRef.key -> adapter name
    compiled: bool = False  # transformer blocks compiled in place (engine.compile)
    version: str = "2.0"  # weights.versions: the LTX-2 release these weights are
    distilled: bool = False  # a distilled checkpoint: the distilled LoRA is already in its weights
    plan: Any = None  # engine.residency.Plan this process follows (None: everything stays where it loaded)
    where: dict[str, str] = field(default_factory=dict)  # component -> "gpu" | "host", kept by placement.place
    streamed: Any = None  # engine.streaming.StreamedBlocks: transformer blocks copied in for each forward
    room: Any = None  # engine.residency.Budget of a long-lived process (the worker) planning each request
    _fp8_adapters: dict[str, Any] = field(default_factory=dict)  # LoraRef.key -> adapter (FP8 blocks only)
    _lora_hooks: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        from ..weights.versions import VERSIONS

        if VERSIONS[self.version].bos_prepended:  # once, at load: every encoding of this model starts with BOS
            from ..weights.text_encoder import prepend_bos

            prepend_bos(self.pipe.tokenizer)

    def __getattr__(self, name: str) -> Any:
        if name not in COMPONENT_NAMES:
            raise AttributeError(name)
        return getattr(self.pipe, name)

    def encode_text(self, text: str, negative: str | None, max_sequence_length: int) -> tuple[Any, Any]:
        """Gemma's stacked hidden states and mask for text (rows [negative, text] when a negative is given)."""
        import torch

        self.text_encoder_to_device()
        embeds, mask, neg_embeds, neg_mask = self.pipe.encode_prompt(
            prompt=text,
            negative_prompt=negative or "",
            do_classifier_free_guidance=negative is not None,
            max_sequence_length=max_sequence_length,
            device=self.device,
        )
        if negative is not None:
            embeds, mask = torch.cat([neg_embeds, embeds]), torch.cat([neg_mask, mask])
        return embeds, mask

    @property
    def audio_latent_mel_bins(self) -> int:
        """Mel bins of the audio VAE's latents (its input bins over its compression)."""
        return self.audio_vae.config.mel_bins // self.pipe.audio_vae_mel_compression_ratio

    @property
    def scheduler_config(self) -> dict:
        return dict(self.pipe.scheduler.config)

    @property
    def cross_timestep(self) -> bool:
        """LTX-2.3 models modulate a2v/v2a with the other stream's sigma; LTX-2.0 with their own timestep."""
        return not self.pipe.transformer.config.use_prompt_embeddings

    @property
    def perturbed_attn(self) -> bool:
        """STG only changes anything in transformers built with perturbable self-attention (LTX-2.3)."""
        return bool(self.pipe.transformer.config.get("perturbed_attn", False))

    @property
    def keyframe_embedding(self) -> bool:
        """The transformer adds a learned embedding to tokens the sampler marks as single-pixel-frame (LTX-2.5)."""
        return bool(self.pipe.transformer.config.get("use_keyframes_abs_pos_embedding", False))

    @property
    def fp8_blocks(self) -> bool:
        """The transformer blocks' Linears are FP8 (engine.fp8.Fp8Linear): peft cannot wrap them (engine.lora_hooks)."""
        from .fp8 import Fp8Linear

        return any(isinstance(m, Fp8Linear) for m in self.pipe.transformer.transformer_blocks.modules())

    def text_encoder_to_device(self) -> None:
        """Gemma on the GPU to encode prompts: the plan's prompt phase, or (no plan) Gemma back if it was moved."""
        from .placement import place

        if self.plan is not None:
            place(self, "prompt")
        elif self.where.get("text_encoder") == "host":
            self.pipe.text_encoder.to(self.device)
            self.where["text_encoder"] = "gpu"

    @property
    def text_encoder_offloadable(self) -> bool:
        """Gemma sits on a GPU and could move to the CPU to make room."""
        return self.where.get("text_encoder", "gpu") == "gpu" and str(self.device) != "cpu"

    def offload_text_encoder(self) -> None:
        """Move Gemma (the biggest component after the transformer) to CPU once prompts are encoded."""
        if self.text_encoder_offloadable:
            from .placement import HOST, move

            move(self.pipe.text_encoder, HOST)
            self.where["text_encoder"] = "host"
            import torch

            torch.cuda.empty_cache()

    def set_loras(self, loras: list[LoraRef]) -> None:
        """Activate exactly these LoRAs at their strengths (each file is read once per process)."""
        active = [lo for lo in loras if lo.strength != 0 and not (self.distilled and is_distilled_lora(lo))]
        if self.fp8_blocks:
            self._set_fp8_loras(active)
            return
        names, weights = [], []
        for lora in active:
            if lora.key not in self.loaded_loras:
                name = f"lora{len(self.loaded_loras)}"
                file = lora_file(self.path, lora, self.version)
                try:
                    with warnings.catch_warnings():  # peft warns on every adapter after the first: expected here
                        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                        self.pipe.load_lora_weights(str(file), adapter_name=name)
                except Exception as e:  # a broken or mismatched file: say which
                    raise ModelError(f"cannot load LoRA {file}: {e.__class__.__name__}: {e}") from e
                self.loaded_loras[lora.key] = name
            names.append(self.loaded_loras[lora.key])
            weights.append(float(lora.strength))
        if not self.loaded_loras:
            return
        if names:
            self.pipe.enable_lora()
            self.pipe.set_adapters(names, adapter_weights=weights)
        else:
            self.pipe.disable_lora()

    def _set_fp8_loras(self, active: list[LoraRef]) -> None:
        """peft cannot wrap FP8 layers: the adapters go on as forward hooks (engine.lora_hooks)."""
        from .lora_hooks import attach, read_adapter

        for handle in self._lora_hooks:
            handle.remove()
        adapters = []
        for lora in active:
            if lora.key not in self._fp8_adapters:
                file = lora_file(self.path, lora, self.version)
                try:
                    self._fp8_adapters[lora.key] = read_adapter(file, self.dtype, self.device)
                except Exception as e:  # a broken or mismatched file: say which
                    raise ModelError(f"cannot load LoRA {file}: {e.__class__.__name__}: {e}") from e
            adapters.append((self._fp8_adapters[lora.key], float(lora.strength)))
        try:
            self._lora_hooks = attach(self.pipe.transformer, adapters)
        except AttributeError as e:  # a module the transformer does not have
            raise ModelError(f"cannot apply LoRA: {e}") from e


def is_distilled_checkpoint(path: Path) -> bool:
    """Lightricks name their distilled checkpoints so: ltx-2-19b-distilled.safetensors, ...-distilled-fp8...."""
    return path.is_file() and "distilled" in path.stem


def is_distilled_lora(lora: LoraRef) -> bool:
    return lora.name == "distilled"


def lora_file(model_dir: Path, lora: LoraRef, version: str) -> Path:
    """The file of a LoRA given by path, or by short name as the weights' release `version` names it."""
    from ..weights.versions import lora_stems

    if lora.path is not None:
        file = Path(lora.path).expanduser()
    else:
        try:
            stems = lora_stems(lora.name or "", version)
        except KeyError as e:
            raise ModelError(f"{e.args[0]}; remove it or give a LoRA file by path") from None
        folder = lora_root(model_dir) / LORA_DIR
        files = [folder / f"{stem}.safetensors" for stem in stems]
        file = next((f for f in files if f.is_file()), files[0])
    if not file.is_file():
        hint = f" (put {file.name} in {file.parent}, or give the LoRA by path)" if lora.path is None else ""
        raise ModelError(f"LoRA file not found: {file}{hint}")
    return file


_cache: dict[tuple, Models] = {}
_lock = threading.Lock()


def model_version(model: str | ModelSource | None) -> str | None:
    """The release of the weights `model` names, from configs or headers alone (nothing loads); None when no
    model is named or it cannot be found (loading reports that)."""
    from ..weights.versions import path_version

    try:
        return path_version(resolve_model(model))
    except ModelError:
        return None


def load_models(
    model: str | ModelSource | None, device: str | None = None, dtype: Any = None, on_host: bool = False
) -> Models:
    """Load (or return the already loaded) models for `model` (tiny, a folder, a single file, a ComfyUI root, or
    $LTX2_MODEL_DIR). `on_host`: the weights stay in CPU memory and a memory plan (engine.residency) brings each
    component to the GPU when a phase needs it: how a model bigger than the GPU loads at all."""
    source = ModelSource.of(model).resolved()
    path = resolve_model(source)
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    load_on = "cpu" if on_host else device
    key = (str(path), str(device), str(dtype), load_on)
    if path.is_file():
        key += (source.text_encoder, source.precision)
    with _lock:
        if key not in _cache:
            models = _load_single_file(path, source, load_on, dtype) if path.is_file() else _load(path, load_on, dtype)
            import torch

            models.device = torch.device(device)  # where it renders; placement.place moves components there
            _cache[key] = models
        return _cache[key]


def remember(models: Models) -> None:
    """Make `load_models(str(models.path))` return these models (benchmarks that built random weights in place)."""
    device = default_device()
    with _lock:
        _cache[(str(models.path), device, str(default_dtype(device)), device)] = models


def _load(path: Path, device: str, dtype: Any) -> Models:
    import torch
    from diffusers import LTX2ImageToVideoPipeline

    quiet_libraries()
    try:
        pipe = LTX2ImageToVideoPipeline.from_pretrained(path, dtype=dtype, local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelError(f"cannot load LTX-2 from {path}: {e.__class__.__name__}: {e}") from e
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    upsampler = None
    if (path / UPSAMPLER_DIR / "config.json").is_file():
        from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

        upsampler = LTX2LatentUpsamplerModel.from_pretrained(path / UPSAMPLER_DIR, dtype=dtype).to(device).eval()
    if torch.device(device).type == "cpu":
        _own_memory([*pipe.components.values(), upsampler])
    torch.set_grad_enabled(False)
    from ..weights.versions import folder_version

    identity = model_identity(path)
    return Models(path, pipe, torch.device(device), dtype, upsampler, identity, version=folder_version(path))


def _own_memory(modules: list[Any]) -> None:
    """Give every CPU weight its own allocation. from_pretrained leaves them in the files' memory maps, at whatever
    byte offset the file layout gives; an unaligned weight takes other SIMD paths, so the same weights rendered
    differently (last bit) from a folder and from a single file (weights.owned copies likewise)."""
    import torch

    for module in modules:
        if isinstance(module, torch.nn.Module):
            for tensor in [*module.parameters(), *module.buffers()]:
                tensor.data = tensor.data.clone()


def _load_single_file(path: Path, source: ModelSource, device: str, dtype: Any) -> Models:
    """A Lightricks single-file checkpoint plus a text encoder from a folder, assembled like a diffusers folder."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler, LTX2ImageToVideoPipeline
    from transformers import AutoModelForImageTextToText, AutoTokenizer

    from ..weights import single_file

    quiet_libraries()
    plan = single_file.plan(path)
    precision = single_file.resolve_precision(source.precision or "auto", plan, device)
    encoder_path = text_encoder_source(path, source.text_encoder)
    if encoder_path is not None and encoder_path.is_file():
        weights_dir = tokenizer_dir = encoder_path
    else:
        weights_dir, tokenizer_dir = single_file.text_encoder_dir(encoder_path)
    parts = single_file.load_components(plan, device, dtype, precision)
    if weights_dir.is_file():
        from ..weights.text_encoder import load_gemma_file

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
    from ..weights.upscaler import find_upscaler, load_upscaler

    upscaler_file = find_upscaler(lora_root(path))
    upsampler = load_upscaler(upscaler_file, device, dtype) if upscaler_file else None
    identity = f"{single_file.identity(plan)}{'' if precision == 'bf16' else '+' + precision}+te:{weights_dir.name}"
    return Models(
        path, pipe, torch.device(device), dtype, upsampler, identity, version=plan.version,
        distilled=is_distilled_checkpoint(path),
    )  # fmt: skip


def model_identity(path: Path) -> str:
    """Folder name plus a hash of every component's config: two renders with one identity used the same model."""
    digest = hashlib.sha256()
    for config in sorted(path.glob("*/*config.json")):
        digest.update(config.relative_to(path).as_posix().encode())
        digest.update(json.dumps(json.loads(config.read_text()), sort_keys=True).encode())
    return f"{path.name}@{digest.hexdigest()[:12]}"


def clear_cache() -> None:
    """Forget loaded models (tests; freeing GPU memory between model sets)."""
    with _lock:
        _cache.clear()
