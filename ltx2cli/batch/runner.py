"""Render a batch with one set of loaded models; a failing job never stops the rest.

A batch runs as three overlapped stages (stages.py): while job N renders on the main thread (the GPU), job N+1's
inputs are fetched and decoded on a prefetch thread, and job N-1 is encoded, written and uploaded on a deliver
thread (threads.py). Each stage hands on through a queue of depth one, so memory stays bounded, and every
stage's error lands on its own job. Results and the journal: results.py; Ctrl-C: signals.py.
"""

from __future__ import annotations

import shutil
import time
from concurrent.futures import Future
from typing import TYPE_CHECKING

from ..errors import Failure
from ..jobs.spec import RenderSpec, SpecPreview
from ..output import Output
from ..storage.sinks import sink_for
from . import stages
from .options import RunOptions
from .results import JobResult, Recorder, Run
from .selection import already_done
from .signals import StopAfterJob
from .threads import StageThread, spare_core

if TYPE_CHECKING:
    from ..engine.render import Renderer
    from ..weights.source import ModelSource
    from .progress import JobProgress


def grouped(specs: list[SpecPreview]) -> list[SpecPreview]:
    """Render order: jobs sharing a model and LoRA set run back to back (groups in order of first appearance),
    so adapters switch once per group, not once per job."""
    first: dict[tuple, int] = {}
    for spec in specs:
        first.setdefault(_group(spec), len(first))
    return sorted(specs, key=lambda s: first[_group(s)])  # stable: manifest order inside a group


def _group(spec: SpecPreview) -> tuple:
    return spec.model, tuple(sorted((lo.key, lo.strength) for lo in spec.loras if lo.strength != 0))


def run_jobs(specs: list[SpecPreview], model: str | ModelSource | None, out: Output, opts: RunOptions) -> Run:
    """Render the RenderSpecs (skipping up-to-date ones unless opts.force); a preview (an input not had: why in
    opts.unavailable) fails unrendered. First
    Ctrl-C: stop after the current job and finish delivering it; second: stop now (KeyboardInterrupt; files being
    written stay under temp names)."""
    from .progress import JobProgress

    run = Run()
    order = {spec.id: i for i, spec in enumerate(specs)}
    with JobProgress(out, len(specs)) as progress, StopAfterJob() as stop:
        recorder = Recorder(run, progress, opts.journal, out)
        todo: list[RenderSpec] = []
        for spec in grouped(specs):
            sink = sink_for(spec.output, opts.staging_dir)
            if not isinstance(spec, RenderSpec):
                failure = opts.unavailable.get(spec.id) or Failure("E_INPUT", "its clip length or size is not known")
                recorder.finished(spec, JobResult(spec.id, "failed", spec.output, failure=failure))
            elif not opts.force and already_done(spec, sink, opts.journal):
                recorder.finished(spec, JobResult(spec.id, "skipped", spec.output, local=str(sink.local)))
            else:
                todo.append(spec)
        with spare_core():
            _render_all(todo, model, out, opts, recorder, progress, stop)
    run.results.sort(key=lambda r: order[r.id])
    return run


