"""How a checkpoint or a diffusers folder tells which LTX-2 release it is (jobs.releases: what differs between them).

Sources: the tensors only some releases have (diffusers' conversion script), the headers' `model_version` and
`gemma_source_checkpoint` metadata, and the component configs in configs/reference/.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..jobs.releases import DEFAULT, VERSIONS
from .layout import DIFFUSION

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
