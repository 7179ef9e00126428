"""`ltx2 batch`: validate every job first, load the models once, render in order, report."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..batch.journal import JOURNAL_NAME, Journal
from ..batch.options import RunOptions
from ..batch.report import THUMBS_DIR, write_contact_sheet
from ..batch.results import status_counts
from ..batch.runner import run_jobs
from ..batch.selection import parse_shard, select
from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, InvalidJobs, UsageError
from ..jobs.spec import RenderSpec, SpecPreview
from ..output import Output
from ..plan.resolve import job_failures, plan_manifests
from ..weights.fit import model_problems
from ..weights.source import ModelSource, model_version, option_warnings
from .options import InputOptions, ManifestOptions, Manifests, ModelOptions, OutputOptions, RenderOptions, option_groups

EXAMPLES = """
Examples:

  ltx2 batch examples/jobs/quickstart.yaml --model tiny

  ltx2 batch jobs.jsonl --model /models/LTX-2 -o renders/

  ltx2 batch jobs.yaml --json > results.jsonl

  ltx2 batch client-jobs.jsonl --public-only --allow-host media.internal --fetch-timeout 20
"""


@option_groups
def batch(
    manifests: Manifests,
    *,
    jobs: ManifestOptions,
    journal: Annotated[
        Path | None,
        typer.Option(
            "--journal", help=f"Event log, one JSON line per job event \\[default: OUTPUT_DIR/{JOURNAL_NAME}]."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Render again even jobs whose output is up to date.")] = False,
    only: Annotated[str | None, typer.Option("--only", help="Render only these job ids (comma-separated).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=0, help="Render at most N of the selected jobs.")] = None,
    shard: Annotated[
        str | None, typer.Option("--shard", help="I/N: this machine's share of the jobs (by id, stable), e.g. 2/4.")
    ] = None,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failed job.")] = False,
    models: ModelOptions,
    run: RenderOptions,
    inputs: InputOptions,
    show: OutputOptions,
) -> None:
    """Render every job of the manifests. Every job is checked first: a problem in the manifests (a field, a
    value, a local file, a LoRA) stops the batch before anything renders (exit 2).

    URL and gs:// inputs are fetched and decoded up front; one that cannot be had now (not found, timed out,
    refused, too large, not an image or audio) fails only its own job, E_INPUT (E_STORAGE for a bucket's refusal),
    and the rest render (exit 1). --strict makes it stop the batch too (exit 2).

    Models load once; jobs sharing a LoRA set render together, and the next job's inputs are fetched and the
    last one encoded and uploaded while a job renders. A failed job is reported and the rest go on (exit 1 if any
    failed). OUTPUT_DIR/index.html is a contact sheet of the batch: thumbnails, status, time, prompt, links.

    A rerun skips the jobs the journal lists as finished with the same spec hash (or, for those it does not list,
    whose MP4 exists and whose sidecar has that hash): a changed prompt re-renders, a failed job is tried again.
    Ctrl-C stops after the current job (exit 130), a second Ctrl-C stops at once.
    """
    out = show.output()
    for warning in option_warnings(models.given):
        out.warning(warning)
    model_source, cache, output_dir = models.source(), inputs.cache(), jobs.output_dir
    specs, problems = plan_manifests(
        manifests, jobs.overrides(), output_dir=output_dir, presets_dirs=inputs.presets_dir, cache=cache,
        model_version=model_version(model_source),
    )  # fmt: skip
    if any(jobs.strict or not p.world for p in problems):
        raise InvalidJobs(problems)
    unavailable = job_failures(problems)  # the world's problems: these jobs are previews and fail, the rest render
    ids = [i.strip() for i in only.split(",") if i.strip()] if only is not None else None
    specs = select(specs, ids, parse_shard(shard) if shard else None, limit)
    if problems := model_problems(specs, model_source):  # a LoRA for another model, no upsampler: before rendering
        raise InvalidJobs(problems)
    from ..engine.memory.residency import plan_batch  # torch: only once there is something to render

    memory, problems, _ = plan_batch([s for s in specs if isinstance(s, RenderSpec)], model_source, models.vram)
    if problems:  # a job no memory plan fits on this GPU
        raise InvalidJobs(problems)
    journal_path = journal or Path(output_dir) / JOURNAL_NAME
    try:
        log = Journal(journal_path)
    except OSError as e:
        raise UsageError(f"cannot write the journal {journal_path}: {e.strerror or e}") from None
    with log:
        opts = RunOptions(
            staging_dir=Path(output_dir),
            fetch=cache.get,
            debug=run.debug,
            journal=log,
            force=force,
            fresh_windows=force,
            unavailable=unavailable,
            fail_fast=fail_fast,
            thumbs_dir=Path(output_dir) / THUMBS_DIR,
            compile=run.compile_,
            memory=memory,
        )
        execute(specs, model_source, out, opts, contact_sheet=Path(output_dir))


batch.__doc__ = inspect.cleandoc(batch.__doc__ or "") + "\n" + EXAMPLES


def execute(
    specs: list[SpecPreview],
    model: str | ModelSource | None,
    out: Output,
    opts: RunOptions,
    contact_sheet: Path | None = None,
) -> None:
    """Render the RenderSpecs (a preview fails unrendered: RunOptions.unavailable says why) and report (and write
    contact_sheet/index.html); raises typer.Exit(1) if any job failed, 130 if interrupted."""
    for spec in specs:
        for w in spec.warnings:
            out.warning(f"{spec.source}: job {spec.id!r}: {w}")
    run = run_jobs(specs, model, out, opts)
    results = run.results
    if contact_sheet is not None:
        index = write_contact_sheet(contact_sheet, specs, results)
        out.log(f"contact sheet: {index}")
    failed = [r for r in results if r.status == "failed"]
    count = status_counts(results)
    summary = {"summary": True, "jobs": len(specs), **count, "interrupted": run.interrupted}
    summary["model_loads"] = run.model_loads
    if opts.memory is not None:
        summary["memory_plan"] = opts.memory.as_dict()
    if run.memory_lessons:  # the plan as the batch ended: what its out-of-memory retries gave up for later jobs
        summary["memory_lessons"] = run.memory_lessons
    if peaks := [r.gpu_peak_gib for r in results if r.gpu_peak_gib is not None]:
        summary["gpu_peak_gib"] = max(peaks)  # measured, beside the plan's estimate
    out.result(summary)
    if len(results) > 1 and out.human:
        table = Table(title="Results", title_justify="left")
        for col in ("id", "status", "seconds", "output / error"):
            table.add_column(col, overflow="fold")
        for r in results:
            detail = f"{r.code}: {r.error}" if r.status == "failed" else r.output
            table.add_row(r.id, r.status, f"{r.seconds:.1f}", detail)
        out.stderr.print(table)
    for lesson in run.memory_lessons:
        out.warning(f"memory: {lesson} (a smaller --vram plans for it from the start)")
    out.log(f"{count['done']} done, {count['skipped']} skipped, {count['failed']} failed")
    if run.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    if failed:
        raise typer.Exit(EXIT_FAILED)
