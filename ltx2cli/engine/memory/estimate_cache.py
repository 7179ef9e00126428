"""Meta-device estimates kept on disk. Every process that plans (each `ltx2 batch`, `validate` and `doctor`, each
worker start) estimates the same shapes again, and at full size one video decode's meta run takes seconds (a
doctor for one GPU size ran eight of them: 62 of its 85 s). Each result is kept in $LTX2_CACHE_DIR/estimates.json,
keyed by the function, its arguments, the versions of torch and diffusers (whose modules are what runs) and the
source of the modules that compute it, so an edit to them is never answered from an older run."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...cache import add_to_cache_json, read_cache_json

FILE = "estimates.json"
_SOURCES = ("estimate.py", "ffn_chunks.py", "decode_spans.py", "../../weights/fp8.py", "../../media/mel.py")
_known: dict[str, Any] | None = None


def persisted(fn: Callable[..., Any] | None = None, *, load: Callable[[Any], Any] = int) -> Any:
    """`fn`'s results (JSON: numbers, lists, dicts; a dataclass is kept as its fields), read from the cache file
    where an earlier process computed them; `load` rebuilds one from its JSON."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def cached(*args: Any) -> Any:
            key = _key(fn.__name__, args)
            known = _store()
            if key not in known:
                value = fn(*args)
                known[key] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
                _save(key, known[key])
            return load(known[key])

        return cached

    return wrap(fn) if fn is not None else wrap


def _key(name: str, args: tuple) -> str:
    plain = [dataclasses.asdict(a) if dataclasses.is_dataclass(a) else a for a in args]
    return hashlib.sha256(json.dumps([name, plain, _fingerprint()], sort_keys=True).encode()).hexdigest()[:40]


@functools.cache
def _fingerprint() -> list[str]:
    import diffusers
    import torch

    here = Path(__file__).parent
    source = hashlib.sha256(b"".join((here / s).read_bytes() for s in _SOURCES)).hexdigest()[:16]
    return [torch.__version__, diffusers.__version__, source]


def _store() -> dict[str, Any]:
    global _known
    if _known is None:
        _known = read_cache_json(FILE)
    return _known


def _save(key: str, value: Any) -> None:
    """A cache that cannot be written is only slower."""
    with contextlib.suppress(OSError):
        add_to_cache_json(FILE, {key: value})
