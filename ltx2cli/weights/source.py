"""Finding the LTX-2 weights a user points at and naming them: --model and its environment variables, the ComfyUI
folder layout, the weights' release and identity. From paths, configs and headers alone: nothing here imports torch
(`--model tiny` names the synthetic model: the commands and the worker swap in its cached folder, built by
synthetic.tiny, before anything here sees it)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from ..errors import ModelError, UsageError

MODEL_ENV = "LTX2_MODEL_DIR"
TINY = "tiny"
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
    """What the transformer blocks compute in: a single file's FP8 weights kept or dequantised, a bf16 model's
    quantised at load (fp8); auto decides by GPU and compile (engine.models.compile.fp8_blocks_wanted) and, for a
    single file's FP8 weights, by room (weights.single_file.resolve_precision)."""

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
    precision: str | None = None  # auto | bf16 | fp8: what the transformer blocks compute in (Precision)

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
    """--model (or $LTX2_MODEL_DIR) -> a diffusers folder or a single-file checkpoint; a ComfyUI models root gives
    its checkpoint (--checkpoint NAME when it has several). `tiny` is swapped for its folder before this
    (synthetic.tiny.resolve_tiny)."""
    source = ModelSource.of(model).resolved()
    choice = source.model
    if not choice:
        raise ModelError(f"no model given: {HOW_TO_POINT}")
    if choice == TINY:
        raise ModelError("--model tiny names the synthetic model: resolve it with synthetic.tiny.resolve_tiny first")
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


def option_warnings(source: ModelSource) -> list[str]:
    """--checkpoint and --text-encoder where the model --model names has no use for them, from paths alone: a
    --checkpoint for anything but a ComfyUI root would be ignored, a UsageError; a --text-encoder beside a diffusers
    folder with its own text_encoder/ is not used, a warning. Their environment variables are deployment-wide
    defaults and are not checked."""
    model = source.model or os.environ.get(MODEL_ENV)
    kind = _kind(model)
    if source.checkpoint and kind not in (None, "ComfyUI models root"):
        raise UsageError(
            f"--checkpoint {source.checkpoint!r} picks a file of a ComfyUI root's {COMFY_CHECKPOINTS}/, but --model "
            f"{model} is a {kind}: remove --checkpoint, or pass the root as --model"
        )
    own = model == TINY or (model is not None and (Path(model).expanduser() / "text_encoder").is_dir())
    if source.text_encoder and kind == "diffusers folder" and own:
        why = f"the diffusers folder {model} loads its own text_encoder/"
        return [f"--text-encoder {source.text_encoder} is not used: {why}"]
    return []


def _kind(model: str | None) -> str | None:
    """What --model names, from the path alone; None where it is not there (resolve_model says why)."""
    if model == TINY:
        return "diffusers folder"
    path = Path(model).expanduser() if model else None
    if path is None or not path.exists():
        return None
    if path.is_file():
        return "single-file checkpoint"
    if (path / "model_index.json").is_file():
        return "diffusers folder"
    return "ComfyUI models root" if (path / COMFY_CHECKPOINTS).is_dir() else None


def lora_root(path: Path) -> Path:
    """Where short-named LoRAs live beside a model: DIR/loras, or a ComfyUI root's loras/ for its checkpoints."""
    if path.is_file():
        return path.parent.parent if path.parent.name == COMFY_CHECKPOINTS else path.parent
    return path


def find_upsampler(path: Path) -> Path | None:
    """The latent upsampler the two-stage presets refine with, beside the weights at `path` (resolve_model's): a
    diffusers folder's latent_upsampler/, else the spatial upscaler file in latent_upscale_models/ (or
    upscale_models/) of a ComfyUI root, or of a single file's own folder."""
    from .upscaler import find_upscaler

    if path.is_dir():
        return path / UPSAMPLER_DIR if (path / UPSAMPLER_DIR / "config.json").is_file() else None
    return find_upscaler(lora_root(path))


def upsampler_places(path: Path) -> str:
    """Where find_upsampler looks beside the weights at `path`, in words."""
    from .upscaler import FOLDERS

    if path.is_dir():
        return f"{path / UPSAMPLER_DIR}/ (config.json and weights)"
    return " or ".join(f"{lora_root(path) / folder}/*.safetensors" for folder in FOLDERS)


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
    from .text_encoder import is_gemma_file

    files = [f for f in sorted(folder.glob("*.safetensors")) if is_gemma_file(f)]
    if len(files) == 1:
        return files[0]
    if len(files) + len(folders) > 1:
        names = ", ".join(p.name for p in folders + files)
        raise ModelError(f"{folder} holds several text encoders ({names}): pick one with --text-encoder PATH")
    return None


def text_encoder_files(checkpoint: Path, given: str | None) -> tuple[Path, Path]:
    """(weights, tokenizer) of a single-file checkpoint's text encoder, found as loading finds it: a Gemma single
    file is both, a folder gives its weights and tokenizer folders; ModelError when there is none."""
    from .single_file import text_encoder_dir

    encoder = text_encoder_source(checkpoint, given)
    if encoder is not None and encoder.is_file():
        return encoder, encoder
    if encoder is not None and not encoder.exists():
        raise ModelError(f"text encoder not found: {encoder} (--text-encoder or {TEXT_ENCODER_ENV})")
    return text_encoder_dir(encoder)


def model_version(model: str | ModelSource | None) -> str | None:
    """The release of the weights `model` names, from configs or headers alone (nothing loads); None when no
    model is named or it cannot be found (loading reports that)."""
    from .versions import path_version

    try:
        return path_version(resolve_model(model))
    except ModelError:
        return None


def model_identity(path: Path) -> str:
    """Folder name plus a hash of every component's config and weights (weights.fingerprint): two renders with one
    identity used the same model."""
    from .fingerprint import fingerprint

    digest = hashlib.sha256()
    for config in sorted(path.glob("*/*config.json")):
        digest.update(config.relative_to(path).as_posix().encode())
        digest.update(json.dumps(json.loads(config.read_text()), sort_keys=True).encode())
    digest.update(fingerprint(path.glob("*/*.safetensors")).encode())
    return f"{path.name}@{digest.hexdigest()[:12]}"
