"""Job -> RenderSpec: the exact render (frames, size, keyframe pixel frames, schedule, LoRAs, output).

Everything here is cheap and torch-free, so `ltx2 validate` and `--dry-run` resolve every job
of a manifest before any model loads, and report every problem at once. Given an InputCache, remote
inputs are fetched (all at once, each URL once) and probed like local files.

Two kinds of problem: the manifest's own (a bad field or value, a local file that is not there) and the
world's (a remote input that cannot be fetched or decoded now: Problem.code set). A job with only the second
kind gets a SpecPreview, never a RenderSpec, so a batch records it as failed and renders the rest. So does a job
whose remote inputs were not fetched (validate --no-fetch): its clip length or size is not known.
"""

from __future__ import annotations

import difflib
import math
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from . import sources
from .errors import Failure, Ltx2Error, MediaError, Problem
from .jobs import (
    ALIASES,
    DEFAULT_NEGATIVE_PROMPT,
    DEFAULT_PROMPTS,
    IGNORED_LEGACY_FIELDS,
    KEYFRAME_ALIASES,
    Guidance,
    Job,
    Keyframe,
    LoraRef,
)
from .loras import LEGACY_STRENGTH_FIELDS, canonical_name, stack
from .manifest import CLI, SUFFIXES, RawJob, read_manifests
from .media import probe
from .presets import DEFAULT_PRESET, Preset, PresetSet, load_presets
from .sinks import output_name
from .spec import KeyframePreview, SpecPreview, WindowSpec, exact
from .storage import InputCache, redact
from .timeline import default_positions, keyframe_frame, output_frame_count, timeline
from .weights.versions import DEFAULT as DEFAULT_VERSION
from .weights.versions import VERSIONS, Version

MAX_KEYFRAMES = 9
OUTPUT_FIELDS = ("id", "job_id", "mode", "preset", "seed")
FETCH_WORKERS = 8  # downloads are I/O-bound; a few at a time, not one per URL


@dataclass
class PlanContext:
    presets: PresetSet
    output_dir: Path = Path("outputs")  # for jobs without `output`; relative to the working directory
    cache: InputCache | None = None  # fetch remote inputs to probe them; None leaves their lengths/sizes unknown
    # the weights' release (weights.versions), when known before planning: its defaults (image CRF) and LoRAs
    # apply; None plans with LTX-2's (validate without --model)
    model_version: str | None = None
    # (url, kind) -> the cached file, or why it could not be had; filled by prefetch / fetch
    fetched: dict[tuple[str, str], Path | Unavailable] = field(default_factory=dict, repr=False)

    def fetch(self, url: str, kind: str) -> Path | Unavailable:
        """Local copy of a remote input (kind "image" / "audio"), or the reason there is none."""
        key = (url, kind)
        if key not in self.fetched:
            assert self.cache is not None
            self.fetched[key] = _fetch(self.cache, url, kind)
        return self.fetched[key]


@dataclass(frozen=True)
class Unavailable:
    """Why a remote input cannot be had: the code its job fails with, and one line naming the URL."""

    code: str
    message: str


def _fetch(cache: InputCache, url: str, kind: str) -> Path | Unavailable:
    shown = redact(url)
    try:
        return cache.get(url, kind)
    except Exception as e:  # any fetch failure, client libraries' own errors too, is a job problem, not a crash
        detail = str(e).replace(url, shown)  # never echo a signed URL's query string
        message = detail if isinstance(e, Ltx2Error) else f"fetch failed ({e.__class__.__name__}: {detail})"
        # A bucket that will not hand the object over is a storage error; content that is not media is the input's.
        code = "E_STORAGE" if url.startswith("gs://") and not isinstance(e, MediaError) else "E_INPUT"
    message = " ".join(message.split())  # one line per problem
    return Unavailable(code, message if shown in message else f"{shown}: {message}")


def prefetch(raws: list[RawJob], ctx: PlanContext) -> None:
    """Fetch every distinct remote input of the batch concurrently; planning then reads the cache."""
    if ctx.cache is None:
        return
    wanted: dict[tuple[str, str], None] = {}  # ordered set
    for raw in raws:
        try:
            job = Job.model_validate(raw.data)
        except ValidationError:
            continue  # reported by plan_job; nothing of it gets probed
        for key in _remote_inputs(job):
            wanted.setdefault(key)
    todo = [key for key in wanted if key not in ctx.fetched]
    if todo:
        with ThreadPoolExecutor(max_workers=min(FETCH_WORKERS, len(todo)), thread_name_prefix="fetch") as pool:
            list(pool.map(lambda key: ctx.fetch(*key), todo))


