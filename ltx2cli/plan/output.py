"""Where a job's video goes: its output template (or the output folder's {id}.mp4) filled in and checked."""

from __future__ import annotations

import string
from pathlib import Path

from ..jobs.presets import Preset
from ..storage.sinks import output_name
from .context import Resolver

OUTPUT_FIELDS = ("id", "job_id", "mode", "preset", "seed")


def output(r: Resolver, mode: str | None, preset: Preset | None, seed: int) -> str | None:
    job = r.job
    template = _template(job.output, r.ctx.output_dir)
    values = {"id": job.id, "job_id": job.id, "mode": mode, "preset": preset.name if preset else "", "seed": seed}
    try:
        out = template.format_map(values)
    except (KeyError, IndexError, ValueError, AttributeError) as e:
        valid = ", ".join("{" + k + "}" for k in OUTPUT_FIELDS)
        detail = f"unknown placeholder {{{e.args[0]}}}" if isinstance(e, KeyError) else f"bad template ({e})"
        r.fail(("output",), f"{detail}; valid placeholders: {valid}")
        return None
    if not out.lower().endswith(".mp4"):
        r.fail(("output",), f"must end in .mp4 (or / for a folder), got {job.output!r}")
        return None
    try:
        name = output_name(out, r.raw.base_dir)
    except ValueError as e:
        r.fail(("output",), str(e))
        return None
    if (unusable := r.ctx.destination(name)) is not None:  # the job fails alone, before it renders
        r.fail(("output",), unusable.message, code=unusable.code)
    return name


def _template(given: str | None, output_dir: Path) -> str:
    """The job's output template: its own (a folder ending in / gets {id}.mp4), or the output folder's {id}.mp4."""
    template = given if given is not None else str(Path(output_dir).resolve() / "{id}.mp4")
    return template + "{id}.mp4" if template.endswith("/") else template


def names_id(given: str | None) -> bool:
    """Whether a job's output names its id, so that jobs apart in id are apart in output."""
    fields = {name for _, name, _, _ in string.Formatter().parse(_template(given, Path())) if name}
    return bool(fields & {"id", "job_id"})
