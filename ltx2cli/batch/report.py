"""The contact sheet: `index.html` in the output dir, one row per job with thumbnails (first frame, each keyframe's
frame, last frame), status, time, prompt and a link to the MP4. Plain files, relative links: it opens from disk in
any browser, and keeps working when the folder is copied elsewhere. A batch writes one for its jobs; `ltx2 report`
one for everything under a folder or gs:// prefix (rows from sidecars and journals)."""

from __future__ import annotations

import html
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.table import Table

from ..jobs.spec import RenderSpec, SpecPreview
from .results import JobResult, status_counts

INDEX_NAME = "index.html"
THUMBS_DIR = "thumbs"
THUMB_HEIGHT = 120


@dataclass(frozen=True)
class Row:
    id: str
    spec: SpecPreview | None  # None: only the job's journal line is known (a failed job has no sidecar)
    result: JobResult | None  # None: not run
    url: str | None = None  # where the video is when not on this machine (a gs:// output's object URL)


def write_contact_sheet(
    out_dir: Path, specs: list[SpecPreview], results: list[JobResult], name: str = INDEX_NAME
) -> Path:
    """A batch's sheet: out_dir/index.html (a shard's: `name`, index.shard-I-of-N.html) and its thumbnails; jobs
    not run are listed as such."""
    by_id = {r.id: r for r in results}
    counts = ", ".join(f"{n} {s}" for s, n in status_counts(results).items())
    summary = f"{len(specs)} job{'s' * (len(specs) != 1)}: {counts} · {time.strftime('%F %T')}"
    return write_sheet(out_dir, [Row(spec.id, spec, by_id.get(spec.id)) for spec in specs], summary, "ltx2 batch", name)


def write_sheet(out_dir: Path, rows: list[Row], summary: str, title: str, name: str = INDEX_NAME) -> Path:
    """Write out_dir/index.html (temp name, then rename) and the thumbnails it shows (out_dir/thumbs/)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    page = _PAGE.format(
        title=html.escape(title),
        summary=html.escape(summary),
        rows="\n".join(_row(out_dir, row) for row in rows),
        height=THUMB_HEIGHT,
    )
    index = out_dir / name
    tmp = index.with_name(f".{index.stem}.{os.getpid()}.part{index.suffix}")
    tmp.write_text(page, encoding="utf-8")
    os.replace(tmp, index)
    return index


def thumbnail_frames(spec: RenderSpec) -> list[tuple[int, str]]:
    """(frame index, label) to show: the first frame, every keyframe's exact frame, the last frame."""
    last = spec.output_frames - 1
    picks = {0: "first", last: "last"}
    for kf in spec.keyframes:
        if 0 < kf.frame < last:
            picks[kf.frame] = f"key {kf.position:g}" if isinstance(kf.position, float) else f"key {kf.position}"
    return [(f, f"{label} · f{f}") for f, label in sorted(picks.items())]


def _row(out_dir: Path, row: Row) -> str:
    spec, result = row.spec, row.result
    status = result.status if result else "not run"
    mp4 = Path(result.local) if result and result.local else None
    thumbs: list[tuple[str, str]] = []
    if isinstance(spec, RenderSpec) and mp4 is not None and mp4.is_file() and status in ("done", "skipped"):
        thumbs = _thumbnails(out_dir, spec, mp4)
    cells = "".join(
        f'<figure><img src="{html.escape(src)}" alt="{html.escape(label)}"><figcaption>{html.escape(label)}'
        "</figcaption></figure>"
        for src, label in thumbs
    )
    if not cells:
        cells = '<div class="none">no video</div>'
    links = []
    if mp4 is not None and mp4.is_file():
        links.append(f'<a href="{html.escape(_relative(mp4, out_dir))}">{html.escape(mp4.name)}</a>')
    uploaded = (result.uploaded if result else None) or {}
    if url := uploaded.get("url") or row.url:
        links.append(f'<a href="{html.escape(url)}">{"uploaded" if links else html.escape(_name(url))}</a>')
    elif uploaded:
        links.append(html.escape(uploaded["uri"]))
    detail = f'<p class="error">{html.escape(f"{result.code}: {result.error}")}</p>' if status == "failed" else ""
    seconds = f"{result.seconds:.1f} s" if result and result.seconds else ""
    prompt, meta = (spec.prompt, _meta(spec)) if spec else ("", result.output if result else "")
    return (
        f'<tr class="{status.replace(" ", "-")}" id="job-{html.escape(row.id)}">'
        f'<td><b>{html.escape(row.id)}</b><br><span class="status">{status}</span><br>{seconds}<br>'
        f"{' · '.join(links)}</td>"
        f'<td class="strip">{cells}</td>'
        f'<td><p>{html.escape(prompt)}</p><p class="meta">{html.escape(meta)}</p>{detail}</td></tr>'
    )


