"""A run's journal beside its gs:// outputs. A failed job leaves no sidecar, only its journal line, and a batch keeps
its journal on the machine that ran it: published under the outputs' common prefix with the same name as locally
(ltx2-journal.jsonl, or a shard's ltx2-journal.shard-I-of-N.jsonl, so shards never overwrite each other),
`ltx2 report gs://BUCKET/PREFIX` sees every job of the run."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from posixpath import dirname

from ..output import Output
from ..storage.fetch import StorageError
from ..storage.sinks import upload
from ..storage.sources import parse_gs


def outputs_prefix(outputs: Iterable[str]) -> str | None:
    """gs://BUCKET/FOLDER/: the deepest folder holding every gs:// output (gs://BUCKET/ for the bucket's top);
    None when no output is on gs://, or they are in several buckets."""
    found = [parse_gs(o) for o in outputs if o.startswith("gs://")]
    if not found or len({bucket for bucket, _ in found}) > 1:
        return None
    folders = [dirname(name).split("/") for _, name in found]
    common: list[str] = []
    for parts in zip(*folders, strict=False):
        if len(set(parts)) > 1 or not parts[0]:
            break
        common.append(parts[0])
    return f"gs://{found[0][0]}/" + "".join(f"{p}/" for p in common)


def publish_journal(journal: Path, outputs: Iterable[str], out: Output) -> str | None:
    """Upload the run's journal (call it when the run ends: done, failed or interrupted) to outputs_prefix(outputs),
    where it says so on stderr; the object's URI, or None when there is nowhere to put it or the upload failed (a
    warning: the renders themselves are in place)."""
    outputs = list(outputs)
    prefix = outputs_prefix(outputs)
    if prefix is None:
        buckets = {parse_gs(o)[0] for o in outputs if o.startswith("gs://")}
        if len(buckets) > 1:
            out.warning(f"journal not published: the gs:// outputs are in {len(buckets)} buckets, not one")
        return None
    if not journal.is_file():
        return None
    uri = prefix + journal.name
    try:
        upload(journal, uri, content_type="application/x-ndjson", public=False)
    except StorageError as e:
        out.warning(f"journal not published: {e}")
        return None
    out.log(f"journal: {uri}")
    return uri
