"""Where inputs and outputs live: local paths, http(s) URLs, gs://bucket/object.

This module only parses, classifies and fingerprints; fetching and uploading live with the storage code.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from ..errors import UsageError

REMOTE_SCHEMES = ("http", "https", "gs")
Fetch = Callable[[str, str], Path]  # (source, "image" | "audio") -> a local file: InputCache.get, or local_file
# Cloud Storage bucket names: 3-63 of lowercase letters, digits, '-', '_' and '.', alphanumeric at both ends.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")


def is_remote(value: str) -> bool:
    return urlsplit(value).scheme.lower() in REMOTE_SCHEMES


def resolve(value: str, base_dir: Path) -> tuple[str, Path | None]:
    """-> (canonical form, local path or None for remote). ValueError for an unusable value.

    Relative paths are relative to base_dir (the manifest's folder).
    """
    value = value.strip()
    if not value:
        raise ValueError("is empty; give a path or URL")
    parts = urlsplit(value)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise ValueError(f"URL has no host: {value!r}")
        return value, None
    if scheme == "gs":
        parse_gs(value)
        return value, None
    if scheme == "file":
        path = Path(unquote(parts.path))
    elif len(scheme) > 1:  # one letter is a Windows drive, not a scheme
        raise ValueError(f"unsupported scheme {scheme!r}; use a local path, http(s):// URL or gs://bucket/object")
    else:
        path = Path(value).expanduser()
    if not path.is_absolute():
        path = base_dir / path
    path = path.resolve()
    return str(path), path


def local_file(source: str, kind: str) -> Path:
    """The Fetch for sources already on disk (no input cache); a remote source here is a usage error."""
    if is_remote(source):
        raise UsageError(f"{source}: remote {kind} inputs need the input cache (fetching was turned off)")
    return Path(source)


def parse_gs(uri: str) -> tuple[str, str]:
    """gs://bucket/object -> (bucket, object); ValueError naming what is wrong."""
    parts = urlsplit(uri)
    bucket, name = parts.netloc, parts.path.lstrip("/")
    if parts.scheme != "gs" or not bucket:
        raise ValueError(f"must look like gs://bucket/path, got {uri!r}")
    if not _BUCKET_RE.match(bucket):
        raise ValueError(f"invalid bucket name {bucket!r} (3-63 lowercase letters, digits, '-', '_', '.')")
    if not name:
        raise ValueError(f"names a bucket but no object: {uri!r}")
    return bucket, name


def file_sha256(path: Path) -> str:
    return _digest(path, hashlib.sha256()).hexdigest()


def file_md5(path: Path) -> str:
    """Base64 MD5 of a file's bytes, as Cloud Storage reports an object's (md5_hash)."""
    return base64.b64encode(_digest(path, hashlib.md5(usedforsecurity=False)).digest()).decode()


def _digest(path: Path, digest: Any) -> Any:
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest
