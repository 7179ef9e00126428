"""The batch journal: one JSON line per job event, flushed and fsynced, so it reads back after any crash."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

JOURNAL_NAME = "ltx2-journal.jsonl"
EVENTS = ("started", "done", "failed", "skipped")


class Journal:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the batch
        self._lock = threading.Lock()

    def record(self, event: str, job: str, **fields: Any) -> None:
        assert event in EVENTS, event
        entry = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event, "id": job, **fields}
        line = json.dumps({k: v for k, v in entry.items() if v is not None}, ensure_ascii=False)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())

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
