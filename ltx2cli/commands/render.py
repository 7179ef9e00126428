"""`ltx2 lipsync`, `ltx2 audiogen`, `ltx2 keyframes`: one job from command-line options, rendered like a batch job."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import typer

from ..engine.compile import CompileMode
from ..engine.model_source import ModelSource, model_version, option_warnings
from ..errors import InvalidJobs, UsageError
from ..output import Output, output_mode
from ..plan import plan_command_line
from ..run_options import RunOptions
from ..spec import RenderSpec
from ..storage import default_input_cache
from ..weights.fit import model_problems
from .batch import execute
from .options import (
    CacheDir,
    Cfg,
    Checkpoint,
    Compile,
    Debug,
    Json,
    MaxInputMb,
    Model,
    Precision,
    Preset,
    PresetsDir,
    Quiet,
    Steps,
    TextEncoder,
    Vram,
)

KEYFRAME_HELP = (  # \\[ keeps rich (help markup) from taking [@POSITION] for a tag and dropping it
    'Keyframe image, placed as IMAGE\\[@POSITION]\\[=STRENGTH]: POSITION is "first", "last" or a fraction of the clip '
    "(0..1), STRENGTH 0..1. Repeatable, up to 9 images in all."
)

Output_ = Annotated[
    str | None, typer.Option("--output", "-o", help="MP4 path or gs://bucket/name.mp4 [default: ./<image>.mp4].")
]
Prompt = Annotated[str | None, typer.Option("--prompt", help="What happens in the clip.")]
Negative = Annotated[str | None, typer.Option("--negative-prompt", help="What to avoid (used with CFG).")]
Seed = Annotated[int | None, typer.Option("--seed", min=0, help="Random seed [default: from the job id].")]
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


def _job_id(output: str | None, image: str) -> str:
    """The output file's name; for a folder (-o out/) or no -o, the image's, so out/ gets out/face.mp4."""
    named = output and not output.endswith(("/", "\\"))
    stem = Path(output).stem if named else Path(image.split("?")[0]).stem
    return re.sub(r"[^\w.\-]", "-", stem).lstrip(".-")[:128] or "clip"


def _run(job: dict[str, Any], model, json_, quiet, presets_dir, cache_dir, max_input_mb, debug, compile_, vram) -> None:
    out = Output(output_mode(json_, quiet))
    for warning in option_warnings(model):
        out.warning(warning)
    cache = default_input_cache(cache_dir, max_input_mb)
    job = {k: v for k, v in job.items() if v is not None}
    specs, problems = plan_command_line(job, presets_dirs=presets_dir, cache=cache, model_version=model_version(model))
    if problems or (problems := model_problems(specs, model)):
        raise InvalidJobs(problems)
    from ..engine.residency import plan_batch

    memory, problems, _ = plan_batch([s for s in specs if isinstance(s, RenderSpec)], model, vram)
    if problems:
        raise InvalidJobs(problems)
    execute(specs, model, out, RunOptions(fetch=cache.get, debug=debug, compile=compile_, memory=memory))


def lipsync(
    image: Annotated[str, typer.Argument(help="Portrait or first frame (path, URL or gs://).", show_default=False)],
    audio: Annotated[
        str, typer.Argument(help="Voice track, any format FFmpeg reads; sets the length.", show_default=False)
    ],
    prompt: Prompt = None,
    output: Output_ = None,
    keyframe: Keyframes = None,
    model: Model = None,
    text_encoder: TextEncoder = None,
    checkpoint: Checkpoint = None,
    precision: Precision = None,
    preset: Preset = None,
    seed: Seed = None,
    fps: FpsOpt = 30.0,
    resolution: Resolution = "auto",
    steps: Steps = None,
    cfg: Cfg = None,
    negative_prompt: Negative = None,
    img_compression: ImgCompression = None,
    img_strength: ImgStrength = None,
    json_: Json = False,
    quiet: Quiet = False,
    presets_dir: PresetsDir = None,
    cache_dir: CacheDir = None,
    max_input_mb: MaxInputMb = 200,
    debug: Debug = False,
    compile_: Compile = CompileMode.auto,
    vram: Vram = None,
) -> None:
    """Lip-sync a portrait to a voice track: the clip is as long as the audio and its sound IS the audio.

    Example: ltx2 lipsync face.png voice.wav --prompt "A woman talks to the camera" -o talk.mp4 --model tiny
    """
    job = _common(
        image,
        output,
        prompt,
        negative_prompt,
        preset,
        seed,
        fps,
        resolution,
        steps,
        cfg,
        img_compression,
        img_strength,
        keyframe,
    ) | {"mode": "lipsync", "audio": audio}
    source = ModelSource(model, text_encoder, checkpoint, precision)
    _run(job, source, json_, quiet, presets_dir, cache_dir, max_input_mb, debug, compile_, vram)


def audiogen(
    image: Annotated[str, typer.Argument(help="First frame (path, URL or gs://).", show_default=False)],
    duration: Duration = 5.0,
    prompt: Prompt = None,
    output: Output_ = None,
    keyframe: Keyframes = None,
    model: Model = None,
    text_encoder: TextEncoder = None,
    checkpoint: Checkpoint = None,
    precision: Precision = None,
    preset: Preset = None,
    seed: Seed = None,
    fps: FpsOpt = 30.0,
    resolution: Resolution = "auto",
    steps: Steps = None,
    cfg: Cfg = None,
    negative_prompt: Negative = None,
    img_compression: ImgCompression = None,
    img_strength: ImgStrength = None,
    json_: Json = False,
    quiet: Quiet = False,
    presets_dir: PresetsDir = None,
    cache_dir: CacheDir = None,
    max_input_mb: MaxInputMb = 200,
    debug: Debug = False,
    compile_: Compile = CompileMode.auto,
    vram: Vram = None,
) -> None:
    """Animate an image and generate its sound.

    Example: ltx2 audiogen cat.png --duration 5 --prompt "A cat meows at the door" --model tiny
    """
    job = _common(
        image,
        output,
        prompt,
        negative_prompt,
        preset,
        seed,
        fps,
        resolution,
        steps,
        cfg,
        img_compression,
        img_strength,
        keyframe,
    ) | {"mode": "audiogen", "duration": duration}
    source = ModelSource(model, text_encoder, checkpoint, precision)
    _run(job, source, json_, quiet, presets_dir, cache_dir, max_input_mb, debug, compile_, vram)


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
    prompt: Prompt = None,
    output: Output_ = None,
    model: Model = None,
    text_encoder: TextEncoder = None,
    checkpoint: Checkpoint = None,
    precision: Precision = None,
    preset: Preset = None,
    seed: Seed = None,
    fps: FpsOpt = 30.0,
    resolution: Resolution = "auto",
    steps: Steps = None,
    cfg: Cfg = None,
    negative_prompt: Negative = None,
    img_compression: ImgCompression = None,
    json_: Json = False,
    quiet: Quiet = False,
    presets_dir: PresetsDir = None,
    cache_dir: CacheDir = None,
    max_input_mb: MaxInputMb = 200,
    debug: Debug = False,
    compile_: Compile = CompileMode.auto,
    vram: Vram = None,
) -> None:
    """Render through keyframe images, with a voice track (--audio) or generated sound (--duration).

    Example: ltx2 keyframes start.png smile.png@0.5=0.8 end.png@last --duration 4 --model tiny
    """
    if (audio is None) == (duration is None):
        raise UsageError("give --audio (lip-sync) or --duration (audio-gen), exactly one")
    kfs = [parse_keyframe(t) for t in images]
    job = _common(
        kfs[0]["image"],
        output,
        prompt,
        negative_prompt,
        preset,
        seed,
        fps,
        resolution,
        steps,
        cfg,
        img_compression,
        None,
        None,
    )
    del job["image"]
    job |= {"keyframes": kfs, "audio": audio, "duration": duration}
    source = ModelSource(model, text_encoder, checkpoint, precision)
    _run(job, source, json_, quiet, presets_dir, cache_dir, max_input_mb, debug, compile_, vram)


def _common(
    image,
    output,
    prompt,
    negative_prompt,
    preset,
    seed,
    fps,
    resolution,
    steps,
    cfg,
    img_compression,
    img_strength,
    keyframe,
) -> dict[str, Any]:
    job: dict[str, Any] = {
        "id": _job_id(output, image),
        "image": image,
        "output": output,
        "prompt": prompt,
        "negative_prompt": negative_prompt,
        "preset": preset,
        "seed": seed,
        "fps": fps,
        "resolution": resolution,
        "steps": steps,
        "img_compression": img_compression,
        "img_strength": img_strength,
    }
    if cfg is not None:
        job["guidance"] = {"cfg": cfg}
    if keyframe:
        job["keyframes"] = [parse_keyframe(t) for t in keyframe]
    return job
