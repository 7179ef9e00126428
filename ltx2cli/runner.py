"""Render resolved jobs with one set of loaded models; a failing job never stops the rest.

A batch runs as three overlapped stages: while job N renders on the main thread (the GPU), job N+1's inputs are
fetched and decoded on a prefetch thread, and job N-1 is encoded, written and uploaded on a deliver thread. Each
stage hands on through a queue of depth one, so memory stays bounded, and every stage's error lands on its own job.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .deliver import sidecar, sidecar_path, write_json
from .errors import Failure, failure
from .journal import Journal
from .output import Output
from .selection import already_done
from .sinks import sink_for
from .sources import Fetch, local_file
from .spec import RenderSpec

if TYPE_CHECKING:
    from .engine.models import ModelSource
    from .engine.render import Inputs, Rendered, Renderer

BACKGROUND_NICE = 10  # added to the nice value of the prefetch and deliver threads
OnStage = Callable[[str], None]  # "fetch", "prompt", "denoise", "decode", "encode", "upload" as each one begins
OnStep = Callable[[int, int], None]  # (denoising steps done, total)


@dataclass
class JobResult:
    id: str
    status: str  # "done" | "failed" | "skipped"
    output: str
    local: str | None = None  # the MP4 on this machine (also kept when an upload fails)
    failure: Failure | None = None  # why, when failed
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    uploaded: dict[str, Any] | None = None
    gpu_peak_gib: float | None = None  # measured over the render (None on a CPU)

    @property
    def code(self) -> str | None:
        return self.failure.code if self.failure else None

    @property
    def error(self) -> str | None:
        return self.failure.cli() if self.failure else None

    def as_dict(self) -> dict[str, Any]:
        fields = {"id": self.id, "status": self.status, "output": self.output, "local": self.local}
        fields |= {"code": self.code, "error": self.error, "seconds": self.seconds, "timings": self.timings}
        fields |= {"uploaded": self.uploaded, "gpu_peak_gib": self.gpu_peak_gib}
        return {k: v for k, v in fields.items() if v is not None}


@dataclass
class RunOptions:
    staging_dir: Path = Path(".")  # where remote outputs are written before upload
    fetch: Fetch = local_file
    debug: bool = False
    journal: Journal | None = None
    force: bool = True  # False: skip jobs the journal (or else the sidecar) lists as finished from the spec (resume)
    # job id -> (code, one line): jobs whose remote inputs could not be had at planning; recorded failed, not rendered
    unavailable: dict[str, Failure] = field(default_factory=dict)
    fail_fast: bool = False
    thumbs_dir: Path | None = None  # contact-sheet thumbnails are cut from the frames here while they are in memory
    compile: str = "auto"  # engine.compile.CompileMode: compile the transformer blocks for this run
    memory: Any = None  # engine.residency.Choice: the memory plan the models follow (None: all stay resident)


STATUSES = ("done", "skipped", "failed")


def status_counts(results: list[JobResult]) -> dict[str, int]:
    return {s: sum(r.status == s for r in results) for s in STATUSES}


@dataclass
class Run:
    results: list[JobResult] = field(default_factory=list)  # in manifest order
    interrupted: bool = False
    model_loads: int = 0  # 0 when every job was skipped; never more than 1


# -- the three stages of one job ----------------------------------------------------------------


@dataclass
class Prepared:
    """A job's decoded inputs, and the files they came from (their hashes go in the sidecar)."""

    inputs: Inputs
    used: dict[str, Path]
    seconds: float


def prepare(spec: RenderSpec, fetch: Fetch) -> Prepared:
    """Fetch (remote inputs go through the cache) and decode everything the job conditions on; no GPU work."""
    from .engine.render import prepare_inputs

    t0 = time.perf_counter()
    used: dict[str, Path] = {}

    def tracked(source: str, kind: str) -> Path:
        used[source] = fetch(source, kind)
        return used[source]

    inputs = prepare_inputs(spec, tracked)
    return Prepared(inputs, used, round(time.perf_counter() - t0, 4))


