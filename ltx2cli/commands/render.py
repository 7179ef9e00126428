"""`ltx2 lipsync`, `ltx2 audiogen`, `ltx2 keyframes`: one job from command-line options, rendered like a batch job."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar

import typer
import yaml

from ..batch.options import RunOptions
from ..errors import InvalidJobs, UsageError
from ..jobs.spec import RenderSpec
from ..plan.resolve import plan_command_line
from ..weights.fit import model_problems
from ..weights.source import model_version, option_warnings
from .batch import execute
from .options import (
    Cfg,
    InputOptions,
    ModelOptions,
    OutputOptions,
    Preset,
    RenderOptions,
    Steps,
    option_groups,
)

KEYFRAME_HELP = (  # \\[ keeps rich (help markup) from taking [@POSITION] for a tag and dropping it
    'Keyframe image, placed as IMAGE\\[@POSITION]\\[=STRENGTH]: POSITION is "first", "last" or a fraction of the clip '
    "(0..1), STRENGTH 0..1. Repeatable, up to 9 images in all."
)

Output_ = Annotated[
    str | None, typer.Option("--output", "-o", help="MP4 path or gs://bucket/name.mp4 \\[default: ./<image>.mp4].")
]
Prompt = Annotated[
    str | None,
    typer.Option("--prompt", help="What happens in the clip: one text (a prompt timeline goes in a manifest)."),
]
Negative = Annotated[str | None, typer.Option("--negative-prompt", help="What to avoid (used with CFG): one text.")]
Seed = Annotated[int | None, typer.Option("--seed", min=0, help="Random seed \\[default: from the job id].")]
FpsOpt = Annotated[float, typer.Option("--fps", min=1.0, max=120.0, help="Frames per second.")]
Resolution = Annotated[str, typer.Option("--resolution", "-r", help='WIDTHxHEIGHT (multiples of 32) or "auto".')]
Keyframes = Annotated[list[str] | None, typer.Option("--keyframe", "-k", help=KEYFRAME_HELP, show_default=False)]
ImgCompression = Annotated[
    int | None, typer.Option("--img-compression", min=0, max=50, help="H.264 CRF applied to images, 0-50 (0 = off).")
]
ImgStrength = Annotated[float | None, typer.Option("--img-strength", min=0.0, max=1.0, help="First image's strength.")]
Duration = Annotated[float, typer.Option("--duration", "-d", min=0.01, help="Clip length in seconds.")]

_KEYFRAME_RE = re.compile(
    r"^(?P<image>.+?)(?:@(?P<position>first|last|[0-9]*\.?[0-9]+))?(?:=(?P<strength>[0-9]*\.?[0-9]+))?$"
)
# IMAGE@ANYTHING[=ANYTHING], split at the last '@': for an IMAGE that exists, the rest was meant as its placement.
_LOOSE_KEYFRAME_RE = re.compile(r"^(?P<image>.+)@(?P<position>[^@=]*)(?:=(?P<strength>[^@=]*))?$")


def parse_keyframe(text: str) -> dict[str, Any]:
    """IMAGE[@POSITION][=STRENGTH] -> a manifest keyframe; a name that exists as a file is taken whole. An existing
    IMAGE with a position or strength that is not one keeps them as given, for the job's checks to name."""
    if Path(text).exists():
        return {"image": text}
    m = _KEYFRAME_RE.match(text.strip())
    if not m:
        raise UsageError(f"--keyframe {text!r}: use IMAGE[@POSITION][=STRENGTH], e.g. smile.png@last=0.9")
    loose = _LOOSE_KEYFRAME_RE.match(text.strip())
    if not m["position"] and loose and Path(loose["image"]).exists():
        # smile.png@-0.1: "keyframes[1].position: ... got '-0.1'", not "file not found: smile.png@-0.1"
        return {k: v for k, v in loose.groupdict().items() if v is not None}
    kf: dict[str, Any] = {"image": m["image"]}
    if m["position"]:
        kf["position"] = m["position"] if m["position"] in ("first", "last") else float(m["position"])
    if m["strength"]:
        kf["strength"] = float(m["strength"])
    return kf


def _one_text(option: str, value: str | None) -> None:
    """A prompt option takes one text. A timeline written there (a YAML or JSON list of {at, text}) would otherwise
    be encoded as the words of one prompt, brackets and all."""
    if value is None or not value.lstrip().startswith("["):
        return
    try:
        given = yaml.safe_load(value)
    except yaml.YAMLError:
        return  # "[slow motion] a cat": words that begin with a bracket
    if isinstance(given, list) and any(isinstance(entry, dict) for entry in given):
        raise UsageError(
            f"{option} takes one text, got a list of {len(given)} entries; a prompt timeline ([{{at: SECONDS or "
            '"NN%", text: ...}, ...]) goes in a manifest job\'s prompt field: ltx2 batch jobs.yaml'
        )


def _job_id(output: str | None, image: str) -> str:
    """The output file's name; for a folder (-o out/) or no -o, the image's, so out/ gets out/face.mp4."""
    named = output and not output.endswith(("/", "\\"))
    stem = Path(output).stem if named else Path(image.split("?")[0]).stem
    return re.sub(r"[^\w.\-]", "-", stem).lstrip(".-")[:128] or "clip"


