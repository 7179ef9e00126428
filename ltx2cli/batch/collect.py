"""Everything batches left under a folder or a gs:// prefix, as one result per job, read from every journal
(ltx2-journal*.jsonl: unsharded and per shard, local and RunPod runs alike) and every MP4's sidecar: what `ltx2
report` shows. A job's newest event wins, so a job that failed in one run and was done in a later one is done. A
sidecar counts as its job's "done" at the time it was written: a run killed before its journal line, or a folder
whose journal is elsewhere (a gs:// run's stays on the machine that ran it unless published), still reports."""

from __future__ import annotations

import fnmatch
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..jobs.spec import RenderSpec
from ..storage.fetch import StorageError
from ..storage.listing import Stored, download, is_gs, list_under, read_bytes, relative
from ..storage.sinks import SIDECAR_SUFFIX, sink_for
from .journal import EVENTS, read_journal
from .results import JobResult, result_from_record, status_counts

JOURNAL_GLOB = "ltx2-journal*.jsonl"  # journal.JOURNAL_NAME, and a shard's ltx2-journal.shard-I-of-N.jsonl
FINISHED = ("done", "skipped")  # the output is there
UNFINISHED = "unfinished"  # newest event "started" or "submitted" (to an endpoint): killed, or still running
READERS = 8  # files read at once (each a request on gs://)
# Journals count whole seconds. At one timestamp a job's end is taken as newer than its start, a journal's end line
# as newer than the sidecar (written just before it), and, where two runs' order is unknown, a success (its output
# is in place) as newer than a failure.
_RANK = {"submitted": 0, "started": 0, "failed": 1, "sidecar": 2, "skipped": 3, "done": 3}
_SIDECAR_KEYS = ("id", "output", "spec_hash", "created")


@dataclass
class Job:
    result: JobResult  # as `ltx2 batch --json` printed it; `local`: its MP4 when it is on this machine
    spec: RenderSpec | None = None  # from its sidecar (done and skipped jobs)
    video: Stored | None = None  # its MP4, as found (done and skipped jobs)


@dataclass
class Collected:
    root: str
    jobs: list[Job]  # one per job id, sorted by id
    journals: list[str]  # those read
    sidecars: int
    duplicates: list[str] = field(default_factory=list)  # ids found in several journals, or for several outputs

    def counts(self) -> dict[str, int]:
        results = [j.result for j in self.jobs]
        return status_counts(results) | {UNFINISHED: sum(r.status == UNFINISHED for r in results)}


@dataclass(frozen=True)
class _Event:
    time: str
    rank: int
    record: dict[str, Any]  # a journal line, or a sidecar
    journal: str | None = None  # the journal it is from; None: a sidecar
    video: Stored | None = None  # a sidecar's MP4


def collect(root: str) -> Collected:
    """UsageError when root is not there or holds neither a journal with a job nor an MP4 with its sidecar."""
    files = [f for f in list_under(root) if not any(p.startswith(".") for p in relative(f.name, root).split("/"))]
    journals = [f for f in files if fnmatch.fnmatch(f.basename, JOURNAL_GLOB)]
    videos = {f.name.removesuffix(".mp4"): f for f in files if f.name.endswith(".mp4")}
    sidecars = [f for f in files if f.name.endswith(SIDECAR_SUFFIX) and f.name.removesuffix(SIDECAR_SUFFIX) in videos]
    events = _journal_events(journals) + _sidecar_events(sidecars, videos)
    if not events:
        raise UsageError(
            f"nothing to report under {root}: no job in a journal ({JOURNAL_GLOB}) and no MP4 with its sidecar "
            f"(NAME.mp4 beside NAME{SIDECAR_SUFFIX}), in it or below it"
        )
    by_id: dict[str, list[_Event]] = {}
    for event in events:
        by_id.setdefault(event.record["id"], []).append(event)
    duplicates = [
        job
        for job, found in by_id.items()
        if len({e.journal for e in found if e.journal}) > 1 or len({e.record["output"] for e in found}) > 1
    ]
    return Collected(
        root,
        [_job(by_id[job]) for job in sorted(by_id)],
        [j.name for j in journals],
        sum(e.journal is None for e in events),
        sorted(duplicates),
    )