def deliver(
    spec: RenderSpec,
    rendered: Rendered,
    prepared: Prepared,
    renderer: Renderer,
    opts: RunOptions,
    result: JobResult,
    on_stage: OnStage | None = None,
) -> None:
    """Encode the MP4 and its sidecar (temp name, then rename) where the output's sink wants them; the sink puts
    them in place (a remote one uploads both)."""
    from .media.video import write_mp4

    stage = on_stage or (lambda _name: None)
    timings = rendered.timings | {"fetch": prepared.seconds}
    stage("encode")
    t = time.perf_counter()
    sink = sink_for(spec.output, opts.staging_dir)
    mp4 = sink.local
    remove_stale_temps(mp4)
    write_mp4(mp4, rendered.frames, spec.fps, rendered.audio, rendered.sample_rate)
    timings["mux"] = round(time.perf_counter() - t, 4)
    result.local, result.timings, result.gpu_peak_gib = str(mp4), timings, rendered.gpu_peak_gib
    meta = sidecar(
        spec,
        model=renderer.models.identity,
        model_version=renderer.models.version,
        inputs=prepared.used,
        timings=timings,
        device=str(renderer.models.device),
        extra={"gpu_peak_gib": rendered.gpu_peak_gib}
        | ({"memory_plan": opts.memory.as_dict()} if opts.memory is not None else {})
        | ({"memory_fallbacks": rendered.memory_fallbacks} if rendered.memory_fallbacks else {}),
    )
    write_json(sidecar_path(mp4), meta)
    if opts.thumbs_dir is not None:
        from .report import write_thumbnails

        write_thumbnails(opts.thumbs_dir, spec, rendered.frames)
    if sink.remote:
        stage("upload")
        t = time.perf_counter()
        result.uploaded = sink.put()
        timings["upload"] = round(time.perf_counter() - t, 4)


def render_job(
    renderer: Renderer,
    spec: RenderSpec,
    opts: RunOptions,
    on_step: OnStep | None = None,
    on_stage: OnStage | None = None,
) -> JobResult:
    """One job start to finish on the calling thread (the RunPod handler's path); never raises for a job's error."""
    result = JobResult(id=spec.id, status="failed", output=spec.output)
    with _outcome(result, time.perf_counter(), opts.debug):
        if on_stage:
            on_stage("fetch")
        prepared = prepare(spec, opts.fetch)
        rendered = renderer.render(spec, prepared.inputs, on_step=on_step, on_stage=on_stage)
        deliver(spec, rendered, prepared, renderer, opts, result, on_stage)
    return result


@contextlib.contextmanager
def _outcome(result: JobResult, start: float, debug: bool) -> Iterator[None]:
    """The last steps of a job: done if they finish, failed with a stable code (GPU memory freed) on any
    exception, which goes no further; either way the job's seconds since `start`."""
    try:
        yield
        result.status = "done"
    except Exception as e:
        _fail(result, e, debug)
    result.seconds = round(time.perf_counter() - start, 3)


def _fail(result: JobResult, e: BaseException, debug: bool) -> None:
    if debug:
        import traceback

        traceback.print_exception(e)
    result.status = "failed"
    result.failure = failure(e)
    _free_gpu()


# -- a batch --------------------------------------------------------------------------------------


def grouped(specs: list[RenderSpec]) -> list[RenderSpec]:
    """Render order: jobs sharing a model and LoRA set run back to back (groups in order of first appearance),
    so adapters switch once per group, not once per job."""
    first: dict[tuple, int] = {}
    for spec in specs:
        first.setdefault(_group(spec), len(first))
    return sorted(specs, key=lambda s: first[_group(s)])  # stable: manifest order inside a group


def _group(spec: RenderSpec) -> tuple:
    return spec.model, tuple(sorted((lo.key, lo.strength) for lo in spec.loras if lo.strength != 0))


