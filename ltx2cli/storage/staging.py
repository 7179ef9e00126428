"""Files between this machine and a bucket for renders made elsewhere (`ltx2 batch --endpoint`): local inputs
staged once under their content's hash, where any worker can fetch them, and finished MP4s brought back, checked
against what the bucket holds."""

from __future__ import annotations

import mimetypes
import os
from pathlib import Path

from .fetch import StorageError, gcs_client, gcs_error
from .sinks import upload
from .sources import file_md5, file_sha256, parse_gs


def staged_uri(path: Path, prefix: str) -> str:
    """Where a local input is staged: PREFIX/<sha256 of its bytes>.<its extension> (the same file, staged by any
    run, is one object)."""
    if not prefix.startswith("gs://"):
        raise StorageError(f"--stage {prefix!r}: use gs://BUCKET/prefix/")
    return f"{prefix.rstrip('/')}/{file_sha256(path)}{path.suffix.lower()}"


def stage(path: Path, uri: str) -> None:
    """Upload `path` to `uri` unless an object of its size is there already (the name is its content's hash)."""
    from google.api_core import exceptions as gexc

    bucket, name = parse_gs(uri)
    try:
        there = gcs_client().bucket(bucket).get_blob(name)
    except gexc.GoogleAPIError as e:
        raise gcs_error(uri, "read", e) from None
    if there is not None and there.size == path.stat().st_size:
        return
    upload(path, uri, content_type=mimetypes.guess_type(path.name)[0] or "application/octet-stream", public=False)


def download(uri: str, dest: Path) -> None:
    """The object at `uri` into `dest` (written under a temp name, then renamed), checked against the object's size
    and MD5: a short or corrupt download is an error, never a file."""
    from google.api_core import exceptions as gexc

    bucket, name = parse_gs(uri)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    try:
        blob = gcs_client().bucket(bucket).get_blob(name)
        if blob is None:
            raise StorageError(f"{uri}: not found")
        blob.download_to_filename(str(tmp))
        size, md5 = tmp.stat().st_size, file_md5(tmp)
        if size != blob.size or (blob.md5_hash and md5 != blob.md5_hash):
            raise StorageError(
                f"{uri}: downloaded {size} bytes (MD5 {md5}), the object has {blob.size} (MD5 {blob.md5_hash})"
            )
        os.replace(tmp, dest)
    except gexc.GoogleAPIError as e:
        raise gcs_error(uri, "download", e) from None
    finally:
        tmp.unlink(missing_ok=True)