@dataclasses.dataclass(frozen=True)
class ClipOptions:
    """The job fields all three render commands take (a manifest job's, as options)."""

    PANEL: ClassVar[str] = "Clip"
    prompt: Prompt = None
    negative_prompt: Negative = None
    output: Output_ = None
    preset: Preset = None
    seed: Seed = None
    fps: FpsOpt = 30.0
    resolution: Resolution = "auto"
    steps: Steps = None
    cfg: Cfg = None
    img_compression: ImgCompression = None

    def job(self, image: str) -> dict[str, Any]:
        """A manifest job of these fields, for the first frame `image`, named after the output (or the image)."""
        _one_text("--prompt", self.prompt)
        _one_text("--negative-prompt", self.negative_prompt)
        job = {k: v for k, v in dataclasses.asdict(self).items() if k != "cfg"}
        return job | {"id": _job_id(self.output, image), "image": image, "guidance": self.guidance}

    @property
    def guidance(self) -> dict[str, float] | None:
        return {"cfg": self.cfg} if self.cfg is not None else None


def _run(job: dict[str, Any], models: ModelOptions, show: OutputOptions, inputs: InputOptions, run: RenderOptions):
    out = show.output()
    for warning in option_warnings(models.given):
        out.warning(warning)
    model, cache = models.source(), inputs.cache()
    job = {k: v for k, v in job.items() if v is not None}
    specs, problems = plan_command_line(
        job, presets_dirs=inputs.presets_dir, cache=cache, model_version=model_version(model)
    )
    if problems or (problems := model_problems(specs, model)):
        raise InvalidJobs(problems)
    from ..engine.memory.residency import plan_batch

    memory, problems, _ = plan_batch([s for s in specs if isinstance(s, RenderSpec)], model, models.vram)
    if problems:
        raise InvalidJobs(problems)
    attention = run.checked_attention()
    opts = RunOptions(fetch=cache.get, debug=run.debug, compile=run.compile_, attention=attention, memory=memory)
    execute(specs, model, out, opts)


@option_groups
def lipsync(
    image: Annotated[str, typer.Argument(help="Portrait or first frame (path, URL or gs://).", show_default=False)],
    audio: Annotated[
        str, typer.Argument(help="Voice track, any format FFmpeg reads; sets the length.", show_default=False)
    ],
    *,
    clip: ClipOptions,
    keyframe: Keyframes = None,
    img_strength: ImgStrength = None,
    models: ModelOptions,
    run: RenderOptions,
    inputs: InputOptions,
    show: OutputOptions,
) -> None:
    """Lip-sync a portrait to a voice track: the clip is as long as the audio and its sound IS the audio.

    Example: ltx2 lipsync face.png voice.wav --prompt "A woman talks to the camera" -o talk.mp4 --model tiny
    """
    job = clip.job(image) | _first_image(img_strength, keyframe) | {"mode": "lipsync", "audio": audio}
    _run(job, models, show, inputs, run)


@option_groups
def audiogen(
    image: Annotated[str, typer.Argument(help="First frame (path, URL or gs://).", show_default=False)],
    duration: Duration = 5.0,
    *,
    clip: ClipOptions,
    keyframe: Keyframes = None,
    img_strength: ImgStrength = None,
    models: ModelOptions,
    run: RenderOptions,
    inputs: InputOptions,
    show: OutputOptions,
) -> None:
    """Animate an image and generate its sound.

    Example: ltx2 audiogen cat.png --duration 5 --prompt "A cat meows at the door" --model tiny
    """
    job = clip.job(image) | _first_image(img_strength, keyframe) | {"mode": "audiogen", "duration": duration}
    _run(job, models, show, inputs, run)


@option_groups
def keyframes(
    images: Annotated[
        list[str],
        typer.Argument(
            help=f"1-9 images. {KEYFRAME_HELP} Without positions they spread evenly from first to last.",
            show_default=False,
        ),
    ],
    audio: Annotated[str | None, typer.Option("--audio", "-a", help="Voice track (lip-sync; sets the length).")] = None,
    duration: Annotated[float | None, typer.Option("--duration", "-d", min=0.01, help="Seconds (audio-gen).")] = None,
    *,
    clip: ClipOptions,
    models: ModelOptions,
    run: RenderOptions,
    inputs: InputOptions,
    show: OutputOptions,
) -> None:
    """Render through keyframe images, with a voice track (--audio) or generated sound (--duration).

    Example: ltx2 keyframes start.png smile.png@0.5=0.8 end.png@last --duration 4 --model tiny
    """
    if (audio is None) == (duration is None):
        raise UsageError("give --audio (lip-sync) or --duration (audio-gen), exactly one")
    kfs = [parse_keyframe(t) for t in images]
    job = clip.job(kfs[0]["image"])
    del job["image"]
    job |= {"keyframes": kfs, "audio": audio, "duration": duration}
    _run(job, models, show, inputs, run)


def _first_image(img_strength: float | None, keyframe: list[str] | None) -> dict[str, Any]:
    """lipsync's and audiogen's first-image strength and extra keyframes, as job fields."""
    return {"img_strength": img_strength, "keyframes": [parse_keyframe(t) for t in keyframe] if keyframe else None}
