"""Error types and the exit codes they map to (see README: exit codes)."""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the input, located precisely enough to fix it.

    Most are the manifest's own (its syntax, fields, values, local files, LoRAs): they stop a batch before
    anything renders. One with a `code` is the world's: a remote input that cannot be fetched or decoded now.
    A batch fails only that job, with that code (unless --strict)."""

    where: str  # "jobs.yaml:12", or a flag name
    message: str
    job: str | None = None
    field: str | None = None
    code: str | None = None  # E_INPUT / E_STORAGE: the job's failure code when the world is at fault

    @property
    def world(self) -> bool:
        return self.code is not None

    def __str__(self) -> str:
        parts = [self.where]
        if self.job is not None:
            parts.append(f"job {self.job!r}")
        if self.field:
            parts.append(self.field)
        return ": ".join(parts) + f": {self.message}"


class Ltx2Error(Exception):
    """An error the user can fix; printed as one line, no traceback."""

    exit_code = EXIT_FAILED
    code = "E_FAILED"  # stable prefix for journals and API errors


class UsageError(Ltx2Error):
    exit_code = EXIT_INVALID
    code = "E_USAGE"


class InvalidJobs(Ltx2Error):
    """Every problem found in the manifests, reported together."""

    exit_code = EXIT_INVALID
    code = "E_INPUT"

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class MediaError(Ltx2Error):
    """An input file is missing, unreadable or not the kind of media expected."""

    code = "E_INPUT"