def fetch_videos(jobs: list[Job], folder: Path) -> list[str]:
    """Download each finished job's gs:// MP4 to folder/BUCKET/OBJECT (as a batch stages it), so the contact sheet
    can cut thumbnails and link a local copy; sets each one's `local`. -> what could not be downloaded."""
    wanted = [j for j in jobs if j.video is not None and is_gs(j.video.name) and j.result.status in FINISHED]
    problems: list[str] = []

    def get(job: Job) -> None:
        assert job.video is not None
        try:
            job.result.local = str(download(job.video, sink_for(job.video.name, folder).local))
        except StorageError as e:
            problems.append(f"{job.result.id}: {e}")

    with ThreadPoolExecutor(READERS) as pool:
        list(pool.map(get, wanted))
    return problems


def _journal_events(journals: list[Stored]) -> list[_Event]:
    """Each journal's last line per job (its lines are in the order they happened)."""
    events = []
    with tempfile.TemporaryDirectory(prefix="ltx2-report-") as tmp:

        def read(item: tuple[int, Stored]) -> list[dict[str, Any]]:
            i, journal = item
            path = download(journal, Path(tmp, f"{i}.jsonl")) if is_gs(journal.name) else Path(journal.name)
            return read_journal(path)

        with ThreadPoolExecutor(READERS) as pool:
            for journal, records in zip(journals, pool.map(read, enumerate(journals)), strict=True):
                last = {r["id"]: r for r in records if _is_event(r)}
                events += [_Event(r["time"], _RANK[r["event"]], r, journal.name) for r in last.values()]
    return events


def _sidecar_events(sidecars: list[Stored], videos: dict[str, Stored]) -> list[_Event]:
    def read(item: Stored) -> Any:
        try:
            return json.loads(read_bytes(item))
        except ValueError:  # not JSON: not an ltx2 sidecar
            return None

    with ThreadPoolExecutor(READERS) as pool:
        found = zip(sidecars, pool.map(read, sidecars), strict=True)
        return [
            _Event(side["created"], _RANK["sidecar"], side, video=videos[item.name.removesuffix(SIDECAR_SUFFIX)])
            for item, side in found
            if isinstance(side, dict) and all(isinstance(side.get(k), str) for k in _SIDECAR_KEYS)
        ]


def _is_event(record: Any) -> bool:
    return (
        isinstance(record, dict)
        and record.get("event") in EVENTS
        and all(isinstance(record.get(k), str) for k in ("id", "time", "output"))
    )


def _job(events: list[_Event]) -> Job:
    newest = max(events, key=lambda e: (e.time, e.rank))
    if newest.journal is None:  # a sidecar, newer than any journal line here
        side = newest.record
        result = JobResult(side["id"], "done", side["output"], timings=side.get("timings") or {})
    else:
        result = result_from_record(newest.record)
        if result.status in ("started", "submitted"):
            result.status = UNFINISHED
    job = Job(result)
    if result.status not in FINISHED:
        return job
    spec_hash = newest.record.get("spec_hash")
    sidecars = [e for e in events if e.journal is None and e.record["output"] == result.output]
    if sidecars:  # the one of this render (its spec hash), else the newest
        side = max(sidecars, key=lambda e: (e.record["spec_hash"] == spec_hash, e.time))
        job.spec, job.video = _spec(side.record), side.video
        if result.status == "done" and side.record.get("gpu_peak_gib") is not None:
            result.gpu_peak_gib = side.record["gpu_peak_gib"]
    elif not is_gs(result.output) and Path(result.output).is_file():  # a local output away from the root
        job.video = Stored(result.output, Path(result.output).stat().st_size)
    if job.video is not None and not is_gs(job.video.name):
        result.local = job.video.name
    return job


def _spec(sidecar: dict[str, Any]) -> RenderSpec | None:
    """The sidecar's spec, for the contact sheet; None when it is not one this ltx2 reads (another version's)."""
    from pydantic import ValidationError

    try:
        return RenderSpec.model_validate(sidecar.get("spec"))
    except ValidationError:
        return None
