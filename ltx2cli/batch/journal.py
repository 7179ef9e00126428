"""The batch journal: one JSON line per job event, flushed and fsynced, so it reads back after any crash.

It is also resume's index of finished jobs (as yt-dlp's download archive is): a "done" line is appended only once
the output is in place, so an output whose last line says done, with the same job id and spec hash, needs no
render. Sidecars are the fallback for what the journal does not list.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import UsageError
from .shards import Shard, per_shard

JOURNAL_NAME = "ltx2-journal.jsonl"
EVENTS = ("submitted", "started", "done", "failed", "skipped")  # submitted: sent to a render endpoint (fanout)


def journal_path(output_dir: Path, given: Path | None = None, shard: Shard | None = None) -> Path:
    """Where a batch keeps its journal: `given` (--journal), else OUTPUT_DIR/ltx2-journal.jsonl. A shard's name
    carries its tag (ltx2-journal.shard-2-of-4.jsonl): shards sharing one output folder each keep, and lock, their
    own."""
    return per_shard(given or output_dir / JOURNAL_NAME, shard)


class JournalInUse(UsageError):
    """Another batch holds this journal: two runs into one output folder would render the same jobs twice and
    share a long clip's window checkpoint."""


class Journal:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the batch
        try:  # held until the batch ends (the process's end releases it too, kill -9 included)
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            raise JournalInUse(
                f"another ltx2 batch is writing {path}: wait for it to finish, or give this one another "
                "--output-dir or --journal"
            ) from None
        except OSError:  # a filesystem without locks (some NFS and FUSE mounts): run unguarded rather than not at all
            pass
        self.index = finished_outputs(read_journal(path))  # what earlier runs finished, read before appending
        self._lock = threading.Lock()

    def record(self, event: str, job: str, **fields: Any) -> None:
        assert event in EVENTS, event
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event, "id": job, **fields}
        line = json.dumps({k: v for k, v in entry.items() if v is not None}, ensure_ascii=False)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())

    def finished(self, job: str, spec_hash: str, output: str) -> bool:
        """An earlier run finished `output` as this job, from a spec with this hash."""
        return self.index.get(output) == (job, spec_hash)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_journal(path: Path) -> list[dict[str, Any]]:
    """Every complete record; a line cut short by a crash (the last one) is skipped."""
    records = []
    if not path.is_file():
        return records
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def finished_outputs(records: list[dict[str, Any]]) -> dict[str, tuple[str, str]]:
    """output -> (job id, spec hash) of the run that last finished it. A later "started" for the output drops it (that
    run may have replaced the file, then failed): what the journal no longer vouches for falls back to sidecars."""
    index: dict[str, tuple[str, str]] = {}
    for r in records:
        output = r.get("output") if isinstance(r, dict) else None
        if not isinstance(output, str):
            continue
        if r.get("event") in ("done", "skipped") and r.get("id") and r.get("spec_hash"):
            index[output] = (r["id"], r["spec_hash"])
        elif r.get("event") == "started":
            index.pop(output, None)
    return index
