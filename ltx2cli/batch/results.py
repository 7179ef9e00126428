"""What a batch produces per job: its result, the run's tally, and the recorder that journals, shows and keeps
each job's events (called from the render and deliver threads)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ERRORS, Failure

if TYPE_CHECKING:
    from ..jobs.spec import SpecPreview
    from ..output import Output
    from .journal import Journal
    from .progress import JobProgress

STATUSES = ("done", "skipped", "failed")


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


def status_counts(results: list[JobResult]) -> dict[str, int]:
    return {s: sum(r.status == s for r in results) for s in STATUSES}


@dataclass
class Run:
    results: list[JobResult] = field(default_factory=list)  # in manifest order
    interrupted: bool = False
    model_loads: int = 0  # 0 when every job was skipped; never more than 1
    memory_lessons: list[str] = field(default_factory=list)  # what out-of-memory retries gave up for good


class Recorder:
    """Records job events from the render and deliver threads: journal, progress, --json lines, results."""

    def __init__(self, run: Run, progress: JobProgress, journal: Journal | None, out: Output):
        self.run, self.progress, self.journal, self.out = run, progress, journal, out
        self.any_failed = False
        self._lock = threading.Lock()

    def started(self, spec: SpecPreview) -> None:
        with self._lock:
            _journal(self.journal, "started", spec, None)

    def finished(self, spec: SpecPreview, result: JobResult) -> None:
        with self._lock:
            _journal(self.journal, result.status, spec, result)
            self.run.results.append(result)
            self.any_failed |= result.status == "failed"
            self.progress.finish_job(result)
            self.out.result(result.as_dict())


def _journal(journal: Journal | None, event: str, spec: SpecPreview, result: JobResult | None) -> None:
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


def result_from_record(record: dict[str, Any]) -> JobResult:
    """A job's result as a journal line records it (`_journal` writes it; the journal has no `local` or GPU peak):
    how `ltx2 report` reads runs back. The status is the line's event."""
    code, error = record.get("code"), record.get("error") or ""
    return JobResult(
        id=record["id"],
        status=record["event"],
        output=record.get("output") or "",
        failure=_failure(code, error) if code else None,
        seconds=record.get("seconds") or 0.0,
        timings=record.get("timings") or {},
        uploaded=record.get("uploaded"),
    )


def _failure(code: str, error: str) -> Failure:
    """The Failure whose cli() line is `error` again (that line carries its code's hint); a code this ltx2 does not
    know (a newer worker's) keeps its name in the message."""
    if code not in ERRORS:
        return Failure("E_FAILED", f"{code}: {error}")
    hint = ERRORS[code].hint
    return Failure(code, error.removesuffix(f" ({hint})") if hint else error)
