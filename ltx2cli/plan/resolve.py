"""Job -> RenderSpec: the exact render (frames, size, keyframe pixel frames, schedule, LoRAs, output).

Everything here is cheap and torch-free, so `ltx2 validate` and `--dry-run` resolve every job
of a manifest before any model loads, and report every problem at once. Given an InputCache, remote
inputs are fetched (all at once, each URL once: remote_inputs) and probed like local files.

Two kinds of problem: the manifest's own (a bad field or value, a local file that is not there) and the
world's (a remote input that cannot be fetched or decoded now: Problem.code set). A job with only the second
kind gets a SpecPreview, never a RenderSpec, so a batch records it as failed and renders the rest. So does a job
whose remote inputs were not fetched (validate --no-fetch): its clip length or size is not known.

Here: the entry points, a job resolved part by part (_resolve), and the checks across jobs. The parts' own modules:
plan.inputs (media, keyframes, size), plan.loras, plan.prompts (a prompt timeline), plan.output; jobs.problems words
a job's schema errors, and plan.context holds what planning carries (PlanContext, Resolver).
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..errors import Failure, Problem
from ..jobs.job import DEFAULT_NEGATIVE_PROMPT, DEFAULT_PROMPTS, IGNORED_LEGACY_FIELDS, Job
from ..jobs.manifest import CLI, MANIFEST_TYPES, SUFFIXES, RawJob, read_manifests
from ..jobs.presets import DEFAULT_PRESET, Preset, load_presets
from ..jobs.problems import schema_problems
from ..jobs.spec import SpecPreview, WindowSpec, exact
from ..jobs.timeline import Timeline, output_frame_count, shortest_duration, timeline
from ..storage import sources
from ..storage.fetch import InputCache, redact
from . import inputs as plan_inputs
from . import loras as plan_loras
from . import output as plan_output
from . import prompts as plan_prompts
from .context import PlanContext, Resolver, version
from .remote_inputs import prefetch


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
    job, problems = _validate(raw)
    if job is None:
        return None, problems
    r = Resolver(raw, job, ctx, problems=problems)
    preview = _resolve(r)
    if preview is None or r.problems:
        return None, r.problems + r.failures
    if r.failures:
        return preview, r.failures
    return exact(preview) or preview, []


def _validate(raw: RawJob) -> tuple[Job | None, list[Problem]]:
    """The job's fields checked. A bad field from the manifest's `defaults:` is that mapping's problem; the job is
    checked on without it, so that its own problems are found in the same run."""
    try:
        return Job.model_validate(raw.data), []
    except ValidationError as e:
        problems = schema_problems(raw, e)
        shared = {str(err["loc"][0]) for err in e.errors() if err["loc"] and raw.from_defaults(str(err["loc"][0]))}
    if not shared or any(p.job is not None for p in problems):
        return None, problems
    try:
        return Job.model_validate({k: v for k, v in raw.data.items() if k not in shared}), problems
    except ValidationError:  # not expected: a Job's checks are field by field
        return None, problems


def _resolve(r: Resolver) -> SpecPreview | None:
    job = r.job
    mode = _mode(r)
    try:
        preset = r.ctx.presets.lookup(job.preset or DEFAULT_PRESET)
    except ValueError as e:
        r.problems.append(r.raw.value_problem(("preset",), str(e)))
        preset = None

    audio, duration = None, None
    if job.audio is not None:
        audio, local = plan_inputs.source(r, ("audio",), job.audio, "audio" if mode == "lipsync" else None)
        if local is not None and mode == "lipsync":
            duration = plan_inputs.audio_duration(r, local, "E_INPUT" if sources.is_remote(audio) else None)
    if mode == "audiogen" and job.duration is not None:
        duration = job.duration
        if duration > job.max_duration:
            r.fail(("duration",), f"{duration:g} s is longer than max_duration ({job.max_duration:g} s)")

    tl = _timeline(r, mode, audio, duration) if duration is not None else None

    keyframes, first_size = plan_inputs.keyframes(r, tl.output_frames if tl else None)
    width, height = plan_inputs.render_size(r, preset, first_size)
    loras = plan_loras.loras(r, preset)
    for name in IGNORED_LEGACY_FIELDS:
        if getattr(job, name) is not None:
            r.warnings.append(f"{name} is ignored: ltx2 renders the exact clip length and exact keyframe frames")
    if job.lora_detailer:
        r.warnings.append("lora_detailer is ignored: the detailer is an IC-LoRA that needs a reference video")
    seed = job.seed if job.seed is not None else zlib.crc32(job.id.encode())
    output = plan_output.output(r, mode, preset, seed)
    prompt, prompt_timeline = plan_prompts.planned(r, "prompt", job.prompt, DEFAULT_PROMPTS.get(mode or "", ""), tl)
    negative = plan_prompts.planned(r, "negative_prompt", job.negative_prompt, DEFAULT_NEGATIVE_PROMPT, tl)
    if r.problems or preset is None or mode is None or output is None:
        return None

    preview = SpecPreview(
        id=job.id,
        mode=mode,
        source=r.raw.where(),
        prompt=prompt,
        negative_prompt=negative[0],
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
        img_compression=job.img_compression if job.img_compression is not None else version(r).crf_default,
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
        inputs_sha256=r.ctx.inputs_sha256(r.inputs),
        prompt_timeline=prompt_timeline,
        negative_prompt_timeline=negative[1],
    )
    return _windowed(r, preview, preset) if tl else preview


def _timeline(r: Resolver, mode: str | None, audio: str | None, duration: float) -> Timeline | None:
    """The clip's frames; a problem, saying the shortest length that has one, if it is too short for any."""
    fps = r.job.fps
    if output_frame_count(duration, fps) >= 1:
        return timeline(duration, fps)
    too_short = f"at {fps:g} fps rounds to 0 frames; at least {shortest_duration(fps):g} s makes one"
    if mode == "audiogen" or audio is None:
        r.fail(("duration",), f"{duration:g} s {too_short}")
    else:
        shown = redact(audio) if sources.is_remote(audio) else audio
        r.fail(("audio",), f"{shown} is {duration:g} s, which {too_short}")
    return None


