"""What a user asks for: a Job is one clip (pydantic v2, validated before anything heavy runs).

Field names are ltx2's; the original RunPod service's names are accepted as aliases by the manifest
layer (ALIASES below), so a RunPod `input` object is a valid job.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    Tag,
    field_validator,
    model_validator,
)

Mode = Literal["lipsync", "audiogen"]

# Original-service field name -> ltx2 field name.
ALIASES = {
    "image_url": "image",
    "audio_url": "audio",
    "quality_preset": "preset",
    "prompt_positive": "prompt",
    "prompt_negative": "negative_prompt",
}
KEYFRAME_ALIASES = {"image_url": "image", "frame_position": "position"}

# Original-service fields ltx2 accepts but does not need: it always renders the exact length and
# places keyframes on their exact frames. Using them gives a warning, not an error.
IGNORED_LEGACY_FIELDS = ("buffer_seconds", "trim_to_audio", "auto_buffer_guide", "frame_alignment")

DEFAULT_PROMPTS: dict[str, str] = {
    "lipsync": "A person speaks naturally with accurate lip synchronization, detailed facial expressions.",
    "audiogen": "A person speaking naturally, detailed facial expressions, natural movements.",
}
DEFAULT_NEGATIVE_PROMPT = "static, blurry, low quality, pixelated, compression artifacts, flickering"

_ID_RE = re.compile(r"^\w[\w.\-]{0,127}$")
_PERCENT_RE = re.compile(r"^(\d+(?:\.\d*)?|\.\d+)\s*%$")
_RESOLUTION_RE = re.compile(r"^(\d+)x(\d+)$")


def _not_bool(v: Any) -> Any:
    # pydantic's lax mode reads true as 1; for a duration or a seed that is always a mistake.
    if isinstance(v, bool):
        raise ValueError(f"must be a number, got {v!r}")
    return v


# Finite: inf passes every lower bound (duration > 0, cfg >= 0), then breaks the frame arithmetic or the render.
Number = Annotated[float, BeforeValidator(_not_bool), Field(allow_inf_nan=False)]
Integer = Annotated[int, BeforeValidator(_not_bool)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Keyframe(Strict):
    image: str = Field(min_length=1)
    position: Literal["first", "last"] | float | None = None
    strength: Number | None = Field(default=None, ge=0.0, le=1.0)

    @field_validator("position", mode="before")
    @classmethod
    def _position(cls, v: Any) -> Any:
        if isinstance(v, str) and v.strip().lower() in ("first", "last"):
            return v.strip().lower()
        if v is None:
            return v
        if isinstance(v, bool):
            raise ValueError(f'must be "first", "last" or a fraction 0..1 of the clip, got {v!r}')
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise ValueError(f'must be "first", "last" or a fraction 0..1 of the clip, got {v!r}') from None
        if not 0.0 <= f <= 1.0:
            raise ValueError(f'must be "first", "last" or a fraction 0..1 of the clip, got {v!r}')
        return f


def _valid_text(v: str) -> str:
    # JSON can carry "\udcff" (half of a UTF-16 pair): no tokenizer takes it, and it would stop the whole
    # batch in the prompt phase instead of this one job here.
    try:
        v.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"is not valid text: {v[e.start]!r} at character {e.start} is half a UTF-16 pair") from None
    return v


def _seconds_or_percent(v: Any) -> float | str:
    """A timeline entry's time: seconds from the clip's start (a number, or one written as text), or "NN%" of the
    clip (under 100: an entry at the end would be in force for no frame)."""
    wanted = 'must be seconds from the clip\'s start or "NN%" of the clip'
    if isinstance(v, str):
        m = _PERCENT_RE.match(v.strip())
        if m and float(m[1]) < 100:
            return f"{float(m[1]):g}%"
        try:
            v = float(v)
        except ValueError:
            raise ValueError(f"{wanted}, got {v!r}") from None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"{wanted}, got {v!r}")
    if not 0 <= v < float("inf"):
        raise ValueError(f"{wanted} (0 or more), got {v:g}")
    return float(v)


class PromptEntry(Strict):
    """One entry of a prompt timeline: `text` is in force from `at` (seconds, or "NN%" of the clip) to the next
    entry's time (the clip's end for the last)."""

    at: Annotated[float | str, BeforeValidator(_seconds_or_percent)]
    text: str

    @field_validator("text")
    @classmethod
    def _text(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty" + (" or only spaces" if v else ""))
        return _valid_text(v)


def _prompt_kind(v: Any) -> str:
    """A list holding a mapping (or nothing) is a timeline; anything else must be one text (["a"] is a mistake that
    reads best as "must be a string, got a list")."""
    if isinstance(v, list) and (not v or any(isinstance(e, (dict, PromptEntry)) for e in v)):
        return "timeline"
    return "plain"


# A prompt: one text for the whole clip, or a timeline of entries (the first at 0). Errors inside a timeline are
# located under the tag "timeline" (jobs.problems drops it: prompt[1].text, not prompt.timeline[1].text).
PROMPT_TAGS = ("plain", "timeline")
PromptField = Annotated[
    Annotated[str, Tag("plain")] | Annotated[list[PromptEntry], Tag("timeline"), Field(min_length=1)],
    Discriminator(_prompt_kind),
]


class LoraRef(Strict):
    """A LoRA by known name (see loras.KNOWN_LORAS) or by .safetensors path."""

    name: str | None = None
    path: str | None = None
    strength: Number = Field(default=1.0, ge=-2.0, le=2.0)

    @model_validator(mode="after")
    def _one_source(self) -> LoraRef:
        if (self.name is None) == (self.path is None):
            raise ValueError("give exactly one of name or path")
        return self

    @property
    def key(self) -> str:
        return f"name:{self.name}" if self.name is not None else f"path:{self.path}"


class Guidance(Strict):
    """Guidance scales. Every field is optional so layers (preset, defaults, job, CLI) merge."""

    cfg: Number | None = Field(default=None, ge=0.0)
    stg: Number | None = Field(default=None, ge=0.0)
    modality: Number | None = Field(default=None, ge=0.0)
    rescale: Number | None = Field(default=None, ge=0.0, le=1.0)
    audio_cfg: Number | None = Field(default=None, ge=0.0)
    audio_stg: Number | None = Field(default=None, ge=0.0)
    audio_modality: Number | None = Field(default=None, ge=0.0)
    audio_rescale: Number | None = Field(default=None, ge=0.0, le=1.0)
    stg_blocks: list[int] | None = None

    def over(self, base: Guidance) -> Guidance:
        """self's set fields on top of base."""
        return base.model_copy(update=self.model_dump(exclude_none=True))