def _remote_inputs(job: Job) -> list[tuple[str, str]]:
    """(url, kind) of the remote inputs that planning probes, as _resolve would pick them."""
    found: list[tuple[str, str]] = []
    images = ([job.image] if job.image is not None else []) + [kf.image for kf in job.keyframes or []]
    if len(images) <= MAX_KEYFRAMES:
        found += [(v, "image") for v in images]
    if job.audio is not None and job.duration is None and job.mode != "audiogen":  # i.e. lipsync
        found.append((job.audio, "audio"))
    return [(url, kind) for value, kind in found if (url := _remote_url(value))]


def _remote_url(value: str) -> str | None:
    """The canonical form of a usable remote source, else None (local, or reported by _source)."""
    try:
        canonical, local = sources.resolve(value, Path.cwd())
    except ValueError:
        return None
    return canonical if local is None else None


@dataclass
class _Resolver:
    raw: RawJob
    job: Job
    ctx: PlanContext
    problems: list[Problem] = field(default_factory=list)  # the manifest's: no spec
    failures: list[Problem] = field(default_factory=list)  # the world's (remote inputs): a spec that fails
    warnings: list[str] = field(default_factory=list)

    def fail(self, path: tuple, message: str, code: str | None = None) -> None:
        """A problem with the manifest, or with `code` a remote input that cannot be had (the job fails alone)."""
        if code is None:
            self.problems.append(self.raw.problem(path, message))
        else:
            self.failures.append(replace(self.raw.problem(path, message), code=code))


def plan_jobs(raws: list[RawJob], ctx: PlanContext) -> tuple[list[SpecPreview], list[Problem]]:
    """A plan for every job the manifest describes correctly: its RenderSpec, or a SpecPreview for one whose remote
    inputs were not fetched or cannot be had (what depends on them stays None); and every problem, the world's with
    their code (see job_failures)."""
    prefetch(raws, ctx)
    planned: list[tuple[RawJob, SpecPreview]] = []
    problems: list[Problem] = []
    for raw in raws:
        spec, probs = plan_job(raw, ctx)
        problems += probs
        if spec is not None:
            planned.append((raw, spec))
    problems += _cross_job_problems(raws, planned)
    # A bad key in `defaults:` shows up in every job; say it once. A dead URL there fails every job that uses it.
    unique: dict[tuple, Problem] = {}
    for p in problems:
        unique.setdefault((p.where, p.field, p.message, p.job if p.world else None), p)
    return [spec for _, spec in planned], list(unique.values())


def job_failures(problems: list[Problem]) -> dict[str, Failure]:
    """Job id -> its failure, for the jobs whose remote inputs cannot be had: how a batch records them."""
    failed: dict[str, Failure] = {}
    for p in problems:
        if p.world and p.job is not None:
            line = f"{p.field}: {p.message}" if p.field else p.message
            before = failed.get(p.job)
            failed[p.job] = Failure(before.code, f"{before.message}; {line}") if before else Failure(p.code, line)
    return failed


def plan_job(raw: RawJob, ctx: PlanContext) -> tuple[SpecPreview | None, list[Problem]]:
    """(its RenderSpec, []) when everything is known; (a SpecPreview, its failures) when a remote input is not had;
    (None, problems) when the manifest describes it wrongly."""
    try:
        job = Job.model_validate(raw.data)
    except ValidationError as e:
        return None, _schema_problems(raw, e)
    r = _Resolver(raw, job, ctx)
    preview = _resolve(r)
    if preview is None or r.problems:
        return None, r.problems + r.failures
    if r.failures:
        return preview, r.failures
    return exact(preview) or preview, []