def run_jobs(specs: list[RenderSpec], model: str | ModelSource | None, out: Output, opts: RunOptions) -> Run:
    """Render specs (skipping up-to-date ones unless opts.force; those in opts.unavailable fail unrendered). First
    Ctrl-C: stop after the current job and finish delivering it; second: stop now (KeyboardInterrupt; files being
    written stay under temp names)."""
    from .progress import JobProgress

    run = Run()
    order = {spec.id: i for i, spec in enumerate(specs)}
    with JobProgress(out, len(specs)) as progress, _StopAfterJob() as stop:
        report = _Report(run, progress, opts.journal, out)
        todo = []
        for spec in grouped(specs):
            sink = sink_for(spec.output, opts.staging_dir)
            if spec.id in opts.unavailable:
                report.finished(spec, JobResult(spec.id, "failed", spec.output, failure=opts.unavailable[spec.id]))
            elif not opts.force and already_done(spec, sink, opts.journal):
                report.finished(spec, JobResult(spec.id, "skipped", spec.output, local=str(sink.local)))
            else:
                todo.append(spec)
        with _spare_core():
            _render_all(todo, model, out, opts, report, progress, stop)
    run.results.sort(key=lambda r: order[r.id])
    return run


def _render_all(todo, model, out, opts: RunOptions, report: _Report, progress, stop: _StopAfterJob) -> None:
    if not todo:
        return
    import ltx2cli.engine.render  # noqa: F401 - torch and diffusers imported here first: two threads importing
    # them at once can trip the import system's deadlock detection

    prefetcher, deliverer = _Worker("ltx2-prefetch"), _Worker("ltx2-deliver")
    ahead: Future = prefetcher.submit(prepare, todo[0], opts.fetch)  # the first fetch overlaps the model load
    renderer, delivering = None, []
    for i, spec in enumerate(todo):
        if stop.requested:
            report.run.interrupted = True
            out.error("interrupted: stopped after the current job; rerun the same command to resume")
            break
        if opts.fail_fast and report.any_failed:
            out.error("--fail-fast: stopping at the first failed job")
            break
        current = ahead
        if i + 1 < len(todo):
            ahead = prefetcher.submit(prepare, todo[i + 1], opts.fetch)
        if renderer is None:
            renderer = _renderer(model, out, opts, len(todo))
            report.run.model_loads += 1
            _encode_prompts(renderer, todo[i:], out)
        report.started(spec)
        progress.start_job(spec.id)
        start = time.perf_counter()
        try:
            prepared = current.result()  # a fetch or decode error belongs to this job
            rendered = renderer.render(spec, prepared.inputs, on_step=progress.step)
        except Exception as e:
            result = JobResult(id=spec.id, status="failed", output=spec.output)
            _fail(result, e, opts.debug)
            result.seconds = round(time.perf_counter() - start, 3)
            report.finished(spec, result)
            continue
        rendered.state = None  # frees the GPU latents now: delivering needs only the frames and sound
        delivering.append(
            deliverer.submit(_deliver_and_report, spec, rendered, prepared, renderer, opts, report, start)
        )
    deliverer.drain()  # only on a normal exit: a second Ctrl-C (KeyboardInterrupt) does not wait for it
    for future in delivering:
        future.result()  # a job's own errors are in its result; this re-raises only a failure to report one


