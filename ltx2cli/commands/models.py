"""`ltx2 models inspect`: what a weights path holds, read from headers only."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ..errors import EXIT_FAILED

app = typer.Typer(
    help="Look at model weights without loading them.\n\nExamples:\n\n"
    "  ltx2 models inspect /runpod-volume/models                      # the original service's ComfyUI volume\n\n"
    "  ltx2 models inspect checkpoints/ltx-2-19b-dev-fp8.safetensors --json",
    no_args_is_help=True,
)


@app.command("inspect")
def inspect_command(
    path: Annotated[str, typer.Argument(help="A diffusers folder, a ComfyUI models root or a .safetensors file.")],
    json_: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object.")] = False,
) -> None:
    """Say what PATH holds from the safetensors headers alone (instant, even for a 26 GB file): its kind
    (diffusers folder, single-file checkpoint, ComfyUI root, LoRA, text encoder, upscaler), the LTX-2 version,
    each component's parameter count, dtypes and FP8-ness, the model a LoRA was made for, and every problem.
    Exit 1 if a problem was found."""
    from ..weights.inspect import inspect_path

    report = inspect_path(path)
    if json_:
        print(json.dumps(report, indent=1))
    else:
        _print(report)
    if report["problems"]:
        raise typer.Exit(EXIT_FAILED)


def _print(report: dict) -> None:
    console = Console(highlight=False)
    facts = {k: v for k, v in report.items() if k not in ("components", "folders", "problems", "targets")}
    for key, value in facts.items():
        console.print(f"[bold]{key:<16}[/bold] {_text(value)}")
    if report.get("components"):
        table = Table(title="components", title_justify="left")
        for col in ("component", "params", "dtypes", "fp8 tensors", "scales"):
            table.add_column(col)
        for name, c in report["components"].items():
            dtypes = ", ".join(f"{d} x{n}" for d, n in c["dtypes"].items())
            table.add_row(name, _params(c["params"]), dtypes, str(c["fp8_tensors"]), str(c["scale_tensors"]))
        console.print(table)
    for folder, entries in report.get("folders", {}).items():
        console.print(f"[bold]{folder}/[/bold]")
        for e in entries:
            what = ", ".join(_text(e[k]) for k in ("kind", "version", "made_for", "family") if e.get(k))
            console.print(f"  {e['path'].rsplit('/', 1)[-1]}: {what}")
    if report.get("targets"):
        console.print("[bold]targets[/bold]          " + ", ".join(report["targets"][:12]))
    for problem in report["problems"]:
        console.print(f"[yellow]problem[/yellow]          {problem}", soft_wrap=True)


def _params(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size / 10:
            return f"{n / size:.3f} {unit}"
    return str(n)


def _text(value) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "-"
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)
