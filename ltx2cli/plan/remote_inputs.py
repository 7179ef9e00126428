"""The remote inputs planning probes, fetched before planning: all at once, each URL once, into the InputCache;
planning then reads them like local files (PlanContext.fetch). Without a cache nothing is fetched, and what
depends on a remote input (clip length, size) stays unknown."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pydantic import ValidationError

from ..jobs.job import Job
from ..jobs.manifest import RawJob
from ..storage import sources
from .context import PlanContext
from .inputs import MAX_KEYFRAMES

FETCH_WORKERS = 8  # downloads are I/O-bound; a few at a time, not one per URL


def prefetch(raws: list[RawJob], ctx: PlanContext) -> None:
    """Fetch every distinct remote input of the batch concurrently; planning then reads the cache."""
    if ctx.cache is None:
        return
    wanted: dict[tuple[str, str], None] = {}  # ordered set
    for raw in raws:
        try:
            job = Job.model_validate(raw.data)
        except ValidationError:
            continue  # reported by plan.plan_job; nothing of it gets probed
        for key in _remote_inputs(job):
            wanted.setdefault(key)
    todo = [key for key in wanted if key not in ctx.fetched]
    if todo:
        with ThreadPoolExecutor(max_workers=min(FETCH_WORKERS, len(todo)), thread_name_prefix="fetch") as pool:
            list(pool.map(lambda key: ctx.fetch(*key), todo))


def _remote_inputs(job: Job) -> list[tuple[str, str]]:
    """(url, kind) of the remote inputs that planning probes, as plan._resolve would pick them."""
    found: list[tuple[str, str]] = []
    images = ([job.image] if job.image is not None else []) + [kf.image for kf in job.keyframes or []]
    if len(images) <= MAX_KEYFRAMES:
        found += [(v, "image") for v in images]
    if job.audio is not None and job.duration is None and job.mode != "audiogen":  # i.e. lipsync
        found.append((job.audio, "audio"))
    return [(url, kind) for value, kind in found if (url := _remote_url(value))]


def _remote_url(value: str) -> str | None:
    """The canonical form of a usable remote source, else None (local, or reported by plan.inputs.source)."""
    try:
        canonical, local = sources.resolve(value, Path.cwd())
    except ValueError:
        return None
    return canonical if local is None else None