def _render_all(
    todo: list[RenderSpec],
    model: str | ModelSource | None,
    out: Output,
    opts: RunOptions,
    recorder: Recorder,
    progress: JobProgress,
    stop: StopAfterJob,
) -> None:
    if not todo:
        return
    import ltx2cli.engine.render  # noqa: F401 - torch and diffusers imported here first: two threads importing

    # them at once can trip the import system's deadlock detection
    from ..engine.loader import load_renderer
    from ..engine.prompts import PromptStore
    from ..engine.window_checkpoint import StoppedBetweenWindows

    prefetcher, deliverer = StageThread("ltx2-prefetch"), StageThread("ltx2-deliver")
    ahead: Future = prefetcher.submit(stages.prepare, todo[0], opts.fetch)  # the first fetch overlaps the load
    renderer, delivering = None, []
    for i, spec in enumerate(todo):
        if stop.requested:
            recorder.run.interrupted = True
            out.error("interrupted: stopped after the current job; rerun the same command to resume")
            break
        if opts.fail_fast and recorder.any_failed:
            out.error("--fail-fast: stopping at the first failed job")
            break
        current = ahead
        if i + 1 < len(todo):
            ahead = prefetcher.submit(stages.prepare, todo[i + 1], opts.fetch)
        if renderer is None:  # loaded the first time a job actually renders: a fully resumed batch loads nothing
            renderer = load_renderer(model, opts.memory, opts.compile, len(todo), out.log, opts.attention)
            renderer.store = PromptStore(renderer.models.prompt_identity, renderer.max_sequence_length)
            recorder.run.model_loads += 1
            _encode_prompts(renderer, todo[i:], out)
        recorder.started(spec)
        progress.start_job(spec.id)
        start = time.perf_counter()
        try:
            prepared = current.result()  # a fetch or decode error belongs to this job
            resume = stages.checkpoint_folder(spec, opts)
            if opts.fresh_windows:
                shutil.rmtree(resume, ignore_errors=True)
            rendered = stages.render(  # the job's MP4 is encoded as the frames are decoded
                renderer,
                spec,
                prepared,
                opts,
                on_step=progress.step,
                on_stage=progress.stage,
                resume=resume,
                stop=lambda: stop.requested,
            )
        except StoppedBetweenWindows as e:
            recorder.run.interrupted = True
            out.error(f"interrupted: {spec.id} {e}; rerun the same command to go on from window {e.done + 1}")
            break
        except Exception as e:
            result = JobResult(id=spec.id, status="failed", output=spec.output)
            stages.fail(result, e, opts.debug)
            result.seconds = round(time.perf_counter() - start, 3)
            recorder.finished(spec, result)
            continue
        if resumed := sum(1 for w in rendered.windows if w.get("resumed")):
            which = "window 1" if resumed == 1 else f"windows 1-{resumed}"
            out.log(f"{spec.id}: {which} of {len(rendered.windows)} came from the run that was stopped")
        rendered.state = None  # frees the GPU latents now: delivering needs only the frames and sound
        delivering.append(
            deliverer.submit(_deliver_and_record, spec, rendered, prepared, renderer, opts, recorder, start)
        )
    if renderer is not None:  # what the batch's out-of-memory retries gave up, for its summary
        recorder.run.memory_lessons = renderer.models.lessons.notes
    deliverer.drain()  # only on a normal exit: a second Ctrl-C (KeyboardInterrupt) does not wait for it
    for future in delivering:
        future.result()  # a job's own errors are in its result; this re-raises only a failure to record one


def _deliver_and_record(
    spec: RenderSpec,
    rendered: object,
    prepared: stages.Prepared,
    renderer: Renderer,
    opts: RunOptions,
    recorder: Recorder,
    start: float,
) -> None:
    result = JobResult(id=spec.id, status="failed", output=spec.output)
    with stages.outcome(result, start, opts.debug):  # an encode or upload error fails this job, not the one rendering
        stages.deliver(spec, rendered, prepared, renderer, opts, result)  # type: ignore[arg-type]
    recorder.finished(spec, result)


def _encode_prompts(renderer: Renderer, specs: list[RenderSpec], out: Output) -> None:
    """Every prompt of the batch (each window's, for a prompt timeline) in one text-encoder phase, before the first
    denoise (stored on disk: a resumed batch encodes none again)."""
    from ..engine.render import prompts_of

    t0 = time.perf_counter()
    # LoRAs on the text connectors change an encoding: a text is encoded once per LoRA set
    pairs = [(*pair, tuple(spec.loras)) for spec in specs for pair in prompts_of(spec)]
    refused: set = set()  # their jobs fail alone when they render, not the whole batch here
    encoded = renderer.encode_prompts(pairs, refused)
    known = len(set(pairs)) - encoded - len(refused)
    out.log(f"prompts: {encoded} encoded in {time.perf_counter() - t0:.1f} s, {known} already encoded")
    over = {text: renderer.tokens_over(text) for text, *_ in set(pairs) - refused}  # each text once
    cap = renderer.max_sequence_length
    for spec in specs:
        entries = [(f"prompt[{i}]", e.text) for i, e in enumerate(spec.prompt_timeline or [])]
        for name, text in entries or [("the prompt", spec.prompt)]:
            if over.get(text):
                out.warning(f"{spec.id}: {name} is {cap + over[text]} tokens; the text encoder reads the first {cap}")
