"""The `ltx2` command: registers commands and maps errors to exit codes. Imports nothing heavy."""

from __future__ import annotations

import inspect
import sys
import traceback
from typing import Annotated

import typer

try:  # newer typer carries its own copy of click (click itself may not even be installed)
    from typer._click.exceptions import ClickException
except ImportError:  # older typer runs on click
    from click import ClickException

from . import __version__
from .commands import batch, doctor, models, presets, render, report, validate
from .errors import EXIT_INTERRUPTED, EXIT_INVALID, InvalidJobs, failure
from .output import Output

EXAMPLES = """Examples (each command's --help has more):

  ltx2 batch examples/jobs/quickstart.yaml --model tiny     # all four modes, on a CPU

  ltx2 lipsync face.png voice.wav -o talk.mp4

  ltx2 audiogen cat.png --duration 5

  ltx2 keyframes start.png end.png@last --duration 4
"""

app = typer.Typer(
    name="ltx2",
    help="Batch renderer for Lightricks' LTX-2: lip-sync and audio+video clips from images, on your GPU.",
    epilog=EXAMPLES,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _reflow(doc: str) -> str:
    """typer prints a docstring's line breaks and indentation as written: dedent it and join each paragraph's
    lines so the terminal wraps them (indented blocks, the examples, stay as they are)."""
    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(p if p.startswith(" ") else " ".join(p.split()) for p in paragraphs)


for _name, _func in {
    "lipsync": render.lipsync,
    "audiogen": render.audiogen,
    "keyframes": render.keyframes,
    "batch": batch.batch,
    "validate": validate.validate,
    "report": report.report,
    "doctor": doctor.doctor,
}.items():
    app.command(_name, help=_reflow(_func.__doc__ or ""))(_func)
app.add_typer(presets.app, name="presets")
app.add_typer(models.app, name="models")

_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        print(f"ltx2 {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    _state["debug"] = debug


def main(argv: list[str] | None = None) -> None:
    out = Output()
    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="ltx2", standalone_mode=False)
    except InvalidJobs as e:
        for p in e.problems:
            out.error(str(p))
        out.error(f"{len(e.problems)} problem(s); nothing was rendered")
        code = e.exit_code
    except typer.Exit as e:
        code = e.exit_code
    except ClickException as e:
        if e.__class__.__name__ != "NoArgsIsHelpError":  # that one's help is already printed
            e.show()
        code = EXIT_INVALID
    except (KeyboardInterrupt, typer.Abort):
        out.error("interrupted")
        code = EXIT_INTERRUPTED
    except Exception as e:  # an error the user can fix, or a bug: one line; the traceback only with --debug
        if _state["debug"]:
            traceback.print_exc()
        what = failure(e)
        out.error(what.cli())
        code = what.exit
    sys.exit(code if isinstance(code, int) else 0)
