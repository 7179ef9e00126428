"""Which jobs of a manifest a batch run renders: --only, --shard, --limit, and resume (skip what is done)."""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..jobs.spec import RenderSpec, SpecPreview

if TYPE_CHECKING:
    from ..storage.sinks import Sink
    from .journal import Journal


def parse_shard(text: str) -> tuple[int, int]:
    """'I/N' (1-based) -> (I, N)."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(f"--shard {text!r}: use I/N, e.g. 1/4 (shard I of N, counting from 1)") from None
    if not 1 <= i <= n:
        raise UsageError(f"--shard {text!r}: I must be between 1 and N")
    return i, n


def in_shard(spec: SpecPreview, shard: tuple[int, int]) -> bool:
    """Stable across machines and manifest order: a job's shard depends only on its id."""
    i, n = shard
    return zlib.crc32(spec.id.encode()) % n == i - 1


def select(
    specs: list[SpecPreview], only: list[str] | None, shard: tuple[int, int] | None, limit: int | None
) -> list[SpecPreview]:
    if only is not None:
        if not only:  # `--only ""` from a script whose list came out empty: nothing, rather than everything
            raise UsageError("--only: no job ids given (a comma-separated list of ids)")
        known = {s.id for s in specs}
        missing = [i for i in only if i not in known]
        if missing:
            raise UsageError(f"--only: no job with id {', '.join(map(repr, missing))} in the manifests")
        specs = [s for s in specs if s.id in set(only)]
    if shard:
        specs = [s for s in specs if in_shard(s, shard)]
    return specs[:limit] if limit is not None else specs


def already_done(spec: RenderSpec, sink: Sink, journal: Journal | None = None) -> bool:
    """An earlier run made this output from this very spec. The journal is asked first (same id and hash: a local
    MP4 must still be there, a remote one is taken on its word); for what it does not list (deleted, or the run
    was killed before writing the line), the sink looks for a sidecar with the spec's hash."""
    listed = journal is not None and journal.finished(spec.id, spec.spec_hash(), spec.output)
    return sink.done(spec.spec_hash(), listed)