def _resolve(r: _Resolver) -> SpecPreview | None:
    job = r.job
    mode = _mode(r)
    try:
        preset = r.ctx.presets.lookup(job.preset or DEFAULT_PRESET)
    except ValueError as e:
        r.fail(("preset",), str(e))
        preset = None

    audio, duration = None, None
    if job.audio is not None:
        audio, local = _source(r, ("audio",), job.audio, "audio" if mode == "lipsync" else None)
        if local is not None and mode == "lipsync":
            duration = _audio_duration(r, local, "E_INPUT" if sources.is_remote(audio) else None)
    if mode == "audiogen" and job.duration is not None:
        duration = job.duration
        if duration > job.max_duration:
            r.fail(("duration",), f"{duration:g} s is longer than max_duration ({job.max_duration:g} s)")

    tl = None
    if duration is not None:
        if output_frame_count(duration, job.fps) < 1:
            field = "duration" if mode == "audiogen" else "audio"
            r.fail((field,), f"{duration:g} s at {job.fps:g} fps is less than one frame")
        else:
            tl = timeline(duration, job.fps)

    keyframes, first_size = _keyframes(r, tl.output_frames if tl else None)
    width, height = _size(r, preset, first_size)
    loras = _loras(r, preset)
    for name in IGNORED_LEGACY_FIELDS:
        if getattr(job, name) is not None:
            r.warnings.append(f"{name} is ignored: ltx2 renders the exact clip length and exact keyframe frames")
    if job.lora_detailer:
        r.warnings.append("lora_detailer is ignored: the detailer is an IC-LoRA that needs a reference video")
    seed = job.seed if job.seed is not None else zlib.crc32(job.id.encode())
    output = _output(r, mode, preset, seed)
    if r.problems or preset is None or mode is None or output is None:
        return None

    return SpecPreview(
        id=job.id,
        mode=mode,
        source=r.raw.where(),
        prompt=job.prompt if job.prompt is not None else DEFAULT_PROMPTS[mode],
        negative_prompt=job.negative_prompt if job.negative_prompt is not None else DEFAULT_NEGATIVE_PROMPT,
        seed=seed,
        duration=duration,
        fps=job.fps,
        output_frames=tl.output_frames if tl else None,
        num_frames=tl.num_frames if tl else None,
        latent_frames=tl.latent_frames if tl else None,
        audio_latent_frames=tl.audio_latent_frames if tl else None,
        width=width,
        height=height,
        audio=audio,
        keyframes=keyframes,
        img_compression=job.img_compression if job.img_compression is not None else _version(r).crf_default,
        preset=preset.name,
        model=preset.model,
        steps=job.steps if job.steps is not None else preset.steps,
        sigmas=None if job.steps is not None else preset.sigmas,
        guidance=job.guidance.over(preset.full_guidance) if job.guidance else preset.full_guidance,
        two_stage=preset.two_stage,
        stage2_sigmas=preset.stage2_sigmas,
        loras=loras,
        output=output,
        warnings=r.warnings,
        window=_window(preset, tl.num_frames, job.fps) if tl else None,
    )


def _window(preset: Preset, num_frames: int, fps: float) -> WindowSpec | None:
    """The window settings of a clip longer than one window (None: it renders in one pass, as always)."""
    from .engine.windows import plan_windows

    count = len(plan_windows(num_frames, fps, preset.window_seconds, preset.window_overlap))
    if count == 1:
        return None
    return WindowSpec(
        seconds=preset.window_seconds, overlap=preset.window_overlap, strength=preset.window_strength, count=count
    )


def _mode(r: _Resolver) -> str | None:
    job = r.job
    has_audio, has_duration = job.audio is not None, job.duration is not None
    if has_audio and has_duration:
        r.fail(("duration",), "give audio (lipsync: the clip is as long as the audio) or duration (audiogen), not both")
        return None
    if job.mode is None:
        if not (has_audio or has_duration):
            r.fail(("audio",), "missing: give audio (lipsync) or duration in seconds (audiogen)")
            return None
        return "lipsync" if has_audio else "audiogen"
    if job.mode == "lipsync" and not has_audio:
        r.fail(("audio",), "mode lipsync needs audio (a path or URL)")
        return None
    if job.mode == "audiogen" and not has_duration:
        r.fail(("duration",), "mode audiogen needs duration (seconds)")
        return None
    return job.mode


def _source(r: _Resolver, path: tuple, value: str, kind: str | None = None) -> tuple[str, Path | None]:
    """(value for the spec, local file to probe or None). A remote value of a `kind` is fetched when
    there is a cache; the spec keeps the URL, and the renderer's cache.get(url) finds the same file."""
    try:
        canonical, local = sources.resolve(value, r.raw.base_dir)
    except ValueError as e:
        r.fail(path, str(e))
        return value, None
    if local is None and kind is not None and r.ctx.cache is not None:
        got = r.ctx.fetch(canonical, kind)
        if isinstance(got, Unavailable):
            r.fail(path, got.message, got.code)
        else:
            local = got
    return canonical, local


