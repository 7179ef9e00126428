"""Where a job's output goes: one Sink class per kind of destination, found by the output's URI scheme.

A sink knows an output's final name, whether an earlier run already made it from the same spec (its sidecar's
spec hash), where its files are written on this machine, and how to put them in place. The MP4 and its sidecar
are always written locally first (temp name, then rename); a remote sink then uploads both. Adding a scheme is
one class and one line in SINKS:

>>> class Box(RemoteSink):
...     example = "box://shelf/path"
...     def put(self):
...         return {"uri": self.name, "size": self.local.stat().st_size}
>>> SINKS["box"] = Box
>>> sink_for("box://shelf/clips/a.mp4", Path("/staging")).local
PosixPath('/staging/shelf/clips/a.mp4')
>>> del SINKS["box"]
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit

from .sources import parse_gs

UPLOAD_CHUNK = 8 * 1024 * 1024  # setting a chunk size makes google-cloud-storage upload resumably
SIDECAR_SUFFIX = ".json"  # each MP4's sidecar (batch.deliver writes what it says) sits beside it


def sidecar_path(mp4: Path) -> Path:
    return mp4.with_suffix(SIDECAR_SUFFIX)


class Sink:
    """One output, by its final name; its files are written on this machine at `local`."""

    example: ClassVar[str] = "a local path"  # how error messages show this kind of output
    remote: ClassVar[bool] = False  # files are staged here and uploaded by `put`

    def __init__(self, name: str, staging_dir: Path = Path(".")):
        self.name, self.staging_dir = name, staging_dir

    @classmethod
    def resolve(cls, value: str, base_dir: Path) -> str:
        """The final name for an output the manifest gives as `value`; ValueError says what is wrong."""
        raise NotImplementedError

    @property
    def local(self) -> Path:
        raise NotImplementedError

    def done(self, spec_hash: str, listed: bool) -> bool:
        """An earlier run made this output from a spec with this hash. `listed`: the journal says so."""
        raise NotImplementedError

    def put(self) -> dict[str, Any] | None:
        """Put the finished MP4 and its sidecar (both at `local`) in place; what was uploaded, if anything."""
        return None

    def ready(self, look: bool = False) -> None:
        """Raise StorageError when output cannot go here, so a job fails before it renders rather than after.
        `look`: also ask the destination (a network request) whether it is there."""

    @property
    def url(self) -> str:
        """Where a client fetches the output."""
        raise NotImplementedError


class LocalSink(Sink):
    """A path on this machine: the files are written in place, so there is nothing left to put."""

    @classmethod
    def resolve(cls, value: str, base_dir: Path) -> str:
        path = Path(value).expanduser()
        if not path.is_absolute():
            path = base_dir / path
        return str(path.resolve())

    @property
    def local(self) -> Path:
        return Path(self.name)

    def done(self, spec_hash: str, listed: bool) -> bool:
        """The journal's word while the MP4 is still there; else the MP4 and a sidecar with this hash."""
        if listed and self.local.is_file():
            return True
        side = sidecar_path(self.local)
        if not (self.local.is_file() and side.is_file()):
            return False
        try:
            return json.loads(side.read_text(encoding="utf-8")).get("spec_hash") == spec_hash
        except (OSError, ValueError):
            return False

    @property
    def url(self) -> str:
        return self.local.as_uri()

    def ready(self, look: bool = False) -> None:
        from ..errors import OutputError

        path = self.local
        if path.is_dir():
            raise OutputError(f"{path} is a folder; name the .mp4 file to write (or end the output with /)")
        folder = path.parent
        while not folder.exists():  # the folders that do not exist yet are made by the first writer
            folder = folder.parent
        if not folder.is_dir():
            raise OutputError(f"cannot write {path}: {folder} is a file, not a folder")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise OutputError(f"cannot write {path}: no permission to write in {folder}")


class RemoteSink(Sink):
    """scheme://bucket/object, staged at staging_dir/bucket/object (the whole path, so outputs like
    gs://b/x/clip.mp4 and gs://b/y/clip.mp4, or a local outputs/clip.mp4, never share a file)."""

    remote = True

    @classmethod
    def resolve(cls, value: str, base_dir: Path) -> str:
        parts = urlsplit(value)
        if not parts.netloc or not parts.path.lstrip("/"):
            raise ValueError(f"must look like {cls.example}, got {value!r}")
        return value

    @property
    def local(self) -> Path:
        parts = urlsplit(self.name)
        inside = [p for p in PurePosixPath(parts.path.lstrip("/")).parts if p not in ("..", ".", "/")]
        return Path(self.staging_dir, parts.netloc, *inside).absolute()

    @property
    def sidecar_name(self) -> str:
        return self.name.removesuffix(".mp4") + SIDECAR_SUFFIX

    def done(self, spec_hash: str, listed: bool) -> bool:
        """The journal's word (no lookups), else the stored sidecar's hash."""
        return listed or self.stored_hash() == spec_hash

    def stored_hash(self) -> str | None:
        """The spec hash in the stored sidecar, None when there is none (or it cannot be read)."""
        return None


