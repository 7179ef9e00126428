"""Render a list of resolved jobs in order with one set of loaded models; a failing job never stops the rest."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import sources
from .deliver import local_target, sidecar, sidecar_path, write_json
from .errors import Ltx2Error
from .output import Output
from .spec import RenderSpec

Fetch = Callable[[str, str], Path]


@dataclass
class JobResult:
    id: str
    status: str  # "done" | "failed"
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
        return getattr(e, "code", "E_FAILED"), str(e)
    if isinstance(e, torch.OutOfMemoryError):
        return "E_OOM", "out of GPU memory; try a smaller resolution or duration, or the fast preset"
    return "E_INTERNAL", f"unexpected {e.__class__.__name__}: {e} (run with --debug for the traceback)"


def local_fetch(source: str, kind: str) -> Path:
    if sources.is_remote(source):
        raise Ltx2Error(f"{source}: remote inputs need the input cache (fetching was turned off)")
    return Path(source)


def run_jobs(
    specs: list[RenderSpec],
    model: str | None,
    out: Output,
    staging_dir: Path,
    fetch: Fetch = local_fetch,
    debug: bool = False,
) -> list[JobResult]:
    from .engine.models import load_models
    from .engine.render import Renderer
    from .progress import JobProgress

    t0 = time.perf_counter()
    models = load_models(model)
    out.log(
        f"model {models.identity} on {models.device} ({str(models.dtype).removeprefix('torch.')}) "
        f"loaded in {time.perf_counter() - t0:.1f} s"
    )
    renderer = Renderer(models)
    results: list[JobResult] = []
    with JobProgress(out, len(specs)) as progress:
        for spec in specs:
            progress.start_job(spec.id)
            result = _run_one(renderer, spec, staging_dir, fetch, progress.step, debug, out)
            results.append(result)
            progress.finish_job(result)
    return results


def _run_one(renderer, spec: RenderSpec, staging_dir: Path, fetch: Fetch, on_step, debug: bool, out: Output):
    from .engine.render import prepare_inputs
    from .media.video import write_mp4

    start = time.perf_counter()
    result = JobResult(id=spec.id, status="failed", output=spec.output)
    try:
        used: dict[str, Path] = {}

        def tracked(source: str, kind: str) -> Path:
            used[source] = fetch(source, kind)
            return used[source]

        inputs = prepare_inputs(spec, tracked)
        rendered = renderer.render(spec, inputs, on_step=on_step)
        t = time.perf_counter()
        mp4 = local_target(spec, staging_dir)
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
        if debug:
            import traceback

            traceback.print_exc()
        result.code, result.error = error_code(e)
        _free_gpu()
    result.seconds = round(time.perf_counter() - start, 3)
    return result


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
