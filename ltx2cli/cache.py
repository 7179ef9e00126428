"""Where ltx2 keeps what it can make again: $LTX2_CACHE_DIR, else ~/.cache/ltx2 (the tiny model, downloaded
inputs, converted tokenizers, encoded prompts, and small JSON verdicts such as memory estimates and the attention
kernel a GPU runs fastest)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .output import write_json

CACHE_ENV = "LTX2_CACHE_DIR"


def cache_root() -> Path:
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "ltx2"


def read_cache_json(name: str) -> dict[str, Any]:
    """The JSON object kept in the cache as `name`; {} where it is missing, unreadable or not an object."""
    try:
        data = json.loads((cache_root() / name).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def add_to_cache_json(name: str, entries: dict[str, Any]) -> None:
    """Add `entries` to the cache's JSON object `name`, merged with what other processes wrote meanwhile (read again
    just before the write, which replaces the file whole)."""
    write_json(cache_root() / name, read_cache_json(name) | entries)
