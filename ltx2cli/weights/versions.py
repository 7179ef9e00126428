"""What differs between LTX-2 releases, in one place, and how a diffusers folder tells which one it is.

Sources: the component configs and their provenance in configs/reference/ (and ../shared/reference/), SPEC.md
for the original service's defaults.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Version:
    key: str  # "2.0", "2.3", "2.5": what `model_version` in a checkpoint's metadata starts with
    name: str
    vocoder_rate: int  # Hz of the sound the vocoder writes (2.3 on: a bandwidth-extension vocoder)
    text_encoder: str  # the Gemma it conditions on
    bos_prepended: bool  # Gemma 4's tokenizer adds no BOS; ltx-core prepends one
    keyframe_embedding: bool  # a learned position embedding on frame-0 and keyframe tokens
    crf_default: int  # H.264 CRF the conditioning image is re-compressed at when a job gives none


VERSIONS = {
    "2.0": Version("2.0", "LTX-2 (19B)", 24000, "Gemma 3 12B", False, False, 23),
    "2.3": Version("2.3", "LTX-2.3 (22B)", 48000, "Gemma 3 12B", False, False, 23),
    "2.5": Version("2.5", "LTX-2.5 (22B)", 48000, "Gemma 4 12B", True, True, 18),
}


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
