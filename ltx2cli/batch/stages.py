"""The three stages of one job: prepare (fetch and decode its inputs), render (the engine; its MP4 is encoded as
the frames are decoded), deliver (finish the MP4 with its sound, write its sidecar, and put them where the
output's sink says). `render_job` runs them one after another (the RunPod worker's path); the batch runner overlaps
them across jobs. A job's error never leaves its stage: it becomes the job's failure."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import failure
from ..jobs.spec import RenderSpec
from ..output import write_json
from ..storage.sinks import sidecar_path, sink_for
from ..storage.sources import Fetch
from .deliver import sidecar
from .options import RunOptions
from .results import JobResult

if TYPE_CHECKING:
    from ..engine.inputs import Inputs
    from ..engine.render import Renderer
    from ..engine.rendered import Rendered
    from ..media.video import VideoWriter

OnStage = Callable[[str], None]  # "fetch", "prompt", "denoise", "decode", "encode", "upload" as each one begins
OnStep = Callable[[int, int], None]  # (denoising steps done, total)


@dataclass
class Prepared:
    """A job's decoded inputs, and the files they came from (their hashes go in the sidecar)."""

    inputs: Inputs
    used: dict[str, Path]
    seconds: float


def prepare(spec: RenderSpec, fetch: Fetch) -> Prepared:
    """Fetch (remote inputs go through the cache) and decode everything the job conditions on; no GPU work."""
    from ..engine.inputs import prepare_inputs

    t0 = time.perf_counter()
    used: dict[str, Path] = {}

    def tracked(source: str, kind: str) -> Path:
        used[source] = fetch(source, kind)
        return used[source]

    inputs = prepare_inputs(spec, tracked)
    return Prepared(inputs, used, round(time.perf_counter() - t0, 4))


def open_video(spec: RenderSpec, opts: RunOptions) -> VideoWriter:
    """The job's MP4 (media.video.VideoWriter) at the sink's local path, encoded while the render decodes; it keeps
    the frames the contact sheet's thumbnails are cut from."""
    from ..media.video import VideoWriter
    from .report import thumbnail_frames

    mp4 = sink_for(spec.output, opts.staging_dir).local
    remove_stale_temps(mp4)
    keep = [i for i, _label in thumbnail_frames(spec)] if opts.thumbs_dir is not None else []
    return VideoWriter(mp4, spec.fps, spec.width, spec.height, keep=keep)


def render(renderer: Renderer, spec: RenderSpec, prepared: Prepared, opts: RunOptions, **kw) -> Rendered:
    """The render stage: renderer.render (`kw`: its progress, resume and stop arguments) with the job's MP4
    encoded as each chunk of frames is decoded; the MP4's temp file is dropped if the render fails or stops."""
    video = open_video(spec, opts)
    try:
        return renderer.render(spec, prepared.inputs, video=video, **kw)
    except BaseException:
        video.abort()
        raise


def deliver(
    spec: RenderSpec,
    rendered: Rendered,
    prepared: Prepared,
    renderer: Renderer,
    opts: RunOptions,
    result: JobResult,
    on_stage: OnStage | None = None,
) -> None:
    """Finish the MP4 the render encoded (its sound muxed) and write its sidecar (temp name, then rename) where the
    output's sink wants them; the sink puts them in place (a remote one uploads both)."""
    stage = on_stage or (lambda _name: None)
    timings = rendered.timings | {"fetch": prepared.seconds}
    video = rendered.video
    if video is None:
        raise ValueError(f"{spec.id}: delivered without an MP4 writer; render it with stages.render")
    stage("encode")
    t = time.perf_counter()
    sink = sink_for(spec.output, opts.staging_dir)
    try:
        mp4 = video.finish(rendered.audio, rendered.sample_rate)
    finally:
        video.abort()  # a no-op once finished; else the temp file goes
    timings["mux"] = round(time.perf_counter() - t, 4)  # the encoder's tail after the render, and the sound
    timings["encode_video"] = round(video.busy, 4)  # x264's work, most of it beside the decode
    result.local, result.timings, result.gpu_peak_gib = str(mp4), timings, rendered.gpu_peak_gib
    meta = sidecar(
        spec,
        model=renderer.models.identity,
        model_version=renderer.models.version,
        inputs=prepared.used,
        timings=timings,
        device=str(renderer.models.device),
        loras=renderer.models.applied_loras(spec.loras),
        precision=renderer.models.precisions,
        extra={"gpu_peak_gib": rendered.gpu_peak_gib, "attention": renderer.models.attention}
        | ({"memory_plan": opts.memory.as_dict()} if opts.memory is not None else {})
        | ({"gpu_phases": rendered.gpu_phases} if rendered.gpu_phases else {})
        | ({"windows": rendered.windows} if rendered.windows else {})
        | ({"memory_fallbacks": rendered.memory_fallbacks} if rendered.memory_fallbacks else {})
        | ({"memory_lessons": rendered.memory_lessons} if rendered.memory_lessons else {}),
    )
    write_json(sidecar_path(mp4), meta)
    if opts.thumbs_dir is not None:
        from .report import write_thumbnails

        write_thumbnails(opts.thumbs_dir, spec, video.kept)
    if sink.remote:
        stage("upload")
        t = time.perf_counter()
        result.uploaded = sink.put()
        timings["upload"] = round(time.perf_counter() - t, 4)
    if rendered.checkpoint is not None:  # delivered: its finished windows are no longer needed
        rendered.checkpoint.discard()


def checkpoint_folder(spec: RenderSpec, opts: RunOptions) -> Path:
    """Where a long clip keeps its finished windows until it is delivered (engine.window_checkpoint): beside its
    MP4, or its staged copy, so a rerun of the same job goes on from there."""
    local = sink_for(spec.output, opts.staging_dir).local
    return local.with_name(f".{local.stem}.windows")


def render_job(
    renderer: Renderer,
    spec: RenderSpec,
    opts: RunOptions,
    on_step: OnStep | None = None,
    on_stage: OnStage | None = None,
) -> JobResult:
    """One job start to finish on the calling thread (the RunPod handler's path); never raises for a job's error."""
    result = JobResult(id=spec.id, status="failed", output=spec.output)
    with outcome(result, time.perf_counter(), opts.debug):
        if on_stage:
            on_stage("fetch")
        prepared = prepare(spec, opts.fetch)
        rendered = render(renderer, spec, prepared, opts, on_step=on_step, on_stage=on_stage)
        deliver(spec, rendered, prepared, renderer, opts, result, on_stage)
    return result


@contextlib.contextmanager
def outcome(result: JobResult, start: float, debug: bool) -> Iterator[None]:
    """The last steps of a job: done if they finish, failed with a stable code (GPU memory freed) on any
    exception, which goes no further; either way the job's seconds since `start`."""
    try:
        yield
        result.status = "done"
    except Exception as e:
        fail(result, e, debug)
    result.seconds = round(time.perf_counter() - start, 3)


def fail(result: JobResult, e: BaseException, debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exception(e)
    result.status = "failed"
    result.failure = failure(e)
    _free_gpu()


def remove_stale_temps(target: Path) -> None:
    """Delete temp files a killed earlier run left next to `target` (names carry the writer's pid)."""
    for tmp in target.parent.glob(f".{target.stem}.*.part*"):
        pid = tmp.name.removeprefix(f".{target.stem}.").split(".")[0]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True  # running (PermissionError: running under another user)


def _free_gpu() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