class GcsSink(RemoteSink):
    """gs://bucket/object in Google Cloud Storage: a resumable, retried upload of the MP4, then the sidecar."""

    example = "gs://bucket/path"

    @classmethod
    def resolve(cls, value: str, base_dir: Path) -> str:
        parse_gs(value)
        return value

    def put(self) -> dict[str, Any]:
        done = upload(self.local, self.name, content_type="video/mp4")
        upload(sidecar_path(self.local), self.sidecar_name, content_type="application/json")
        return {"uri": done.uri, "url": done.url, "size": done.size, "md5": done.md5, "crc32c": done.crc32c}

    def ready(self, look: bool = False) -> None:
        from google.api_core import exceptions as gexc

        from .fetch import StorageError, gcs_client

        client = gcs_client()  # no credentials: StorageError saying how to give them
        if not look:
            return
        bucket, _ = parse_gs(self.name)
        try:
            there = client.bucket(bucket).exists()
        except gexc.GoogleAPIError:  # may write objects but not read the bucket's metadata: cannot tell, try
            return
        if not there:
            raise StorageError(f"gs://{bucket}: bucket not found (create it, or check {bucket!r} is spelled right)")

    def stored_hash(self) -> str | None:
        from .fetch import gcs_client

        bucket, name = parse_gs(self.name)
        try:
            b = gcs_client().bucket(bucket)
            if not b.blob(name).exists():
                return None
            side = b.blob(parse_gs(self.sidecar_name)[1])
            return json.loads(side.download_as_bytes()).get("spec_hash") if side.exists() else None
        except Exception:  # cannot tell: render again rather than skip wrongly
            return None

    @property
    def url(self) -> str:
        return public_url(self.name)


SINKS: dict[str, type[Sink]] = {"": LocalSink, "gs": GcsSink}  # by URI scheme ("": a path)


def sink_for(name: str, staging_dir: Path = Path(".")) -> Sink:
    """The sink of an output name the planner resolved."""
    return SINKS[_scheme(name)](name, staging_dir)


def output_name(value: str, base_dir: Path) -> str:
    """The final name of an output given as `value` (a path relative to base_dir, or a URI of a known scheme);
    ValueError says what is wrong."""
    sink = SINKS.get(_scheme(value))
    if sink is None:
        kinds = " or ".join(cls.example for cls in SINKS.values())
        raise ValueError(f"must be {kinds}, got {value!r}")
    return sink.resolve(value, base_dir)


def _scheme(name: str) -> str:
    """ "gs" for gs://..., "" for a path; case-sensitive, as the schemes are written in SINKS."""
    return name.split("://", 1)[0] if "://" in name else ""


# -- Google Cloud Storage uploads ---------------------------------------------------------------


@dataclass(frozen=True)
class Uploaded:
    uri: str  # gs://bucket/name
    url: str | None  # https URL when the bucket is publicly readable
    size: int
    md5: str | None
    crc32c: str | None


def upload(local: Path, uri: str, content_type: str = "video/mp4", public: bool | None = None) -> Uploaded:
    """Resumable, retried upload of a finished file; the local file is left in place."""
    from google.api_core import exceptions as gexc
    from google.cloud.storage.retry import DEFAULT_RETRY

    from .fetch import gcs_client, gcs_error

    bucket_name, name = parse_gs(uri)
    try:
        bucket = gcs_client().bucket(bucket_name)
        blob = bucket.blob(name, chunk_size=UPLOAD_CHUNK)
        # Uploads are not retried by default (not idempotent in general); rewriting our own object is.
        blob.upload_from_filename(str(local), content_type=content_type, retry=DEFAULT_RETRY)
        blob.reload()
        if public is None:
            public = _is_public(bucket)
    except gexc.GoogleAPIError as e:
        raise gcs_error(uri, "upload", e) from None
    url = public_url(uri) if public else None
    return Uploaded(uri=uri, url=url, size=blob.size or local.stat().st_size, md5=blob.md5_hash, crc32c=blob.crc32c)


def public_url(uri: str) -> str:
    """The https URL of a gs:// object (readable by anyone only when the bucket or object is public)."""
    bucket_name, name = parse_gs(uri)
    return f"https://storage.googleapis.com/{bucket_name}/{quote(name)}"


def _is_public(bucket: Any) -> bool:
    """True when allUsers may read objects; False when unknown (no permission to look)."""
    try:
        policy = bucket.get_iam_policy(requested_policy_version=3)
    except Exception:  # any refusal just means we cannot tell
        return False
    return any("allUsers" in b.get("members", ()) and "objectViewer" in b.get("role", "") for b in policy.bindings)
