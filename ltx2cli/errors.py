"""Every error code in one table: its exit status, its hint, and the two ways it is written (a CLI line, an API
string). The CLI, the batch runner and the RunPod worker all map exceptions through `failure()`."""

from __future__ import annotations

import sys
from dataclasses import dataclass

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130
MAX_API_CHARS = 2000  # an API error string is cut to this (RunPod shows it whole)


@dataclass(frozen=True)
class Code:
    exit: int  # the exit status when an error of this code ends a command (a batch's failed jobs exit 1)
    meaning: str  # what went wrong, for the table in README's words
    hint: str = ""  # what to do, appended to the CLI's line (never to an API string)


ERRORS: dict[str, Code] = {
    "E_USAGE": Code(EXIT_INVALID, "a flag or argument is wrong; nothing ran"),
    "E_INPUT": Code(EXIT_INVALID, "a job, request or input file is invalid"),
    "E_STORAGE": Code(EXIT_FAILED, "a fetch or upload failed"),
    "E_MODEL": Code(EXIT_FAILED, "the model or a LoRA cannot be found or loaded"),
    "E_OOM": Code(EXIT_FAILED, "out of GPU memory"),
    "E_IO": Code(EXIT_FAILED, "writing an output file failed"),
    "E_ENDPOINT": Code(
        EXIT_FAILED, "a render endpoint (--endpoint) could not be reached, or timed out or cancelled a job"
    ),
    "E_FAILED": Code(EXIT_FAILED, "an error with no more specific code"),
    "E_INTERNAL": Code(EXIT_FAILED, "a bug", hint="run with --debug for the traceback"),
}
OOM_MESSAGE = "out of GPU memory; try a smaller resolution or duration, or the fast preset"


@dataclass(frozen=True)
class Failure:
    """A code from ERRORS and one line saying what happened (no hint: each audience adds its own)."""

    code: str
    message: str

    def __post_init__(self) -> None:
        assert self.code in ERRORS, self.code

    @property
    def exit(self) -> int:
        return ERRORS[self.code].exit

    def cli(self) -> str:
        """The message as the CLI prints it (and a batch's results, journal and contact sheet carry it)."""
        hint = ERRORS[self.code].hint
        return f"{self.message} ({hint})" if hint else self.message

    def api(self) -> str:
        """`E_CODE: message` on one line, at most MAX_API_CHARS: the RunPod worker's `error`."""
        text = " ".join(f"{self.code}: {self.message}".split())
        return text if len(text) <= MAX_API_CHARS else text[: MAX_API_CHARS - 1] + "…"


def failure(e: BaseException) -> Failure:
    """The code and line for any exception a command or a job can raise."""
    if isinstance(e, Ltx2Error):
        return Failure(e.code, str(e))
    torch = sys.modules.get("torch")  # an OOM can only come from torch once it is loaded; the CLI stays light
    if torch is not None and isinstance(e, torch.OutOfMemoryError):
        return Failure("E_OOM", OOM_MESSAGE)
    if isinstance(e, OSError) and e.strerror:  # writing the MP4, sidecar or thumbnails: a full disk, a bad path
        where = f": {e.filename}" if e.filename else ""
        return Failure("E_IO", f"{e.strerror}{where} (check the output path, its permissions and free disk space)")
    return Failure("E_INTERNAL", f"unexpected {e.__class__.__name__}: {e}")


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
    """An error the user can fix; printed as one line, no traceback. Its code's row in ERRORS says the rest."""

    code = "E_FAILED"  # stable prefix for journals and API errors

    @property
    def exit_code(self) -> int:
        return ERRORS[self.code].exit


class UsageError(Ltx2Error):
    code = "E_USAGE"


class OutputError(Ltx2Error):
    """An output that cannot be written where it is asked for (found before the render)."""

    code = "E_IO"


class InvalidJobs(Ltx2Error):
    """Every problem found in the manifests, reported together."""

    code = "E_INPUT"

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class MediaError(Ltx2Error):
    """An input file is missing, unreadable or not the kind of media expected."""

    code = "E_INPUT"


class ModelError(Ltx2Error):
    """The model, its text encoder or a LoRA cannot be found or loaded."""

    code = "E_MODEL"