def _audio_duration(r: _Resolver, local: Path, code: str | None) -> float | None:
    """The audio's length; a problem if unreadable or too long (with `code`: a remote file's, the job fails alone)."""
    try:
        seconds = probe.audio_duration(local, max_duration=r.job.max_duration)
    except MediaError as e:
        r.fail(("audio",), str(e), code)
        return None
    if seconds > r.job.max_duration:
        r.fail(
            ("audio",),
            f"audio is {seconds:.2f} s long, over max_duration ({r.job.max_duration:g} s); "
            "trim it or raise max_duration",
            code,
        )
        return None
    return seconds


def _keyframes(r: _Resolver, output_frames: int | None) -> tuple[list[KeyframePreview], tuple[int, int] | None]:
    """Keyframes with exact frames, sorted; plus the display size of the earliest one's image."""
    job = r.job
    items: list[tuple[tuple, Keyframe]] = []
    if job.image is not None:
        items.append((("image",), Keyframe(image=job.image, position="first", strength=job.img_strength)))
    items += [(("keyframes", i), kf) for i, kf in enumerate(job.keyframes or [])]
    if not items:
        r.fail(("image",), "missing: give image (or keyframes: 1-9 images)")
        return [], None
    if len(items) > MAX_KEYFRAMES:
        r.fail(("keyframes",), f"at most {MAX_KEYFRAMES} keyframes in all (image counts as one), got {len(items)}")
        return [], None

    spread = default_positions(len(items))
    specs: list[tuple[tuple, KeyframePreview, tuple[int, int] | None]] = []
    for (path, kf), default in zip(items, spread, strict=False):
        image_field = path if path == ("image",) else (*path, "image")
        image, local = _source(r, image_field, kf.image, "image")
        size = None
        if local is not None:
            try:
                size = probe.image_size(local)
            except MediaError as e:
                r.fail(image_field, str(e), "E_INPUT" if sources.is_remote(image) else None)
        position = kf.position if kf.position is not None else default
        frame = keyframe_frame(position, output_frames) if output_frames is not None else None
        at_start = frame == 0 if frame is not None else position in ("first", 0.0)
        at_end = frame == output_frames - 1 if frame is not None else position in ("last", 1.0)
        strength = kf.strength
        if strength is None:
            strength = job.img_strength if at_start else 1.0 if at_end else 0.8
        specs.append((path, KeyframePreview(image=image, position=position, frame=frame, strength=strength), size))

    seen: dict[Any, tuple] = {}
    for path, spec, _ in specs:
        slot = spec.frame if spec.frame is not None else _order(spec.position)
        if slot in seen:
            other = r.raw.field_name(seen[slot])
            where = f"frame {slot}" if spec.frame is not None else f"position {slot}"
            r.fail(path, f"lands on the same {where} as {other}; two keyframes cannot share a frame")
        seen[slot] = path
    specs.sort(key=lambda s: s[1].frame if s[1].frame is not None else _order(s[1].position))
    first_size = specs[0][2] if specs else None
    return [s for _, s, _ in specs], first_size


def _order(position: str | float) -> float:
    return {"first": 0.0, "last": 1.0}.get(position, position)  # type: ignore[arg-type]


def _size(r: _Resolver, preset: Preset | None, image_size: tuple[int, int] | None) -> tuple[int | None, int | None]:
    job = r.job
    explicit = job.width is not None or job.height is not None
    if explicit and job.resolution != "auto":
        r.fail(("resolution",), "give resolution or width/height, not both")
        return None, None
    if job.resolution != "auto":
        w, _, h = job.resolution.partition("x")
        width, height = int(w), int(h)
        for name, v in (("width", width), ("height", height)):
            if v % 32 or not 64 <= v <= 4096:
                r.fail(("resolution",), f"{name} {v} must be a multiple of 32 between 64 and 4096")
        return width, height
    if preset is None:
        return None, None
    aspect = image_size[0] / image_size[1] if image_size else None
    if job.width is not None and job.height is not None:
        return job.width, job.height
    if job.width is not None:
        return job.width, _grid(job.width / (aspect or preset.size[0] / preset.size[1]))
    if job.height is not None:
        return _grid(job.height * (aspect or preset.size[0] / preset.size[1])), job.height
    if aspect is None:
        return None, None  # remote image not fetched (no cache): sized when the renderer fetches it
    area = preset.size[0] * preset.size[1]
    return _grid(math.sqrt(area * aspect)), _grid(math.sqrt(area / aspect))


