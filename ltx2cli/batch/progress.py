"""Progress on stderr: rich bars (jobs, and denoising steps of the current job) on a terminal, plain lines otherwise."""

from __future__ import annotations

from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ..output import Output

STAGE_WIDTH = 80  # characters of a stage shown: a window's prompt (engine.window_render.window_stage) is cut to fit


class JobProgress:
    def __init__(self, out: Output, total: int):
        self.out, self.total = out, total
        self.done = self.failed = self.skipped = 0
        self.started: set[str] = set()  # jobs given to the renderer; the deliver stage finishes them later
        self.never_started = 0  # skipped, or failed before a render (an input that cannot be had)
        self.live = out.mode != "quiet" and out.stderr.is_terminal
        self._bar: Progress | None = None
        self._jobs: Any = None
        self._steps: Any = None
        self._job = ""

    def __enter__(self) -> JobProgress:
        if self.live:
            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                console=self.out.stderr,
                transient=False,
            )
            self._bar.__enter__()
            self._jobs = self._bar.add_task("jobs", total=self.total)
            self._steps = self._bar.add_task("steps", total=1, visible=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def start_job(self, job_id: str) -> None:
        self._job = job_id
        self.started.add(job_id)
        if self._bar is not None:
            self._bar.reset(self._steps, total=1, description=f"  {job_id}", visible=True)
        else:
            self.out.log(f"[{len(self.started) + self.never_started}/{self.total}] {job_id}: rendering")

    def stage(self, name: str) -> None:
        """A long clip's "window i/N", with the window's prompt where the clip's prompt changes, cut to one line
        (other stages need no line of their own)."""
        if not name.startswith("window"):
            return
        name = " ".join(name.split())
        name = name if len(name) <= STAGE_WIDTH else name[: STAGE_WIDTH - 3] + "..."
        if self._bar is not None:
            self._bar.update(self._steps, description=f"  {self._job} {name}")
        else:
            self.out.log(f"{self._job}: {name}")

    def step(self, i: int, total: int) -> None:
        if self._bar is not None:
            self._bar.update(self._steps, completed=i, total=total)

    def finish_job(self, result: Any) -> None:
        self.never_started += result.id not in self.started
        if result.status == "skipped":
            self.skipped += 1
            self.out.log(f"{result.id}: already rendered from this spec, skipped ({result.output})")
        elif result.status == "done":
            self.done += 1
            self.out.log(f"{result.id}: done in {result.seconds:.1f} s -> {result.output}")
        else:
            self.failed += 1
            self.out.error(f"job {result.id!r}: {result.code}: {result.error}")
        if self._bar is not None:
            self._bar.update(
                self._jobs, advance=1, description=f"jobs ({self.failed} failed)" if self.failed else "jobs"
            )
