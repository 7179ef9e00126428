"""What differs between LTX-2 releases, in one place: the facts a job is planned with (weights.versions tells which
release a file or folder is).

Sources: the component configs and their provenance in configs/reference/ (and ../shared/reference/), SPEC.md
for the original service's defaults. LoRA file names: Lightricks/LTX-2's README (2.5: `loras/` of the
Lightricks/LTX-2.5 repo) and MODELS-LTX-2.3.md (@ 400fd31), the LTX-2 19B LoRA repositories on the hub. Lightricks
ship camera-control LoRAs for LTX-2 19B only (2.3 and 2.5 have IC-LoRAs and a slow-motion LoRA, none of them a
plain camera move).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

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