def _grid(v: float) -> int:
    """Nearest multiple of 32 within 64..4096."""
    return min(4096, max(64, round(v / 32) * 32))


def _version(r: _Resolver) -> Version:
    return VERSIONS[r.ctx.model_version or DEFAULT_VERSION]


def _preset_loras(r: _Resolver, preset: Preset | None) -> list[LoraRef]:
    """The preset's LoRAs the model's release has: a preset is a recipe for any release, and one whose LoRA the
    release lacks (2.5 has no camera LoRAs) runs without it. A job naming such a LoRA is refused instead."""
    if preset is None:
        return []
    if r.ctx.model_version is None:
        return preset.loras
    version, kept = _version(r), []
    for ref in preset.loras:
        name = canonical_name(ref.name) if ref.name is not None else None
        if name is not None and name not in version.loras:
            r.warnings.append(f"the {preset.name} preset's LoRA {name!r} is left out: {version.name} has none")
            continue
        kept.append(ref)
    return kept


def _loras(r: _Resolver, preset: Preset | None) -> list[LoraRef]:
    job = r.job
    given: list[LoraRef] = []
    for i, ref in enumerate(job.loras or []):
        if ref.name is not None:
            try:
                canonical_name(ref.name)
            except ValueError as e:
                r.fail(("loras", i, "name"), str(e))
                continue
        else:
            value, local = _source(r, ("loras", i, "path"), ref.path or "")
            if local is not None and not local.is_file():
                r.fail(("loras", i, "path"), f"file not found: {local}")
                continue
            if not value.lower().endswith(".safetensors"):
                r.fail(("loras", i, "path"), f"must be a .safetensors file, got {ref.path!r}")
                continue
            ref = ref.model_copy(update={"path": value})
        given.append(ref)
    legacy = [
        LoraRef(name=short, strength=getattr(job, name))
        for name, short in LEGACY_STRENGTH_FIELDS.items()
        if getattr(job, name) is not None
    ]
    return stack(_preset_loras(r, preset), given, legacy)


def _output(r: _Resolver, mode: str | None, preset: Preset | None, seed: int) -> str | None:
    job = r.job
    from_job = job.output is not None
    template = job.output if from_job else str(Path(r.ctx.output_dir).resolve() / "{id}.mp4")
    if template.endswith("/"):
        template += "{id}.mp4"
    values = {"id": job.id, "job_id": job.id, "mode": mode, "preset": preset.name if preset else "", "seed": seed}
    try:
        out = template.format_map(values)
    except (KeyError, IndexError, ValueError, AttributeError) as e:
        valid = ", ".join("{" + k + "}" for k in OUTPUT_FIELDS)
        detail = f"unknown placeholder {{{e.args[0]}}}" if isinstance(e, KeyError) else f"bad template ({e})"
        r.fail(("output",), f"{detail}; valid placeholders: {valid}")
        return None
    if not out.lower().endswith(".mp4"):
        r.fail(("output",), f"must end in .mp4 (or / for a folder), got {job.output!r}")
        return None
    try:
        return output_name(out, r.raw.base_dir)
    except ValueError as e:
        r.fail(("output",), str(e))
        return None


def _cross_job_problems(raws: list[RawJob], planned: list[tuple[RawJob, SpecPreview]]) -> list[Problem]:
    problems: list[Problem] = []
    first_id: dict[str, RawJob] = {}
    for raw in raws:
        jid = str(raw.data.get("id"))
        if jid in first_id:
            problems.append(raw.problem(("id",), f"duplicate id (first used at {first_id[jid].where(('id',))})"))
        else:
            first_id[jid] = raw
    by_output: dict[str, str] = {}
    for raw, spec in planned:
        if spec.output in by_output:
            message = f"writes {spec.output}, as job {by_output[spec.output]!r} does; add {{id}} to the template"
            problems.append(raw.problem(("output",), message))
        else:
            by_output[spec.output] = spec.id
    return problems