def _name(url: str) -> str:
    return url.rsplit("/", 1)[-1] or url


def _meta(spec: SpecPreview) -> str:
    """Mode, size, frames, preset; what depends on an input that was never had (a preview's None) shows as "?"."""
    size = f"{spec.width}x{spec.height}" if spec.width and spec.height else "?x?"
    frames = spec.output_frames if spec.output_frames is not None else "?"
    return f"{spec.mode} · {size} · {frames} frames @ {spec.fps:g} fps · {spec.preset}"


def _relative(path: Path, start: Path) -> str:
    return Path(os.path.relpath(path.absolute(), start.absolute())).as_posix()


def write_thumbnails(folder: Path, spec: RenderSpec, frames: Sequence[np.ndarray] | Mapping[int, np.ndarray]) -> None:
    """Save the frames `thumbnail_frames` picks as small JPEGs, folder/<id>-f<frame>.jpg. The runner calls this
    with the rendered frames still in memory, so the sheet never has to decode a video it has just written."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for index, _label in thumbnail_frames(spec):
        if (isinstance(frames, Mapping) and index in frames) or (
            not isinstance(frames, Mapping) and index < len(frames)
        ):
            image = Image.fromarray(frames[index])
            image.thumbnail((THUMB_HEIGHT * 4, THUMB_HEIGHT))
            image.save(folder / _thumb_name(spec, index), quality=85)


def _thumb_name(spec: SpecPreview, index: int) -> str:
    return f"{spec.id}-f{index}.jpg"


def _thumbnails(out_dir: Path, spec: RenderSpec, mp4: Path) -> list[tuple[str, str]]:
    """[(relative src, label)] of the job's thumbnails; any missing (a job rendered by an older run) are made
    from the MP4."""
    folder = out_dir / THUMBS_DIR
    picks = thumbnail_frames(spec)
    made = mp4.stat().st_mtime
    missing = {i for i, _ in picks if not _newer(folder / _thumb_name(spec, i), made)}
    if missing:
        write_thumbnails(folder, spec, _frames(mp4, missing))
    return [
        (f"{THUMBS_DIR}/{_thumb_name(spec, i)}", label)
        for i, label in picks
        if (folder / _thumb_name(spec, i)).is_file()
    ]


def _newer(thumb: Path, than: float) -> bool:
    """The thumbnail is there and no older than its MP4 (a re-rendered job's thumbnails are cut again)."""
    return thumb.is_file() and thumb.stat().st_mtime >= than


def _frames(mp4: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    import av

    found: dict[int, np.ndarray] = {}
    try:
        with av.open(str(mp4)) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in wanted:
                    found[i] = frame.to_ndarray(format="rgb24")
                if len(found) == len(wanted):
                    break
    except (av.FFmpegError, OSError):
        pass  # an unreadable file gets no thumbnails; the row still links it
    return found


# Thumbnails that fail to load get a visible red frame, and the page counts them (body data-thumbs-*),
# so a browser check can read the result from the DOM.
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 14px system-ui, sans-serif; margin: 1.5em; color: #222; }}
table {{ border-collapse: collapse; width: 100%; }}
td {{ border-top: 1px solid #ddd; padding: .6em; vertical-align: top; }}
td:first-child {{ white-space: nowrap; }}
.strip {{ display: flex; gap: .4em; }}
figure {{ margin: 0; text-align: center; font-size: 11px; color: #666; }}
img {{ height: {height}px; display: block; background: #eee; }}
img.broken {{ outline: 3px solid #c00; }}
.status {{ font-weight: 600; }}
tr.done .status {{ color: #080; }} tr.skipped .status {{ color: #555; }}
tr.failed .status, .error {{ color: #c00; }} tr.not-run .status, tr.unfinished .status {{ color: #a60; }}
.meta {{ color: #777; font-size: 12px; }} .none {{ color: #999; padding: 2em 1em; }}
</style></head>
<body>
<h1>{title}</h1><p>{summary}</p>
<table>
{rows}
</table>
<script>
window.addEventListener("load", () => {{
  const imgs = [...document.querySelectorAll("img")];
  const broken = imgs.filter((img) => !(img.complete && img.naturalWidth > 0));
  broken.forEach((img) => img.classList.add("broken"));
  document.body.dataset.thumbsTotal = imgs.length;
  document.body.dataset.thumbsBroken = broken.length;
}});
</script>
</body></html>
"""


def results_table(results: list[JobResult]) -> Table:
    """The results as a terminal table: id, status, seconds, and the output or the error."""
    table = Table(title="Results", title_justify="left")
    for col in ("id", "status", "seconds", "output / error"):
        table.add_column(col, overflow="fold")
    for r in results:
        detail = f"{r.code}: {r.error}" if r.status == "failed" else r.output
        table.add_row(r.id, r.status, f"{r.seconds:.1f}", detail)
    return table
