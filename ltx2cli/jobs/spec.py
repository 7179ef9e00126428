"""RenderSpec: the exact, resolved description of one render (what the engine consumes).

SpecPreview is the same description while some of it is not known yet: the clip length of a remote audio file or
the size of a remote image that was not fetched (`validate --no-fetch`), or that could not be had (a batch records
that job as failed). A RenderSpec is a preview with every frame count, size and keyframe frame known; the planner
makes one only then (`exact`), so the engine never sees a None.
"""

from __future__ import annotations

import hashlib
import json

from .guidance import Scales
from .job import Guidance, LoraRef, Strict

# Fields left out of the hash while they are None, so a job that does not use them hashes as it did before they
# existed (and its finished output is not rendered again).
_HASHED_IF_SET = ("window", "prompt_timeline", "negative_prompt_timeline")


class KeyframePreview(Strict):
    image: str  # absolute path or URL
    position: str | float
    frame: int | None  # exact pixel frame; None until the clip length is known (remote audio)
    strength: float


class KeyframeSpec(KeyframePreview):
    frame: int  # exact pixel frame


class TimedPromptPreview(Strict):
    """One entry of a prompt timeline (jobs.job.PromptEntry) as planned."""

    at: float | str  # as the job gives it: seconds, or "NN%" of the clip
    frame: int | None  # the output frame it is in force from; None until the clip length is known (remote audio)
    text: str


class TimedPrompt(TimedPromptPreview):
    frame: int


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
    prompt: str  # in force from the clip's start: the whole clip's, unless prompt_timeline changes it
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
    # A timeline of 2+ entries, the first the text above at frame 0 (a timeline of one is that plain prompt)
    prompt_timeline: list[TimedPromptPreview] | None = None
    negative_prompt_timeline: list[TimedPromptPreview] | None = None

    def spec_hash(self) -> str:
        """Hash of everything that changes the pixels or sound (not the job's name or where the file goes)."""
        skip = {"id", "output", "source", "warnings"} | {name for name in _HASHED_IF_SET if getattr(self, name) is None}
        data = self.model_dump(mode="json", exclude=skip)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def prompt_at(self, frame: int) -> tuple[str, str]:
        """(prompt, negative prompt) in force at output frame `frame`."""
        return _in_force(self.prompt_timeline, frame, self.prompt), _in_force(
            self.negative_prompt_timeline, frame, self.negative_prompt
        )

    def timelines(self) -> dict[str, list[TimedPromptPreview]]:
        """The prompt timelines a render follows, by field: the prompt's, and the negative prompt's where CFG uses
        it (without CFG the negative prompt is not encoded at all)."""
        uses_negative = Scales.from_spec(self.guidance).uses_cfg
        both = {
            "prompt": self.prompt_timeline,
            "negative_prompt": self.negative_prompt_timeline if uses_negative else None,
        }
        return {field: timeline for field, timeline in both.items() if timeline}

    def prompt_changes(self) -> list[int]:
        """The frames where the prompt a render uses changes (the window plan puts boundaries there); empty while
        the clip length is not known."""
        frames = {entry.frame for timeline in self.timelines().values() for entry in timeline}
        return [] if None in frames else sorted(frames - {0})


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
    prompt_timeline: list[TimedPrompt] | None = None
    negative_prompt_timeline: list[TimedPrompt] | None = None


def in_force(timeline: list[TimedPromptPreview], frame: int) -> int:
    """The index of the entry in force at output frame `frame`: the last one from that frame or before."""
    return max(i for i, entry in enumerate(timeline) if entry.frame is not None and entry.frame <= frame)


def _in_force(timeline: list[TimedPromptPreview] | None, frame: int, plain: str) -> str:
    """The text in force at `frame` (`plain` without a timeline)."""
    return timeline[in_force(timeline, frame)].text if timeline else plain


def exact(preview: SpecPreview) -> RenderSpec | None:
    """The RenderSpec of a preview whose frame counts, size and keyframe frames are all known, else None."""
    if isinstance(preview, RenderSpec):
        return preview
    sizes = (preview.duration, preview.output_frames, preview.num_frames, preview.latent_frames)
    rest = (preview.audio_latent_frames, preview.width, preview.height, *(k.frame for k in preview.keyframes))
    rest += tuple(e.frame for e in (preview.prompt_timeline or []) + (preview.negative_prompt_timeline or []))
    if None in sizes + rest:
        return None
    return RenderSpec.model_validate(preview.model_dump())
