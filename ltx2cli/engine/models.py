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
from pathlib import Path
from typing import Any

from ..errors import Ltx2Error
from ..jobs import LoraRef
from ..loras import KNOWN_LORAS

MODEL_ENV = "LTX2_MODEL_DIR"
TINY = "tiny"
LORA_DIR = "loras"  # LoRAs named by short name live in <model>/loras/<file stem>.safetensors
UPSAMPLER_DIR = "latent_upsampler"
HOW_TO_POINT = (
    f"pass --model DIR (a diffusers-format LTX-2 folder, e.g. Lightricks/LTX-2 downloaded with "
    f"`huggingface-cli download`), set {MODEL_ENV}, or use --model tiny for the built-in random-weight test model"
)


class ModelError(Ltx2Error):
    code = "E_MODEL"


def resolve_model_dir(model: str | None) -> Path:
    """--model value (or $LTX2_MODEL_DIR) -> a folder with model_index.json; `tiny` builds/caches the tiny model."""
    choice = model or os.environ.get(MODEL_ENV)
    if not choice:
        raise ModelError(f"no model given: {HOW_TO_POINT}")
    if choice == TINY:
        from .tiny import tiny_model_dir

        return tiny_model_dir()
    path = Path(choice).expanduser()
    if not path.is_dir():
        raise ModelError(f"model folder not found: {path}; {HOW_TO_POINT}")
    if not (path / "model_index.json").is_file():
        raise ModelError(f"{path} is not a diffusers model folder (no model_index.json); {HOW_TO_POINT}")
    return path.resolve()


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device: str):
    """bf16 on GPUs (how LTX-2 ships and runs), float32 on CPU (bf16 matmuls there are slow and inexact)."""
    import torch

    return torch.bfloat16 if str(device).startswith("cuda") else torch.float32


@dataclass
class Models:
    """Every LTX-2 component, loaded once; `pipe` is the diffusers pipeline holding them (for its LoRA loader)."""

    path: Path
    pipe: Any
    device: Any
    dtype: Any
    upsampler: Any | None
    identity: str  # model folder name + hash of its configs: recorded with every render
    loaded_loras: dict[str, str] = field(default_factory=dict)  # LoraRef.key -> adapter name
    compiled: bool = False  # transformer blocks compiled in place (engine.compile)
    _text_encoder_on_device: bool = True

    def __getattr__(self, name: str) -> Any:  # transformer, vae, audio_vae, vocoder, connectors, tokenizer, ...
        if name.startswith("_") or name == "pipe":
            raise AttributeError(name)
        return getattr(self.pipe, name)

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

    def text_encoder_to_device(self) -> None:
        if not self._text_encoder_on_device:
            self.pipe.text_encoder.to(self.device)
            self._text_encoder_on_device = True

    def offload_text_encoder(self) -> None:
        """Move Gemma (the biggest component after the transformer) to CPU once prompts are encoded."""
        if self._text_encoder_on_device and str(self.device) != "cpu":
            self.pipe.text_encoder.to("cpu")
            self._text_encoder_on_device = False
            import torch

            torch.cuda.empty_cache()

    def set_loras(self, loras: list[LoraRef]) -> None:
        """Activate exactly these LoRAs at their strengths (each file is read once per process)."""
        active = [lo for lo in loras if lo.strength != 0]
        names, weights = [], []
        for lora in active:
            if lora.key not in self.loaded_loras:
                name = f"lora{len(self.loaded_loras)}"
                file = lora_file(self.path, lora)
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


def lora_file(model_dir: Path, lora: LoraRef) -> Path:
    if lora.path is not None:
        file = Path(lora.path).expanduser()
    else:
        stem = KNOWN_LORAS.get(lora.name or "", lora.name or "")
        file = model_dir / LORA_DIR / f"{stem}.safetensors"
    if not file.is_file():
        hint = f" (put {file.name} in {model_dir / LORA_DIR}, or give the LoRA by path)" if lora.path is None else ""
        raise ModelError(f"LoRA file not found: {file}{hint}")
    return file


_cache: dict[tuple, Models] = {}
_lock = threading.Lock()


def load_models(model: str | None, device: str | None = None, dtype: Any = None) -> Models:
    """Load (or return the already loaded) models for `model` (tiny, a folder, or $LTX2_MODEL_DIR)."""
    path = resolve_model_dir(model)
    device = device or default_device()
    dtype = dtype or default_dtype(device)
    key = (str(path), str(device), str(dtype))
    with _lock:
        if key not in _cache:
            _cache[key] = _load(path, device, dtype)
        return _cache[key]


def quiet_libraries() -> None:
    """diffusers' / transformers' per-load info lines and progress bars are noise in a CLI with its own progress."""
    import transformers
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


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
    torch.set_grad_enabled(False)
    return Models(
        path=path,
        pipe=pipe,
        device=torch.device(device),
        dtype=dtype,
        upsampler=upsampler,
        identity=model_identity(path),
    )


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
