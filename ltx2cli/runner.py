"""Render a list of resolved jobs in order with one set of loaded models; a failing job never stops the rest."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import sources
from .deliver import local_target, sidecar, sidecar_path, write_json
from .errors import Ltx2Error
from .journal import Journal
from .output import Output
from .selection import already_done
from .sources import Fetch, local_file
from .spec import RenderSpec


@dataclass
class JobResult:
    id: str
    status: str  # "done" | "failed" | "skipped"
    output: str
    local: str | None = None  # the MP4 on this machine (also kept when an upload fails)
    code: str | None = None  # stable error code when failed
    error: str | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    uploaded: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def error_code(e: BaseException) -> tuple[str, str]:
    """(stable code, one-line message with a hint) for any exception a job can raise."""
    import torch

    if isinstance(e, Ltx2Error):
        return e.code, str(e)
    if isinstance(e, torch.OutOfMemoryError):
        return "E_OOM", "out of GPU memory; try a smaller resolution or duration, or the fast preset"
    return "E_INTERNAL", f"unexpected {e.__class__.__name__}: {e} (run with --debug for the traceback)"


@dataclass
class RunOptions:
    staging_dir: Path = Path(".")  # where gs:// outputs are written before upload
    fetch: Fetch = local_file
    debug: bool = False
    journal: Journal | None = None
    force: bool = True  # False: skip jobs whose output and sidecar match the spec (resume)
    fail_fast: bool = False


@dataclass
class Run:
    results: list[JobResult] = field(default_factory=list)
    interrupted: bool = False


def run_jobs(specs: list[RenderSpec], model: str | None, out: Output, opts: RunOptions) -> Run:
    """Render specs in order. First Ctrl-C: stop after the current job; second: stop now (KeyboardInterrupt)."""
    from .progress import JobProgress

    run, renderer = Run(), None
    with JobProgress(out, len(specs)) as progress, _StopAfterJob() as stop:
        for spec in specs:
            if stop.requested:
                run.interrupted = True
                out.error("interrupted: stopped after the current job; rerun the same command to resume")
                break
            local = local_target(spec, opts.staging_dir)
            if not opts.force and already_done(spec, local):
                result = JobResult(id=spec.id, status="skipped", output=spec.output, local=str(local))
                _journal(opts.journal, "skipped", spec, result)
            else:
                renderer = renderer or _renderer(model, out)
                progress.start_job(spec.id)
                _journal(opts.journal, "started", spec, None)
                result = _run_one(renderer, spec, opts, progress.step)
                _journal(opts.journal, result.status, spec, result)
            run.results.append(result)
            progress.finish_job(result)
            if result.status == "failed" and opts.fail_fast:
                out.error("--fail-fast: stopping at the first failed job")
                break
    return run


def _renderer(model: str | None, out: Output):
    """Load the models the first time a job actually renders (a fully resumed batch loads nothing)."""
    from .engine.models import load_models
    from .engine.render import Renderer

    t0 = time.perf_counter()
    models = load_models(model)
    dtype = str(models.dtype).removeprefix("torch.")
    out.log(f"model {models.identity} on {models.device} ({dtype}) loaded in {time.perf_counter() - t0:.1f} s")
    return Renderer(models)


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


def _run_one(renderer, spec: RenderSpec, opts: RunOptions, on_step) -> JobResult:
    from .engine.render import prepare_inputs
    from .media.video import write_mp4

    start = time.perf_counter()
    result = JobResult(id=spec.id, status="failed", output=spec.output)
    try:
        used: dict[str, Path] = {}

        def tracked(source: str, kind: str) -> Path:
            used[source] = opts.fetch(source, kind)
            return used[source]

        inputs = prepare_inputs(spec, tracked)
        rendered = renderer.render(spec, inputs, on_step=on_step)
        t = time.perf_counter()
        mp4 = local_target(spec, opts.staging_dir)
        remove_stale_temps(mp4)
        write_mp4(mp4, rendered.frames, spec.fps, rendered.audio, rendered.sample_rate)
        rendered.timings["mux"] = round(time.perf_counter() - t, 4)
        result.local, result.timings = str(mp4), rendered.timings
        meta = sidecar(
            spec,
            model=renderer.models.identity,
            inputs=used,
            timings=rendered.timings,
            device=str(renderer.models.device),
        )
        write_json(sidecar_path(mp4), meta)
        if sources.is_remote(spec.output):
            result.uploaded = _upload(mp4, spec.output, rendered.timings)
        result.status = "done"
    except Exception as e:
        if opts.debug:
            import traceback

            traceback.print_exc()
        result.code, result.error = error_code(e)
        _free_gpu()
    result.seconds = round(time.perf_counter() - start, 3)
    return result


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


def _upload(mp4: Path, uri: str, timings: dict[str, float]) -> dict[str, Any]:
    from .storage import upload

    t = time.perf_counter()
    done = upload(mp4, uri, content_type="video/mp4")
    upload(sidecar_path(mp4), uri.removesuffix(".mp4") + ".json", content_type="application/json")
    timings["upload"] = round(time.perf_counter() - t, 4)
    return {"uri": done.uri, "url": done.url, "size": done.size, "md5": done.md5, "crc32c": done.crc32c}


def _free_gpu() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