def _windowed(r: Resolver, preview: SpecPreview, preset: Preset) -> SpecPreview | None:
    """The preview with its window settings, for a clip longer than one window or whose prompt changes (none: it
    renders in one pass, as always), and a warning for each prompt change that gets no window boundary."""
    from ..jobs.windows import plan_windows

    assert preview.num_frames is not None
    try:
        windows = plan_windows(
            preview.num_frames, preview.fps, preset.window_seconds, preset.window_overlap, preview.prompt_changes()
        )
    except ValueError as e:  # the preset's overlap leaves a window nothing to add
        r.fail(("preset",), f"{preset.name}: {e}")
        return None
    warnings = preview.warnings + plan_prompts.window_warnings(preview, windows)
    if len(windows) == 1:
        return preview.model_copy(update={"warnings": warnings})
    settings = {"seconds": preset.window_seconds, "overlap": preset.window_overlap, "strength": preset.window_strength}
    window = WindowSpec(**settings, count=len(windows))
    return preview.model_copy(update={"window": window, "warnings": warnings})


def _mode(r: Resolver) -> str | None:
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


def _cross_job_problems(raws: list[RawJob], planned: list[tuple[RawJob, SpecPreview]]) -> list[Problem]:
    problems: list[Problem] = []
    first_id: dict[str, RawJob] = {}
    for raw in raws:
        jid = str(raw.data.get("id"))
        if jid in first_id:
            problems.append(raw.problem(("id",), f"duplicate id (first used at {first_id[jid].where(('id',))})"))
        else:
            first_id[jid] = raw
    by_output: dict[str, SpecPreview] = {}
    for raw, spec in planned:
        first = by_output.setdefault(spec.output, spec)
        if first is spec:
            continue
        if first.id == spec.id and plan_output.names_id(raw.data.get("output")):
            continue  # only the duplicate id, said above, makes the outputs meet: with its own id, it has its own
        message = f"writes {spec.output}, as job {first.id!r} does; add {{id}} to the template"
        problems.append(raw.problem(("output",), message))
    return problems


# -- whole manifests ----------------------------------------------------------------------------


def expand_manifests(paths: list[Path]) -> list[Path]:
    """Folders stand for the manifests directly inside them (not those in their subfolders)."""
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
    SpecPreview). With the model's release (weights.source.model_version), its defaults and LoRAs apply.
    """
    presets, problems = load_presets(presets_dirs)
    files = expand_manifests(paths)
    if not files:
        message = f"no manifests found ({MANIFEST_TYPES}; a folder's subfolders are not read)"
        problems.append(Problem(", ".join(map(str, paths)) or "(none)", message))
    raws, more = read_manifests(files, overrides)
    problems += more
    specs, more = plan_jobs(raws, PlanContext(presets, output_dir, cache, model_version=model_version))
    return specs, problems + more


def manifest_jobs(paths: list[Path], overrides: dict[str, Any] | None = None) -> dict[str, RawJob]:
    """Every job of the manifests as planned (defaults and `overrides` merged), by its place (a spec's `source`):
    the fields a job sent to a render endpoint carries, for its worker to plan again."""
    raws, _ = read_manifests(expand_manifests(paths), overrides)
    return {raw.where(): raw for raw in raws}


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
