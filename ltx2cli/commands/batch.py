"""`ltx2 batch`: validate every job first, load the models once, render in order, report."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from ..errors import EXIT_FAILED, InvalidJobs
from ..output import Output, output_mode
from ..plan import plan_manifests
from ..spec import RenderSpec
from ..storage import InputCache, default_input_cache
from .options import (
    CacheDir,
    Cfg,
    Debug,
    Fps,
    Json,
    Manifests,
    MaxDuration,
    MaxInputMb,
    Model,
    OutputDir,
    Preset,
    PresetsDir,
    Quiet,
    Steps,
    cli_overrides,
)

EXAMPLES = """
Examples:

  ltx2 batch examples/jobs/quickstart.yaml --model tiny

  ltx2 batch jobs.jsonl --model /models/LTX-2 -o renders/

  ltx2 batch jobs.yaml --json > results.jsonl
"""


def batch(
    manifests: Manifests,
    model: Model = None,
    output_dir: OutputDir = "outputs",  # type: ignore[assignment]
    json_: Json = False,
    quiet: Quiet = False,
    preset: Preset = None,
    steps: Steps = None,
    cfg: Cfg = None,
    fps: Fps = None,
    max_duration: MaxDuration = None,
    presets_dir: PresetsDir = None,
    cache_dir: CacheDir = None,
    max_input_mb: MaxInputMb = 200,
    debug: Debug = False,
) -> None:
    """Render every job of the manifests. Nothing renders unless every job is valid (exit 2).

    Models load once; jobs render in order; a failed job is reported and the rest go on (exit 1 if any failed).
    """
    out = Output(output_mode(json_, quiet))
    overrides = cli_overrides(preset=preset, steps=steps, cfg=cfg, fps=fps, max_duration=max_duration)
    cache = default_input_cache(cache_dir, max_input_mb)
    specs, problems = plan_manifests(manifests, overrides, output_dir=output_dir, presets_dirs=presets_dir, cache=cache)
    if problems:
        raise InvalidJobs(problems)
    execute(specs, model, out, Path(output_dir), cache, debug)


batch.__doc__ = (batch.__doc__ or "") + EXAMPLES


def execute(
    specs: list[RenderSpec], model: str | None, out: Output, staging: Path, cache: InputCache, debug: bool
) -> None:
    """Render resolved specs and report; raises typer.Exit(1) if any job failed."""
    import typer

    from ..runner import run_jobs

    for spec in specs:
        for w in spec.warnings:
            out.warning(f"{spec.source}: job {spec.id!r}: {w}")
    results = run_jobs(specs, model, out, staging, fetch=cache.get, debug=debug)
    for r in results:
        out.result(r.as_dict())
    failed = [r for r in results if r.status != "done"]
    summary = {"summary": True, "jobs": len(results), "done": len(results) - len(failed), "failed": len(failed)}
    out.result(summary)
    if len(results) > 1 and out.human:
        table = Table(title="Results", title_justify="left")
        for col in ("id", "status", "seconds", "output / error"):
            table.add_column(col, overflow="fold")
        for r in results:
            detail = r.output if r.status == "done" else f"{r.code}: {r.error}"
            table.add_row(r.id, r.status, f"{r.seconds:.1f}", detail)
        out.stderr.print(table)
    out.log(f"{summary['done']} done, {summary['failed']} failed")
    if failed:
        raise typer.Exit(EXIT_FAILED)