# -- schema errors -> one line each -----------------------------------------------------------

_FIELDS = {
    "job": set(Job.model_fields) | set(ALIASES),
    "keyframes": set(Keyframe.model_fields) | set(KEYFRAME_ALIASES),
    "loras": set(LoraRef.model_fields),
    "guidance": set(Guidance.model_fields),
}
_ALL_FIELDS = set().union(*_FIELDS.values())


def _schema_problems(raw: RawJob, error: ValidationError) -> list[Problem]:
    problems: dict[tuple, Problem] = {}
    for err in error.errors():
        loc = _field_loc(err)
        if loc not in problems:
            problems[loc] = raw.problem(loc, _describe(err, loc))
    return list(problems.values())


def _field_loc(err: dict) -> tuple:
    """The field path, without pydantic's union-member tags ('float', "literal['first','last']")."""
    loc, out = err["loc"], []
    for i, part in enumerate(loc):
        last_unknown = i == len(loc) - 1 and err["type"] == "extra_forbidden"
        if not (isinstance(part, int) or part in _ALL_FIELDS or last_unknown):
            break
        out.append(part)
    return tuple(out)


def _describe(err: dict, loc: tuple) -> str:
    kind, msg, value = err["type"], err["msg"], err.get("input")
    if kind == "extra_forbidden":
        scope = (
            "keyframes"
            if "keyframes" in loc[:-1]
            else "loras"
            if "loras" in loc[:-1]
            else ("guidance" if "guidance" in loc[:-1] else "job")
        )
        hint = difflib.get_close_matches(str(loc[-1]), sorted(_FIELDS[scope]), n=1, cutoff=0.6)
        return "unknown field" + (
            f"; did you mean {hint[0]!r}?" if hint else f"; valid: {', '.join(sorted(_FIELDS[scope]))}"
        )
    if kind == "missing":
        return "missing (required)"
    ctx = err.get("ctx") or {}
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s), got {ctx.get('actual_length')}"
    if kind == "too_long":
        return f"allows at most {ctx.get('max_length')} item(s), got {ctx.get('actual_length')}"
    msg = msg.replace(", got a number with a fractional part", "")
    msg = msg.removeprefix("Value error, ").replace("Input should be", "must be")
    if isinstance(value, (str, int, float, bool)) and ", got " not in msg:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        msg += f", got {shown}"
    return msg


# -- whole manifests ----------------------------------------------------------------------------


def expand_manifests(paths: list[Path]) -> list[Path]:
    """Folders stand for the manifests directly inside them."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in SUFFIXES and f.is_file())
        else:
            out.append(p)
    return out


def plan_manifests(
    paths: list[Path],
    overrides: dict[str, Any] | None = None,
    output_dir: Path = Path("outputs"),
    presets_dirs: list[Path] | None = None,
    cache: InputCache | None = None,
    model_version: str | None = None,
) -> tuple[list[SpecPreview], list[Problem]]:
    """Read, validate and resolve every job of every manifest; all problems together.

    With a cache, remote inputs are fetched into it and probed; without, their lengths/sizes stay None (a
    SpecPreview). With the model's release (engine.model_source.model_version), its defaults and LoRAs apply.
    """
    presets, problems = load_presets(presets_dirs)
    files = expand_manifests(paths)
    if not files:
        problems.append(
            Problem(", ".join(map(str, paths)) or "(none)", "no manifests found (.yaml, .yml, .json, .jsonl)")
        )
    raws, more = read_manifests(files, overrides)
    problems += more
    specs, more = plan_jobs(raws, PlanContext(presets, output_dir, cache, model_version=model_version))
    return specs, problems + more


def plan_command_line(
    job: dict[str, Any],
    output_dir: Path = Path("."),
    presets_dirs: list[Path] | None = None,
    cache: InputCache | None = None,
    model_version: str | None = None,
) -> tuple[list[SpecPreview], list[Problem]]:
    """Resolve one job given as command-line options: the same checks as a manifest job, errors say "command line"."""
    presets, problems = load_presets(presets_dirs)
    raw = RawJob(file=Path(CLI), index=1, data=job, origins={key: None for key in job})
    specs, more = plan_jobs([raw], PlanContext(presets, output_dir, cache, model_version=model_version))
    return specs, problems + more
