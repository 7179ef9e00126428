"""RenderSpec: the exact, resolved description of one render (what the engine consumes).

SpecPreview is the same description while some of it is not known yet: the clip length of a remote audio file or
the size of a remote image that was not fetched (`validate --no-fetch`), or that could not be had (a batch records
that job as failed). A RenderSpec is a preview with every frame count, size and keyframe frame known; the planner
makes one only then (`exact`), so the engine never sees a None.
"""

from __future__ import annotations

import hashlib
import json

from .job import Guidance, LoraRef, Strict


class KeyframePreview(Strict):
    image: str  # absolute path or URL
    position: str | float
    frame: int | None  # exact pixel frame; None until the clip length is known (remote audio)
    strength: float


class KeyframeSpec(KeyframePreview):
    frame: int  # exact pixel frame


class WindowSpec(Strict):
    """How a clip longer than one window is rendered (jobs.windows); from the preset."""

    seconds: float  # about this long each, 8k+1 frames
    overlap: int  # latent frames each window shares with the one before (8 * overlap + 1 pixel frames)
    strength: float  # how firmly the shared frames (and generated audio) are held
    count: int  # windows in this clip


class SpecPreview(Strict):
    """A job as planned so far: None where the clip length or size depends on an input not had."""

    id: str
    mode: str
    source: str  # manifest file:line
    prompt: str
    negative_prompt: str
    seed: int
    duration: float | None
    fps: float
    output_frames: int | None
    num_frames: int | None
    latent_frames: int | None
    audio_latent_frames: int | None
    width: int | None
    height: int | None
    audio: str | None
    keyframes: list[KeyframePreview]
    img_compression: int
    preset: str
    model: str
    steps: int | None
    sigmas: list[float] | None
    guidance: Guidance
    two_stage: bool
    stage2_sigmas: list[float] | None
    loras: list[LoraRef]
    output: str
    warnings: list[str] = []
    window: WindowSpec | None = None  # set only for a clip longer than one window
    # of the input files' bytes (PlanContext.inputs_sha256); None while a remote input is not had
    inputs_sha256: str | None = None

    def spec_hash(self) -> str:
        """Hash of everything that changes the pixels or sound (not the job's name or where the file goes)."""
        skip = {"id", "output", "source", "warnings"} | ({"window"} if self.window is None else set())
        data = self.model_dump(mode="json", exclude=skip)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


class RenderSpec(SpecPreview):
    """What the engine renders: every frame count, size and keyframe frame exact (same fields, none optional)."""

    duration: float
    output_frames: int
    num_frames: int
    latent_frames: int
    audio_latent_frames: int
    width: int
    height: int
    keyframes: list[KeyframeSpec]


def exact(preview: SpecPreview) -> RenderSpec | None:
    """The RenderSpec of a preview whose frame counts, size and keyframe frames are all known, else None."""
    if isinstance(preview, RenderSpec):
        return preview
    sizes = (preview.duration, preview.output_frames, preview.num_frames, preview.latent_frames)
    rest = (preview.audio_latent_frames, preview.width, preview.height, *(k.frame for k in preview.keyframes))
    if None in sizes + rest:
        return None
    return RenderSpec.model_validate(preview.model_dump())
