"""RenderSpec: the exact, resolved description of one render (what the engine consumes)."""

from __future__ import annotations

import hashlib
import json

from .jobs import Guidance, LoraRef, Strict


class KeyframeSpec(Strict):
    image: str  # absolute path or URL
    position: str | float
    frame: int | None  # exact pixel frame; None until the clip length is known (remote audio)
    strength: float


class WindowSpec(Strict):
    """How a clip longer than one window is rendered (engine.windows); from the preset."""

    seconds: float  # about this long each, 8k+1 frames
    overlap: int  # latent frames each window shares with the one before (8 * overlap + 1 pixel frames)
    strength: float  # how firmly the shared frames (and generated audio) are held
    count: int  # windows in this clip


class RenderSpec(Strict):
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
    keyframes: list[KeyframeSpec]
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

    def spec_hash(self) -> str:
        """Hash of everything that changes the pixels or sound (not the job's name or where the file goes)."""
        skip = {"id", "output", "source", "warnings"} | ({"window"} if self.window is None else set())
        data = self.model_dump(mode="json", exclude=skip)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]
