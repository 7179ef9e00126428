"""Which jobs of a manifest a batch run renders: --only, --shard, --limit, and resume (skip what is done)."""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from . import sources
from .deliver import sidecar_path
from .errors import UsageError
from .spec import RenderSpec

if TYPE_CHECKING:
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


def in_shard(spec: RenderSpec, shard: tuple[int, int]) -> bool:
    """Stable across machines and manifest order: a job's shard depends only on its id."""
    i, n = shard
    return zlib.crc32(spec.id.encode()) % n == i - 1


def select(
    specs: list[RenderSpec], only: list[str] | None, shard: tuple[int, int] | None, limit: int | None
) -> list[RenderSpec]:
    if only:
        known = {s.id for s in specs}
        missing = [i for i in only if i not in known]
        if missing:
            raise UsageError(f"--only: no job with id {', '.join(map(repr, missing))} in the manifests")
        specs = [s for s in specs if s.id in set(only)]
    if shard:
        specs = [s for s in specs if in_shard(s, shard)]
    return specs[:limit] if limit is not None else specs


def already_done(spec: RenderSpec, local: Path, journal: Journal | None = None) -> bool:
    """The journal says an earlier run finished this output from this very spec (same id and hash), and a local MP4
    is still there (a gs:// one is taken on the journal's word: no bucket lookups). Else, for what the journal does
    not list (it was deleted, or the run was killed before writing the line), the sidecar decides: the output exists
    and its sidecar has the same hash."""
    listed = journal is not None and journal.finished(spec.id, spec.spec_hash(), spec.output)
    if listed and (sources.is_remote(spec.output) or local.is_file()):
        return True
    if sources.is_remote(spec.output):
        return _remote_done(spec)
    side = sidecar_path(local)
    if not (local.is_file() and side.is_file()):
        return False
    try:
        return json.loads(side.read_text(encoding="utf-8")).get("spec_hash") == spec.spec_hash()
    except (OSError, ValueError):
        return False


def _remote_done(spec: RenderSpec) -> bool:
    from .storage import gcs_client

    bucket, name = sources.parse_gs(spec.output)
    side_name = name.removesuffix(".mp4") + ".json"
    try:
        b = gcs_client().bucket(bucket)
        if not b.blob(name).exists():
            return False
        side = b.blob(side_name)
        return side.exists() and json.loads(side.download_as_bytes()).get("spec_hash") == spec.spec_hash()
    except Exception:  # cannot tell: render again rather than skip wrongly
        return False
