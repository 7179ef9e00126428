"""`ltx2 validate`: parse, check and resolve every job; print the render plan. Renders nothing."""

from __future__ import annotations

import inspect
import os
from dataclasses import replace
from pathlib import Path

import typer
from rich.table import Table

from ..batch.shards import parse_shard, shard_text, share
from ..errors import EXIT_FAILED, InvalidJobs, ModelError, Problem
from ..jobs.releases import DEFAULT, VERSIONS
from ..jobs.spec import RenderSpec, SpecPreview
from ..jobs.windows import window_plan
from ..plan.resolve import job_failures, plan_manifests
from ..storage.fetch import InputCache
from ..storage.sinks import sink_for
from ..weights.fit import model_problems
from ..weights.source import MODEL_ENV, model_version, option_warnings, resolve_model
from .batch import ShardOption
from .options import Fetch, InputOptions, ManifestOptions, Manifests, ModelOptions, OutputOptions, option_groups

EXAMPLES = """
Examples:

  ltx2 validate examples/jobs/

  ltx2 validate jobs.jsonl --json | jq .num_frames

  ltx2 validate jobs.yaml --preset balanced --fps 24

  ltx2 validate requests.jsonl --no-fetch     # skip downloading URL inputs

  ltx2 validate jobs.yaml --strict            # exit 2 for a dead URL too, as `ltx2 batch --strict` stops
"""


@option_groups
def validate(
    manifests: Manifests,
    *,
    jobs: ManifestOptions,
    fetch: Fetch = True,
    shard: ShardOption = None,
    models: ModelOptions,
    inputs: InputOptions,
    show: OutputOptions,
) -> None:
    """Check manifests and print the exact render plan. The exit code is the one `ltx2 batch` would give before
    rendering: 0 if every job would render; 2 if a problem would stop the batch; 1 if only URL inputs cannot be
    had now, so those jobs would fail and the rest render.

    URL and gs:// inputs are downloaded to the cache (each once) and checked like local files. A problem in the
    manifests (a field, a value, a local file, a LoRA) stops a batch: exit 2. A URL or gs:// input that cannot be
    fetched or decoded now fails only its own job in a batch: its line ends "(E_INPUT: only this job would fail)"
    and, with nothing worse, validate exits 1; with --strict (as `ltx2 batch --strict` would stop) exit 2.
    With --model (or LTX2_MODEL_DIR), every LoRA is also checked against that model from its file header: a LoRA
    made for another model (LTX-Video 2B, say) is a problem. With a model and a GPU (or --vram N), each job's
    memory plan and estimated peak are shown, and a job no plan fits is a problem.

    With --shard, only that shard's jobs (as `ltx2 batch --shard` would render them) and its share of the estimated
    cost; --json adds a summary line with it.
    """
    out = show.output()
    cache = inputs.cache() if fetch else None
    for warning in option_warnings(models.given):
        out.warning(warning)
    source, model, vram = models.source(), models.model, models.vram
    version, problems = None, []
    if model or os.environ.get(MODEL_ENV):
        try:
            resolve_model(source)  # a model named and not there is a problem here, not at render time
            version = model_version(source)
        except ModelError as e:
            problems.append(Problem("--model", str(e)))

    def plan(cache: InputCache | None) -> tuple[list[SpecPreview], list[Problem]]:
        return plan_manifests(manifests, jobs.overrides(), output_dir=jobs.output_dir,
                              presets_dirs=inputs.presets_dir, cache=cache, model_version=version)  # fmt: skip

    specs, planned = plan(cache)
    problems = planned + problems
    unfetched = (lambda: plan(None)[0]) if cache else None  # what the partition weighs (batch.shards.cost_view)
    part = share(specs, parse_shard(shard, os.environ), unfetched) if shard else None
    if part:  # another shard's job that cannot get its inputs fails there (unless --strict stops every shard)
        mine = set(part.ids)
        specs = [spec for spec in specs if spec.id in mine]
        problems = [p for p in problems if jobs.strict or not p.world or p.job in mine]
    if version is None:
        default = VERSIONS[DEFAULT]
        out.log(
            f"planned for {default.name} (no --model): jobs without img_compression get its {default.crf_default}; "
            "the model's release may differ (LTX-2.5: 18) and may lack a preset's LoRA"
        )
    problems += model_problems(specs, source)
    failing = job_failures(problems)
    specs = [spec for spec in specs if spec.id not in failing]
    memory: dict = {}
    if model or os.environ.get(MODEL_ENV) or vram:
        from ..engine.memory.residency import plan_batch  # torch: only when there is a model to plan for

        _, too_big, memory = plan_batch([s for s in specs if isinstance(s, RenderSpec)], source, vram)
        problems += too_big
    for spec in specs:
        plan = {"memory": memory[spec.id].as_dict()} if spec.id in memory else {}
        windows = window_plan(spec) if isinstance(spec, RenderSpec) else None  # None: the clip length is not known
        out.result(spec.model_dump(mode="json") | {"windows": windows} | plan)
        for w in spec.warnings:
            out.warning(f"{spec.source}: job {spec.id!r}: {w}")
    if specs:
        out.table(plan_table(specs, {k: v.as_dict() for k, v in memory.items()}))
    if timed := [s for s in specs if isinstance(s, RenderSpec) and (s.prompt_timeline or s.negative_prompt_timeline)]:
        out.table(prompt_table(timed))
    if part:
        out.result({"summary": True, **part.as_dict()})
        out.log(f"shard {shard_text(part.shard)}: {len(part.ids)} job(s), {part.fraction:.1%} of the estimated cost")
    if not jobs.strict:  # say which problems would fail only their own job
        problems = [replace(p, message=f"{p.message} ({p.code}: only this job would fail)") if p.world else p
                    for p in problems]  # fmt: skip
    if any(jobs.strict or not p.world for p in problems):
        raise InvalidJobs(problems)
    if failing:
        for p in problems:
            out.error(str(p))
        out.error(
            f"{len(failing)} job(s) cannot get their inputs or deliver their output now: `ltx2 batch` would fail "
            f"them and render the other {len(specs)} (exit 1; with --strict it would stop)"
        )
        raise typer.Exit(EXIT_FAILED)
    out.log(f"{len(specs)} job(s) valid")


