"""Where ltx2 keeps what it can make again: $LTX2_CACHE_DIR, else ~/.cache/ltx2 (the tiny model, downloaded
inputs, converted tokenizers, encoded prompts)."""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "LTX2_CACHE_DIR"


def cache_root() -> Path:
    root = os.environ.get(CACHE_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "ltx2"