class Job(Strict):
    id: str
    mode: Mode | None = None
    image: str | None = Field(default=None, min_length=1)
    keyframes: list[Keyframe] | None = Field(default=None, min_length=1, max_length=9)
    audio: str | None = Field(default=None, min_length=1)
    duration: Number | None = Field(default=None, gt=0.0)
    max_duration: Number = Field(default=600.0, gt=0.0)  # longer than one window renders in windows
    prompt: PromptField | None = None
    negative_prompt: PromptField | None = None
    preset: str | None = None
    seed: Integer | None = Field(default=None, ge=0, le=2**63 - 1)
    fps: Number = Field(default=30.0, ge=1.0, le=120.0)
    resolution: str = "auto"
    width: Integer | None = Field(default=None, ge=64, le=4096)
    height: Integer | None = Field(default=None, ge=64, le=4096)
    # the original service's range; none given: the model release's default (weights.versions: crf_default)
    img_compression: Integer | None = Field(default=None, ge=0, le=50)
    img_strength: Number = Field(default=1.0, ge=0.0, le=1.0)
    loras: list[LoraRef] | None = None
    # The original service's per-LoRA strengths (0 disables that LoRA).
    lora_distilled: Number | None = Field(default=None, ge=0.0, le=2.0)
    lora_camera: Number | None = Field(default=None, ge=0.0, le=2.0)
    lora_detailer: Number | None = Field(default=None, ge=0.0, le=2.0)
    steps: Integer | None = Field(default=None, ge=1, le=200)
    guidance: Guidance | None = None
    output: str | None = Field(default=None, min_length=1)
    # Accepted from the original service, not needed (see IGNORED_LEGACY_FIELDS).
    buffer_seconds: Number | None = Field(default=None, ge=0.0)
    trim_to_audio: bool | None = None  # lax: clients sent "true" as text, and it is ignored anyway
    auto_buffer_guide: StrictBool | str | None = None
    frame_alignment: Integer | None = Field(default=None, ge=1)

    @field_validator("mode", mode="before")
    @classmethod
    def _mode_spelling(cls, v: Any) -> Any:
        # "LipSync", "lip-sync", "audio_gen" (the original service's name) all mean the same.
        return v.strip().lower().replace("_", "").replace("-", "") if isinstance(v, str) else v

    @field_validator("id", mode="before")
    @classmethod
    def _id_from_number(cls, v: Any) -> Any:
        # YAML reads `id: 42` as a number; an id is a name either way.
        return str(v) if isinstance(v, int) and not isinstance(v, bool) else v

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID_RE.match(v):
            raise ValueError(f"must be 1-128 letters, digits, '_', '-' or '.', not starting with '.' or '-', got {v!r}")
        return v

    @field_validator("prompt", "negative_prompt")
    @classmethod
    def _text(cls, v: str | list[PromptEntry] | None) -> str | list[PromptEntry] | None:
        return _valid_text(v) if isinstance(v, str) else v  # a timeline's times are checked against the clip (plan)

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, v: str) -> str:
        v = v.strip().lower()
        if v != "auto" and not _RESOLUTION_RE.match(v):
            raise ValueError(f'must be "auto" or WIDTHxHEIGHT like "768x512", got {v!r}')
        return v

    @field_validator("width", "height")
    @classmethod
    def _multiple_of_32(cls, v: int | None) -> int | None:
        if v is not None and v % 32:
            lo, hi = v // 32 * 32, (v // 32 + 1) * 32
            raise ValueError(f"must be a multiple of 32 (the VAE's pixel grid), got {v}; try {lo} or {hi}")
        return v
