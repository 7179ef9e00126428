"""What differs between LTX-2 releases, in one place, and how a diffusers folder tells which one it is.

Sources: the component configs and their provenance in configs/reference/ (and ../shared/reference/), SPEC.md
for the original service's defaults. LoRA file names: Lightricks/LTX-2's README (2.5: `loras/` of the
Lightricks/LTX-2.5 repo) and MODELS-LTX-2.3.md (@ 400fd31), the LTX-2 19B LoRA repositories on the hub. Lightricks
ship camera-control LoRAs for LTX-2 19B only (2.3 and 2.5 have IC-LoRAs and a slow-motion LoRA, none of them a
plain camera move).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .layout import DIFFUSION

CAMERA_MOVES = ("dolly-in", "dolly-out", "dolly-left", "dolly-right", "jib-up", "jib-down", "static")


@dataclass(frozen=True)
class Version:
    key: str  # "2.0", "2.3", "2.5": what `model_version` in a checkpoint's metadata starts with
    name: str
    vocoder_rate: int  # Hz of the sound the vocoder writes (2.3 on: a bandwidth-extension vocoder)
    text_encoder: str  # the Gemma it conditions on
    bos_prepended: bool  # Gemma 4's tokenizer adds no BOS; ltx-core prepends one
    keyframe_embedding: bool  # a learned position embedding on frame-0 and keyframe tokens
    crf_default: int  # H.264 CRF the conditioning image is re-compressed at when a job gives none
    # The transformer block whose self-attention STG perturbs in Lightricks' reference pipelines (ltx-pipelines:
    # 29 for the 19B, 28 from 2.3 on). ltx2 perturbs only transformers built with perturbable attention (2.3 on:
    # Models.perturbed_attn); diffusers' 2.0 transformer has none, so 2.0's block is recorded, not used.
    stg_block: int
    # LoRA short name -> the file stems Lightricks ship it under for this release, the newest first (looked up as
    # <models>/loras/<stem>.safetensors, the first that exists)
    loras: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


VERSIONS = {
    "2.0": Version("2.0", "LTX-2 (19B)", 24000, "Gemma 3 12B", False, False, 23, 29, {
        "distilled": ("ltx-2-19b-distilled-lora-384",),
        **{f"camera-{m}": (f"ltx-2-19b-lora-camera-control-{m}",) for m in CAMERA_MOVES},
    }),
    "2.3": Version("2.3", "LTX-2.3 (22B)", 48000, "Gemma 3 12B", False, False, 23, 28, {
        "distilled": ("ltx-2.3-22b-distilled-lora-384-1.1", "ltx-2.3-22b-distilled-lora-384"),  # 1.1, then 1.0
    }),
    "2.5": Version("2.5", "LTX-2.5 (22B)", 48000, "Gemma 4 12B", True, True, 18, 28, {
        "distilled": ("ltx-2.5-22b-distilled-lora-450-bf16",),
    }),
}  # fmt: skip
DEFAULT = "2.0"  # what planning assumes when the weights are not known yet (validate without --model)

# The audio<->video cross-attention AdaLN timesteps, one rule for every release (engine.av_timesteps applies it).
# ltx-core has had three rules, each for all versions (Lightricks/LTX-2 transformer_args.py): own timestep for
# scale/shift and gate (9ce438b, 2026-01-05, the release), the other stream's sigma for both (822ce3c, 2026-03-04),
# and this one (203d484, 2026-05-28). Nothing public says 2.0's weights were trained otherwise: the LTX-2 paper's
# figure (Lightricks/LTX-2 issue #60) draws the gate from the other stream's timestep.
AV_CROSS_TIMESTEPS = (
    "ltx-core 2026-05: a2v/v2a scale/shift from each stream's own timesteps, gate from the other stream's sigma "
    "(0 when frozen)"
)


def lora_stems(name: str, version: str) -> tuple[str, ...]:
    """The file stems of LoRA `name` for a release; KeyError (with missing_lora's line) where it has none."""
    stems = VERSIONS[version].loras.get(name)
    if not stems:
        raise KeyError(missing_lora(name, version))
    return stems


def missing_lora(name: str, version: str) -> str:
    v = VERSIONS[version]
    have = ", ".join(v.loras) or "none"
    return f"LoRA {name!r} does not exist for {v.name}: Lightricks' LoRAs for it are {have}"


# Tensors only LTX-2.3 and later have (diffusers' conversion script, version "2.3").
MARKERS_23 = ("prompt_adaln_single", "video_aggregate_embed", "audio_aggregate_embed", "last_time_embedder")
# 2.5's learned keyframe embedding (ltx-core LTXModel.keyframes_abs_pos_embedding): no earlier release has it.
MARKER_25 = DIFFUSION + "keyframes_abs_pos_embedding"


def detect_version(metadata: Mapping[str, str], keys: list[str] | Any) -> tuple[str, str]:
    """(version, how it was found): the header's `model_version` (or a Gemma 4 `gemma_source_checkpoint`) first,
    then tell-tale tensor names. Metadata the tensors contradict is not believed (version_problems names it)."""
    claim, tensors = _claim(metadata), tensor_version(keys)
    if claim is not None and claim[0] == tensors[0]:
        return claim[0], claim[1]
    return tensors


def tensor_version(keys: list[str] | Any) -> tuple[str, str]:
    """(version, how) from the tensor names alone: the tensors only 2.3 and later, or only 2.5, have."""
    if MARKER_25 in keys:
        return "2.5", "2.5-only tensor (keyframes_abs_pos_embedding)"
    hits = [m for m in MARKERS_23 if any(m in k for k in keys)]
    if hits:
        return "2.3", f"2.3-only tensors ({hits[0]})"
    return "2.0", f"none of the tensors only 2.3 and later have ({', '.join(MARKERS_23[:2])}, ...)"


def _claim(metadata: Mapping[str, str]) -> tuple[str, str, str] | None:
    """(version, how, what the metadata claims in words) from the header's metadata; None if it names none."""
    declared = str(metadata.get("model_version", "")).strip()
    for version in reversed(list(VERSIONS)):
        if declared == version or declared.startswith(version + "."):
            return version, f"model_version {declared}", f"model_version says {version}"
    gemma = str(metadata.get("gemma_source_checkpoint", ""))
    if "gemma4" in gemma.replace("-", "").lower():
        return "2.5", "gemma_source_checkpoint names Gemma 4", "gemma_source_checkpoint names Gemma 4 (LTX-2.5)"
    return None


def unknown_version(metadata: Mapping[str, str]) -> str | None:
    """A `model_version` no release has, in words (the tensors decide the release then); None if fine or absent."""
    declared = str(metadata.get("model_version", "")).strip()
    if not declared or any(declared == v or declared.startswith(v + ".") for v in VERSIONS):
        return None
    valid = ", ".join(f"{v}.x" for v in VERSIONS)
    return f"model_version {declared!r} is no LTX-2 release (valid: {valid}); the tensors decide"


def version_contradiction(metadata: Mapping[str, str], keys: list[str] | Any) -> str | None:
    """The release the metadata claims where the tensors are another one's, in words; None if they agree."""
    claim, (version, how) = _claim(metadata), tensor_version(keys)
    if claim is None or claim[0] == version:
        return None
    return f"{claim[2]} but the tensors are {VERSIONS[version].name}: {how}"


def path_version(path: Path) -> str:
    """The release of a diffusers folder or a single-file checkpoint, from configs or the header alone."""
    if path.is_dir():
        return folder_version(path)
    from .header import HeaderError, read_header

    try:
        header = read_header(path)
    except HeaderError:
        return DEFAULT
    return detect_version(header.metadata, list(header.tensors))[0]


def folder_version(path: Path) -> str:
    """The version of a diffusers-format folder, from its component configs."""

    def config(name: str) -> dict:
        try:
            return json.loads((path / name / "config.json").read_text())
        except (OSError, ValueError):
            return {}

    transformer, text_encoder = config("transformer"), config("text_encoder")
    if transformer.get("use_keyframes_abs_pos_embedding") or "gemma4" in str(text_encoder.get("model_type", "")):
        return "2.5"
    if config("vocoder").get("_class_name") == "LTX2VocoderWithBWE" or transformer.get("gated_attn"):
        return "2.3"
    return "2.0"
