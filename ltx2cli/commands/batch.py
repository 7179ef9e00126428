"""`ltx2 batch`: validate every job first, load the models once, render in order, report."""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from ..batch import gpus as on_gpus
from ..batch.fanout import Fanout, check_fanout, run_remote
from ..batch.journal import JOURNAL_NAME, Journal, journal_path
from ..batch.options import RunOptions
from ..batch.publish import publish_journal
from ..batch.report import INDEX_NAME, THUMBS_DIR, results_table, write_contact_sheet
from ..batch.results import Run, status_counts
from ..batch.runner import run_jobs
from ..batch.selection import select
from ..batch.shards import Shard, parse_shard, per_shard, shard_text
from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, InvalidJobs, Problem, UsageError
from ..jobs.manifest import RawJob
from ..jobs.presets import load_presets
from ..jobs.spec import RenderSpec, SpecPreview
from ..output import Output
from ..plan.resolve import job_failures, manifest_jobs, plan_manifests
from ..storage.fetch import InputCache
from ..weights.fit import model_problems
from ..weights.source import ModelSource, model_version, option_warnings
from .options import (
    EndpointOptions,
    InputOptions,
    ManifestOptions,
    Manifests,
    ModelOptions,
    OutputOptions,
    RenderOptions,
    option_groups,
)

EXAMPLES = """
Examples:

  ltx2 batch examples/jobs/quickstart.yaml --model tiny

  ltx2 batch jobs.jsonl --model /models/LTX-2 -o renders/

  ltx2 batch jobs.yaml --json > results.jsonl

  ltx2 batch client-jobs.jsonl --public-only --allow-host media.internal --fetch-timeout 20

  ltx2 batch jobs.yaml --shard auto -o /shared/renders    # a Kubernetes / Cloud Batch / AWS Batch / Slurm task

  ltx2 batch jobs.yaml --gpus all                          # one shard process per GPU of this machine
"""

ShardOption = Annotated[
    str | None,
    typer.Option(
        "--shard", envvar="LTX2_SHARD", show_envvar=False,
        help="This process's share of the jobs: I/N (shard I of N, from 1), or auto: the index and count of the "
        "task from the engine that started it (Kubernetes Indexed Job with LTX2_SHARD_COUNT, Google Cloud Batch, AWS "
        "Batch array, Slurm array). Shards balance estimated cost; every shard computes the same partition "
        "\\[env: LTX2_SHARD].",
        show_default=False,
    ),
]  # fmt: skip


