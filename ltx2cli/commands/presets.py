"""`ltx2 presets`: list presets, or show one fully resolved."""

from __future__ import annotations

from typing import Annotated

import typer
import yaml
from rich.table import Table

from ..errors import InvalidJobs, UsageError
from ..jobs.presets import DEFAULT_PRESET, Preset, PresetSet, load_presets
from ..output import Output, output_mode
from .options import PresetsDir

app = typer.Typer(
    help="List the sampling presets, or show one in full.\n\nExamples:\n\n  ltx2 presets\n\n  ltx2 presets show fast",
    no_args_is_help=False,
)


def _load(presets_dir) -> PresetSet:
    presets, problems = load_presets(presets_dir)
    if problems:
        raise InvalidJobs(problems)
    return presets


def _resolved(p: Preset) -> dict:
    data = p.model_dump(mode="json")
    data["guidance"] = p.full_guidance.model_dump(mode="json")
    data["num_steps"] = p.num_steps
    return data


PresetJson = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


@app.callback(invoke_without_command=True)
def list_presets(ctx: typer.Context, json_: PresetJson = False, presets_dir: PresetsDir = None) -> None:
    """List the presets (name, aliases, schedule, guidance, size, LoRAs)."""
    if ctx.invoked_subcommand is not None:
        return
    presets = _load(presets_dir)
    out = Output(output_mode(json_, False))
    table = Table(title=f"Presets (default: {DEFAULT_PRESET})", title_justify="left")
    for col in ("name", "aliases", "model", "steps", "cfg/stg/mod", "size", "2-stage", "loras", "source"):
        table.add_column(col, overflow="fold")
    for name, p in presets.presets.items():
        g = p.full_guidance
        loras = ", ".join(f"{r.name or r.path}@{r.strength:g}" for r in p.loras) or "-"
        table.add_row(
            name, ", ".join(p.aliases) or "-", p.model, str(p.num_steps), f"{g.cfg:g}/{g.stg:g}/{g.modality:g}",
            p.resolution, "yes" if p.two_stage else "no", loras, presets.origin(name),
        )  # fmt: skip
        out.result({**_resolved(p), "file": str(presets.sources[name])})
    out.table(table)


@app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="Preset name or alias.")],
    json_: PresetJson = False,
    presets_dir: PresetsDir = None,
) -> None:
    """Print one preset with every value resolved (defaults filled in)."""
    presets = _load(presets_dir)
    try:
        p = presets.lookup(name)
    except ValueError as e:
        raise UsageError(str(e)) from None
    out = Output(output_mode(json_, False))
    data = {**_resolved(p), "file": str(presets.sources[p.name])}
    if json_:
        out.result(data)
    else:
        out.stdout.print(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), markup=False, end="")
