"""`ltx2 report OUT`: one summary, --json lines and contact sheet for everything batches wrote under a folder or a
gs:// prefix (all shards, local and RunPod runs alike), from their journals and sidecars."""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import Annotated

import typer

from ..batch.collect import FINISHED, JOURNAL_GLOB, UNFINISHED, Collected, collect, fetch_videos
from ..batch.report import INDEX_NAME, Row, results_table, write_sheet
from ..errors import EXIT_FAILED
from ..storage.listing import is_gs
from ..storage.sinks import public_url
from .options import OutputOptions, option_groups

DEFAULT_SHEET = Path("ltx2-report")  # a gs:// report's sheet, in the working folder

EXAMPLES = """
Examples:

  ltx2 report renders/

  ltx2 report gs://studio-renders/nightly/ --json > results.jsonl

  ltx2 report gs://studio-renders/nightly/ --sheet /srv/www/nightly --thumbnails
"""


@option_groups
def report(
    root: Annotated[
        str,
        typer.Argument(metavar="OUT", help="A folder or gs://BUCKET/PREFIX that batches wrote to.", show_default=False),
    ],
    *,
    sheet: Annotated[
        Path | None,
        typer.Option(
            "--sheet",
            help=f"Folder for the contact sheet ({INDEX_NAME}, thumbs/) \\[default: OUT itself; ./{DEFAULT_SHEET} for "
            "gs://].",
            show_default=False,
        ),
    ] = None,
    thumbnails: Annotated[
        bool,
        typer.Option(
            "--thumbnails",
            help="gs:// only: download each finished MP4 beside the sheet to cut its thumbnails (without it the sheet "
            "links to the objects; a folder's sheet always has them).",
        ),
    ] = False,
    show: OutputOptions,
) -> None:
    """Report on everything batches wrote under OUT: every journal (ltx2-journal*.jsonl: every shard's, local and
    RunPod runs alike) and every MP4's sidecar, as one summary, one --json line per job (as `ltx2 batch --json`
    prints them) and a contact sheet.

    A job's newest event wins: one that failed in a run and was done in a later one is done. A job id found in
    several journals or for several outputs is counted and shown once, the newest. Exit 1 if any job failed, or
    was started and never finished (a run killed, or still running); 2 if OUT is not there or holds nothing to
    report.

    A gs:// run keeps its journal on the machine that ran it, and a failed job has no sidecar: publish the journal
    beside the outputs (`ltx2 batch` does, at the end of a run) to see those too.
    """
    out = show.output()
    found = collect(root)
    if found.duplicates:
        shown = ", ".join(found.duplicates[:5]) + (", ..." if len(found.duplicates) > 5 else "")
        out.warning(
            f"{len(found.duplicates)} job id(s) found in several journals or for several outputs, the newest of "
            f"each shown: {shown}"
        )
    folder = sheet or (DEFAULT_SHEET if is_gs(root) else Path(root))
    if thumbnails and is_gs(root):
        for problem in fetch_videos(found.jobs, folder):
            out.warning(f"no thumbnails for {problem}")
    counts = found.counts()
    index = write_sheet(folder, _rows(found), _summary_text(found, counts), "ltx2 report")
    results = [j.result for j in found.jobs]
    for r in results:
        out.result(r.as_dict())
    out.result(
        {"summary": True, "jobs": len(results), **counts}
        | {"journals": len(found.journals), "sidecars": found.sidecars, "duplicates": len(found.duplicates)}
    )
    if out.human:
        out.stderr.print(results_table(results))
    out.log(f"contact sheet: {index}")
    out.log(_tally(counts))
    if counts["failed"] or counts[UNFINISHED]:
        raise typer.Exit(EXIT_FAILED)


report.__doc__ = inspect.cleandoc(report.__doc__ or "") + "\n" + EXAMPLES


def _rows(found: Collected) -> list[Row]:
    """A finished gs:// output links to its object's URL (readable when the bucket is public)."""
    return [
        Row(
            j.result.id,
            j.spec,
            j.result,
            public_url(j.result.output) if is_gs(j.result.output) and j.result.status in FINISHED else None,
        )
        for j in found.jobs
    ]


def _summary_text(found: Collected, counts: dict[str, int]) -> str:
    journals = f"{len(found.journals)} journal{'s' * (len(found.journals) != 1)}"
    where = f"{journals} ({JOURNAL_GLOB}) and {found.sidecars} sidecars under {found.root}"
    return f"{len(found.jobs)} jobs: {_tally(counts)} · from {where} · {time.strftime('%F %T')}"


def _tally(counts: dict[str, int]) -> str:
    """As a batch says it ("2 done, 0 skipped, 1 failed"), and how many never finished when some did not."""
    return ", ".join(f"{n} {status}" for status, n in counts.items() if n or status != UNFINISHED)