@option_groups
def batch(
    manifests: Manifests,
    *,
    jobs: ManifestOptions,
    journal: Annotated[
        Path | None,
        typer.Option(
            "--journal",
            help=f"Event log, one JSON line per job event \\[default: OUTPUT_DIR/{JOURNAL_NAME}; a shard's: "
            "ltx2-journal.shard-I-of-N.jsonl, and a --journal's name gets the same tag].",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Render again even jobs whose output is up to date.")] = False,
    only: Annotated[str | None, typer.Option("--only", help="Render only these job ids (comma-separated).")] = None,
    limit: Annotated[int | None, typer.Option("--limit", min=0, help="Render at most N of the selected jobs.")] = None,
    shard: ShardOption = None,
    gpus: Annotated[
        str | None,
        typer.Option(
            "--gpus",
            help="Render on several GPUs of this machine: all, a count N, or devices like 0,2; one shard process per "
            "GPU, each seeing only its own, then one merged report.",
            show_default=False,
        ),
    ] = None,
    fail_fast: Annotated[bool, typer.Option("--fail-fast", help="Stop at the first failed job.")] = False,
    models: ModelOptions,
    remote: EndpointOptions,
    run: RenderOptions,
    inputs: InputOptions,
    show: OutputOptions,
    ctx: typer.Context,
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
    version, this_shard = model_version(model_source), parse_shard(shard, os.environ) if shard else None

    def plan(cache: InputCache | None) -> tuple[list[SpecPreview], list[Problem]]:
        return plan_manifests(manifests, jobs.overrides(), output_dir=output_dir, presets_dirs=inputs.presets_dir,
                              cache=cache, model_version=version)  # fmt: skip

    ids = [i.strip() for i in only.split(",") if i.strip()] if only is not None else None
    fan = remote.fanout()
    if fan is not None and gpus is not None:
        raise UsageError("--gpus renders on this machine's GPUs, --endpoint on RunPod's: give one of them")
    if gpus is not None:
        devices = on_gpus.pick_gpus(gpus, on_gpus.visible_gpus(os.environ))
        return shard_processes(ctx, devices, this_shard, plan(None), ids, limit, out, Path(output_dir))
    specs, problems = plan(cache)
    if any(jobs.strict or not p.world for p in problems):
        raise InvalidJobs(problems)
    unavailable = job_failures(problems)  # the world's problems: these jobs are previews and fail, the rest render
    all_outputs = [s.output for s in specs]  # every shard publishes its journal under the same prefix
    specs = select(specs, ids, this_shard, limit, unfetched=lambda: plan(None)[0])
    if problems := model_problems(specs, model_source):  # a LoRA for another model, no upsampler: before rendering
        raise InvalidJobs(problems)
    memory, raws, attention = None, {}, run.attention.value  # the endpoint's workers pick their own kernel
    if fan is not None:  # the endpoint's workers plan each job again: what they cannot do is refused here
        raws = manifest_jobs(manifests, jobs.overrides())
        if problems := check_fanout(specs, raws, fan, load_presets(inputs.presets_dir)[0]):
            raise InvalidJobs(problems)
    else:
        from ..engine.memory.residency import plan_batch  # torch: only once there is something to render

        attention = run.checked_attention()
        memory, problems, _ = plan_batch([s for s in specs if isinstance(s, RenderSpec)], model_source, models.vram)
        if problems:  # a job no memory plan fits on this GPU
            raise InvalidJobs(problems)
    log_path = journal_path(Path(output_dir), journal, this_shard)
    try:
        log = Journal(log_path)
    except OSError as e:
        raise UsageError(f"cannot write the journal {log_path}: {e.strerror or e}") from None
    with log, published(log_path, all_outputs, out):
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
            attention=attention,
            memory=memory,
        )
        sheet = per_shard(Path(output_dir) / INDEX_NAME, this_shard)
        execute(specs, model_source, out, opts, contact_sheet=sheet, fan=fan, raws=raws)


batch.__doc__ = inspect.cleandoc(batch.__doc__ or "") + "\n" + EXAMPLES


def execute(
    specs: list[SpecPreview],
    model: str | ModelSource | None,
    out: Output,
    opts: RunOptions,
    contact_sheet: Path | None = None,
    fan: Fanout | None = None,
    raws: dict[str, RawJob] | None = None,
) -> None:
    """Render the RenderSpecs here, or on `fan`'s endpoint (`raws`: the jobs' fields, by source), a preview failing
    unrendered (RunOptions.unavailable says why), and report (and write the contact sheet, an index.html); raises
    typer.Exit(1) if any job failed, 130 if interrupted."""
    for spec in specs:
        for w in spec.warnings:
            out.warning(f"{spec.source}: job {spec.id!r}: {w}")
    run = run_jobs(specs, model, out, opts) if fan is None else run_remote(specs, raws or {}, out, opts, fan)
    code = finish(specs, run, out, contact_sheet, {"memory_plan": opts.memory.as_dict()} if opts.memory else {})
    if code:
        raise typer.Exit(code)


@contextmanager
def published(journal: Path, outputs: list[str], out: Output) -> Iterator[None]:
    """The run's journal goes beside its gs:// outputs when the run ends, however it ends (batch.publish)."""
    try:
        yield
    finally:
        publish_journal(journal, outputs, out)


def finish(specs: list[SpecPreview], run: Run, out: Output, contact_sheet: Path | None, extra: dict[str, Any]) -> int:
    """A run's report: the contact sheet, the summary (`extra` added to its --json line), the results table and the
    last line. -> the exit code: 130 if interrupted, 1 if any job failed."""
    results = run.results
    if contact_sheet is not None:
        index = write_contact_sheet(contact_sheet.parent, specs, results, contact_sheet.name)
        out.log(f"contact sheet: {index}")
    failed = [r for r in results if r.status == "failed"]
    count = status_counts(results)
    summary = {"summary": True, "jobs": len(specs), **count, "interrupted": run.interrupted}
    summary["model_loads"] = run.model_loads
    summary |= extra
    if run.memory_lessons:  # the plan as the batch ended: what its out-of-memory retries gave up for later jobs
        summary["memory_lessons"] = run.memory_lessons
    if peaks := [r.gpu_peak_gib for r in results if r.gpu_peak_gib is not None]:
        summary["gpu_peak_gib"] = max(peaks)  # measured, beside the plan's estimate
    out.result(summary)
    if len(results) > 1 and out.human:
        out.stderr.print(results_table(results))
    for lesson in run.memory_lessons:
        out.warning(f"memory: {lesson} (a smaller --vram plans for it from the start)")
    out.log(f"{count['done']} done, {count['skipped']} skipped, {count['failed']} failed")
    return EXIT_INTERRUPTED if run.interrupted else EXIT_FAILED if failed else 0


def shard_processes(
    ctx: typer.Context,
    devices: list[str],
    shard: Shard | None,
    planned: tuple[list[SpecPreview], list[Problem]],
    only: list[str] | None,
    limit: int | None,
    out: Output,
    output_dir: Path,
) -> None:
    """--gpus: this command once per device, as shard processes (batch.gpus), then one report of them all. The
    manifests are checked here first (without fetching), so a problem in them is said once."""
    specs, problems = planned
    if any(not p.world for p in problems):
        raise InvalidJobs(problems)
    plans = on_gpus.gpu_shards(devices, shard)
    shares = {s: select(specs, only, s, limit) for _, s in plans}  # as each process will select (--only checked)
    args = [*_given(ctx.parent), ctx.info_name or "batch", *_given(ctx, leave_out={"gpus", "shard", "json_"})]
    commands = [(device, s, on_gpus.shard_command(args, s)) for device, s in plans]
    procs, interrupted = on_gpus.run_shard_processes(commands, out, os.environ)
    mine = {spec.id for share in shares.values() for spec in share}
    order = {spec.id: i for i, spec in enumerate(specs)}
    results = sorted((r for p in procs for r in p.job_results()), key=lambda r: order.get(r.id, len(order)))
    summaries = [p.summary or {} for p in procs]
    run = Run(results, interrupted, sum(s.get("model_loads", 0) for s in summaries))
    run.memory_lessons = sorted({lesson for s in summaries for lesson in s.get("memory_lessons", [])})
    gpus = [{"gpu": p.gpu, "shard": shard_text(p.shard), "exit": p.process.returncode} for p in procs]
    code = finish(
        [s for s in specs if s.id in mine], run, out, per_shard(output_dir / INDEX_NAME, shard), {"gpus": gpus}
    )
    for p in procs:
        if trouble := p.trouble(interrupted):
            done = {r["id"] for r in p.results}
            left = sum(spec.id not in done for spec in shares[p.shard])
            out.error(f"{p.label} {trouble} with {left} of its {len(shares[p.shard])} jobs unfinished; the other GPUs "
                      "went on: rerun the same command to finish its share")  # fmt: skip
            code = code or EXIT_FAILED
    if code:
        raise typer.Exit(code)


def _given(ctx: typer.Context | None, leave_out: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """The arguments and options given to a command on its command line (not by default or from the environment),
    as they would be typed again: what each --gpus shard process is started with."""
    args: list[str] = []
    for param in ctx.command.params if ctx else []:
        name = param.name or ""
        if name in leave_out or ctx.get_parameter_source(name).name != "COMMANDLINE":  # type: ignore[union-attr]
            continue
        value = ctx.params[name]  # type: ignore[union-attr]
        values = [
            v.value if isinstance(v, Enum) else v for v in (value if isinstance(value, tuple | list) else [value])
        ]
        if param.param_type_name == "argument":
            args += [str(v) for v in values]
        elif getattr(param, "is_flag", False):
            args.append(param.opts[0] if value else param.secondary_opts[0])
        else:
            args += [x for v in values for x in (param.opts[0], str(v))]
    return args