@contextlib.contextmanager
def _spare_core():
    """Rendering on the CPU: leave one core to the prefetch and deliver threads. With every core in torch's
    thread pool, the overlapped encode would stall each of its parallel steps and make the batch slower than
    running the stages one after another (measured with bench/batch_overlap.py on 2 cores). GPU renders
    need no CPU pool, so nothing changes there."""
    import torch

    threads = torch.get_num_threads()
    if torch.cuda.is_available() or threads < 2:
        yield
        return
    torch.set_num_threads(threads - 1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _deliver_and_report(spec, rendered, prepared, renderer, opts: RunOptions, report: _Report, start: float) -> None:
    result = JobResult(id=spec.id, status="failed", output=spec.output)
    with _outcome(result, start, opts.debug):  # an encode or upload error fails this job, not the one rendering
        deliver(spec, rendered, prepared, renderer, opts, result)
    report.finished(spec, result)


class _Report:
    """Records job events from the render and deliver threads: journal, progress, --json lines, results."""

    def __init__(self, run: Run, progress, journal: Journal | None, out: Output):
        self.run, self.progress, self.journal, self.out = run, progress, journal, out
        self.any_failed = False
        self._lock = threading.Lock()

    def started(self, spec: RenderSpec) -> None:
        with self._lock:
            _journal(self.journal, "started", spec, None)

    def finished(self, spec: RenderSpec, result: JobResult) -> None:
        with self._lock:
            _journal(self.journal, result.status, spec, result)
            self.run.results.append(result)
            self.any_failed |= result.status == "failed"
            self.progress.finish_job(result)
            self.out.result(result.as_dict())


class _Worker:
    """One daemon thread running submitted calls in order. `submit` blocks while one call already waits, which
    bounds what is held in memory. Daemon: a second Ctrl-C never waits for it."""

    def __init__(self, name: str):
        self._calls: queue.Queue = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self._calls.put((future, fn, args))
        return future

    def drain(self) -> None:
        """Wait until every submitted call has run, then end the thread."""
        self._calls.put(None)
        self._thread.join()

    def _loop(self) -> None:
        with contextlib.suppress(AttributeError, OSError):  # Linux: a thread is a task with its own nice value
            # The render is the critical path: background work (and the encoder threads it starts, which inherit
            # this) yields the CPU to it rather than slowing it down.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), BACKGROUND_NICE)
        while (call := self._calls.get()) is not None:
            future, fn, args = call
            future.set_running_or_notify_cancel()
            try:
                future.set_result(fn(*args))
            except BaseException as e:  # handed to whoever waits on the future
                future.set_exception(e)


def _encode_prompts(renderer: Renderer, specs: list[RenderSpec], out: Output) -> None:
    """Every prompt of the batch in one text-encoder phase, before the first denoise (stored on disk: a resumed
    batch encodes none again)."""
    from .engine.render import prompt_of

    t0 = time.perf_counter()
    pairs = [prompt_of(spec) for spec in specs]
    encoded = renderer.encode_prompts(pairs)
    known = len(set(pairs)) - encoded
    out.log(f"prompts: {encoded} encoded in {time.perf_counter() - t0:.1f} s, {known} already encoded")


def _renderer(model: str | ModelSource | None, out: Output, opts: RunOptions, jobs: int) -> Renderer:
    """Load the models the first time a job actually renders (a fully resumed batch loads nothing)."""
    from .engine import residency
    from .engine.compile import compile_blocks, compile_wanted
    from .engine.models import load_models
    from .engine.prompts import PromptStore
    from .engine.render import Renderer

    t0 = time.perf_counter()
    if opts.memory is not None:
        models = load_models(residency.load_source(model, opts.memory.plan), on_host=True)
    else:
        models = load_models(model)
    dtype = str(models.dtype).removeprefix("torch.")
    out.log(f"model {models.identity} on {models.device} ({dtype}) loaded in {time.perf_counter() - t0:.1f} s")
    if opts.memory is not None:
        residency.apply(models, opts.memory.plan)
        m = opts.memory
        out.log(f"memory plan {m.plan.label}: estimated peak {m.peak / 2**30:.1f} of {m.budget / 2**30:.1f} GiB")
    # Streamed blocks swap their weights in and out around each forward: a compiled block would guard on them.
    if models.streamed is None and compile_wanted(opts.compile, models.device, jobs) and compile_blocks(models):
        out.log("transformer blocks set to compile (torch.compile): the first step of each new clip shape is slow")
    renderer = Renderer(models)
    renderer.store = PromptStore(models.identity, renderer.max_sequence_length)
    return renderer


def _journal(journal: Journal | None, event: str, spec: RenderSpec, result: JobResult | None) -> None:
    if journal is None:
        return
    fields: dict[str, Any] = {"spec_hash": spec.spec_hash(), "output": spec.output}
    if result is not None:
        fields |= {
            "code": result.code,
            "error": result.error,
            "seconds": result.seconds or None,
            "timings": result.timings or None,
            "uploaded": result.uploaded,
        }
    journal.record(event, spec.id, **fields)


class _StopAfterJob:
    """SIGINT handler for the batch: the first one asks to stop between jobs, the second interrupts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("\nstopping after the current job (Ctrl-C again to stop now)", file=sys.stderr, flush=True)

    def __enter__(self) -> _StopAfterJob:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


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