validate.__doc__ = inspect.cleandoc(validate.__doc__ or "") + "\n" + EXAMPLES


def plan_table(specs: list[SpecPreview], memory: dict[str, dict] | None = None) -> Table:
    """One row per job; with `memory` (job id -> its memory plan, when planned for a GPU) a column for it."""
    table = Table(title="Render plan", title_justify="left", caption="frames: output/rendered; keys: frame@strength")
    columns = ["id", "mode", "seconds", "frames", "size", "keys", "preset", "output"] + (["memory"] if memory else [])
    for col in columns:
        table.add_column(col, overflow="fold")
    for s in specs:
        frames = f"{s.output_frames}/{s.num_frames}" if s.num_frames else "from audio"
        if s.window is not None:
            frames += f" in {s.window.count} windows"
        size = f"{s.width}x{s.height}" if s.width else "from image"
        seconds = f"{s.duration:.2f}" if s.duration is not None else "from audio"
        kfs = " ".join(f"{k.frame if k.frame is not None else k.position}@{k.strength:g}" for k in s.keyframes)
        row = [s.id, s.mode, seconds, frames, size, kfs, s.preset, _short(s.output)]
        if memory:
            plan = memory.get(s.id)
            row.append(f"{plan['plan']}, ~{plan['estimated_peak_gib']:g} GiB" if plan else "")
        table.add_row(*row)
    return table


def prompt_table(specs: list[RenderSpec]) -> Table:
    """One row per window of each job whose prompt changes over the clip: the frames it adds and its prompt."""
    table = Table(title="Prompt timeline", title_justify="left", caption="frames: those each window adds")
    for col in ("id", "window", "frames", "seconds", "prompt"):
        table.add_column(col, overflow="fold")
    for s in specs:
        windows = window_plan(s)
        for w in windows:
            first, last = w["start"] + w["overlap"], min(w["start"] + w["frames"], s.output_frames) - 1
            seconds = f"{first / s.fps:.2f}-{(last + 1) / s.fps:.2f}"
            shown = w["prompt"] + (f" (negative: {w['negative_prompt']})" if "negative_prompt" in w else "")
            table.add_row(s.id, f"{w['index'] + 1}/{len(windows)}", f"{first}-{last}", seconds, shown)
    return table


def _short(output: str) -> str:
    """Outputs under the working directory are shown relative to it."""
    if sink_for(output).remote:
        return output
    try:
        return str(Path(output).relative_to(Path.cwd()))
    except ValueError:
        return output
