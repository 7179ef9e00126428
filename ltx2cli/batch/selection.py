"""Which jobs of a manifest a batch run renders: --only, --shard (shards.py), --limit, and resume (skip what is
done)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import UsageError
from ..jobs.spec import RenderSpec, SpecPreview
from .shards import Shard, share

if TYPE_CHECKING:
    from ..storage.sinks import Sink
    from .journal import Journal


def select(
    specs: list[SpecPreview],
    only: list[str] | None,
    shard: Shard | None,
    limit: int | None,
    unfetched: Callable[[], list[SpecPreview]] | None = None,
) -> list[SpecPreview]:
    """--only, then this shard's share of those (shards.share; `unfetched`: the plan made without fetching, which
    the partition weighs), then the first `limit`."""
    if only is not None:
        if not only:  # `--only ""` from a script whose list came out empty: nothing, rather than everything
            raise UsageError("--only: no job ids given (a comma-separated list of ids)")
        known = {s.id for s in specs}
        missing = [i for i in only if i not in known]
        if missing:
            raise UsageError(f"--only: no job with id {', '.join(map(repr, missing))} in the manifests")
        specs = [s for s in specs if s.id in set(only)]
    if shard:
        mine = set(share(specs, shard, unfetched).ids)
        specs = [s for s in specs if s.id in mine]
    return specs[:limit] if limit is not None else specs


def already_done(spec: RenderSpec, sink: Sink, journal: Journal | None = None) -> bool:
    """An earlier run made this output from this very spec. The journal is asked first (same id and hash: a local
    MP4 must still be there, a remote one is taken on its word); for what it does not list (deleted, or the run
    was killed before writing the line), the sink looks for a sidecar with the spec's hash."""
    listed = journal is not None and journal.finished(spec.id, spec.spec_hash(), spec.output)
    return sink.done(spec.spec_hash(), listed)
