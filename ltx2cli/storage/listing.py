"""What a local folder or a gs:// prefix holds: every file under it (name, size, checksums), and reading or copying
one. `ltx2 report` builds its summary from what batches left there."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import UsageError
from .sources import file_md5, parse_gs


@dataclass(frozen=True)
class Stored:
    name: str  # an absolute local path, or gs://bucket/object
    size: int
    md5: str | None = None  # base64 MD5 of the bytes, as Cloud Storage gives it (objects only)

    @property
    def basename(self) -> str:
        return self.name.rsplit("/", 1)[-1]


def is_gs(root: str) -> bool:
    return root.startswith("gs://")


def list_under(root: str) -> list[Stored]:
    """Every file under a local folder (its subfolders too) or every object under a gs:// prefix, sorted by name;
    UsageError when the folder or bucket is not there."""
    if is_gs(root):
        return _list_gs(root)
    folder = Path(root).expanduser()
    if not folder.is_dir():
        raise UsageError(f"{root}: {'not a folder' if folder.exists() else 'no such folder'}")
    folder = folder.resolve()
    return [Stored(str(p), p.stat().st_size) for p in sorted(folder.rglob("*")) if p.is_file()]


def relative(name: str, root: str) -> str:
    """`name` (from list_under(root)) as a path under root."""
    if is_gs(root):
        bucket, prefix = gs_prefix(root)
        return name.removeprefix(f"gs://{bucket}/{prefix}")
    return Path(name).relative_to(Path(root).expanduser().resolve()).as_posix()


def gs_prefix(root: str) -> tuple[str, str]:
    """gs://bucket[/folder[/]] -> (bucket, "folder/" or "" for the whole bucket)."""
    parts = urlsplit(root)
    try:
        parse_gs(f"gs://{parts.netloc}/-")  # checks the bucket name
    except ValueError as e:
        raise UsageError(f"{root}: {e}") from None
    folder = parts.path.strip("/")
    return parts.netloc, f"{folder}/" if folder else ""


def read_bytes(item: Stored) -> bytes:
    if not is_gs(item.name):
        return Path(item.name).read_bytes()
    from google.api_core import exceptions as gexc

    from .fetch import gcs_client, gcs_error

    bucket, name = parse_gs(item.name)
    try:
        return gcs_client().bucket(bucket).blob(name).download_as_bytes()
    except gexc.GoogleAPIError as e:
        raise gcs_error(item.name, "download", e) from None


def download(item: Stored, dest: Path) -> Path:
    """Copy an object to dest (temp name, then rename; the client checks its MD5), unless dest already holds the
    same bytes (same size and MD5): a second report downloads nothing again."""
    from google.api_core import exceptions as gexc

    from .fetch import gcs_client, gcs_error

    if dest.is_file() and dest.stat().st_size == item.size and item.md5 == file_md5(dest):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}.{os.getpid()}.part{dest.suffix}")
    bucket, name = parse_gs(item.name)
    try:
        gcs_client().bucket(bucket).blob(name).download_to_filename(str(tmp))
    except gexc.GoogleAPIError as e:
        tmp.unlink(missing_ok=True)
        raise gcs_error(item.name, "download", e) from None
    os.replace(tmp, dest)
    return dest


def _list_gs(root: str) -> list[Stored]:
    from google.api_core import exceptions as gexc

    from .fetch import gcs_client, gcs_error

    bucket, prefix = gs_prefix(root)
    try:
        blobs = list(gcs_client().list_blobs(bucket, prefix=prefix))
    except gexc.NotFound:
        raise UsageError(f"{root}: bucket {bucket!r} not found") from None
    except gexc.GoogleAPIError as e:
        raise gcs_error(root, "list", e) from None
    found = [Stored(f"gs://{bucket}/{b.name}", b.size or 0, b.md5_hash) for b in blobs if not b.name.endswith("/")]
    return sorted(found, key=lambda s: s.name)
