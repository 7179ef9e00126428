"""What planning carries: the batch's PlanContext (its settings, and each remote input fetched once) and one job's
Resolver (what resolving its parts found: the manifest's problems, the world's failures, warnings; see plan)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import Ltx2Error, MediaError, Problem
from ..jobs.job import Job
from ..jobs.manifest import RawJob
from ..jobs.presets import PresetSet
from ..jobs.releases import DEFAULT as DEFAULT_VERSION
from ..jobs.releases import VERSIONS, Version
from ..storage.fetch import InputCache, redact
from ..storage.sinks import Sink, sink_for
from ..storage.sources import file_sha256


@dataclass
class PlanContext:
    presets: PresetSet
    output_dir: Path = Path("outputs")  # for jobs without `output`; relative to the working directory
    cache: InputCache | None = None  # fetch remote inputs to probe them; None leaves their lengths/sizes unknown
    # the weights' release (weights.versions), when known before planning: its defaults (image CRF) and LoRAs
    # apply; None plans with LTX-2's (validate without --model)
    model_version: str | None = None
    # (url, kind) -> the cached file, or why it could not be had; filled by prefetch / fetch
    fetched: dict[tuple[str, str], Path | Unavailable] = field(default_factory=dict, repr=False)
    # the scheme://bucket of each remote output -> why it cannot take output (None: it can); checked once
    destinations: dict[str, Unavailable | None] = field(default_factory=dict, repr=False)
    # (path, size, mtime) -> sha256 of its bytes: a batch whose jobs share a voice file reads it once
    digests: dict[tuple[str, int, int], str] = field(default_factory=dict, repr=False)

    def destination(self, name: str) -> Unavailable | None:
        """Why output `name` cannot be delivered (a path that cannot be written; no credentials for a bucket,
        checked once per bucket and only when inputs are fetched: not by validate --no-fetch), or None."""
        sink = sink_for(name)
        if not sink.remote:
            return _unless_ready(sink, "")  # its message names the path
        if self.cache is None:
            return None
        parts = urlsplit(name)
        key = f"{parts.scheme}://{parts.netloc}"
        if key not in self.destinations:
            self.destinations[key] = _unless_ready(sink, key)
        return self.destinations[key]

    def inputs_sha256(self, files: list[Path | None]) -> str | None:
        """One digest of the inputs' bytes, in order (None while one is not had): part of the spec's hash, so a
        file replaced under the same name renders again instead of being skipped as done."""
        if None in files:
            return None
        total = hashlib.sha256()
        for path in files:
            st = path.stat()
            key = (str(path), st.st_size, st.st_mtime_ns)
            if key not in self.digests:
                self.digests[key] = file_sha256(path)
            total.update(self.digests[key].encode())
        return total.hexdigest()[:16]

    def fetch(self, url: str, kind: str) -> Path | Unavailable:
        """Local copy of a remote input (kind "image" / "audio"), or the reason there is none."""
        key = (url, kind)
        if key not in self.fetched:
            assert self.cache is not None
            self.fetched[key] = _fetch(self.cache, url, kind)
        return self.fetched[key]


@dataclass(frozen=True)
class Unavailable:
    """Why a remote input cannot be had: the code its job fails with, and one line naming the URL."""

    code: str
    message: str


def _unless_ready(sink: Sink, shown: str) -> Unavailable | None:
    try:
        sink.ready()
    except Ltx2Error as e:
        message = str(e)
        return Unavailable(e.code, f"{shown}: {message}" if shown else message)
    return None


def _fetch(cache: InputCache, url: str, kind: str) -> Path | Unavailable:
    shown = redact(url)
    try:
        return cache.get(url, kind)
    except Exception as e:  # any fetch failure, client libraries' own errors too, is a job problem, not a crash
        detail = str(e).replace(url, shown)  # never echo a signed URL's query string
        message = detail if isinstance(e, Ltx2Error) else f"fetch failed ({e.__class__.__name__}: {detail})"
        # A bucket that will not hand the object over is a storage error; content that is not media is the input's.
        code = "E_STORAGE" if url.startswith("gs://") and not isinstance(e, MediaError) else "E_INPUT"
    message = " ".join(message.split())  # one line per problem
    return Unavailable(code, message if shown in message else f"{shown}: {message}")


@dataclass
class Resolver:
    raw: RawJob
    job: Job
    ctx: PlanContext
    problems: list[Problem] = field(default_factory=list)  # the manifest's: no spec
    failures: list[Problem] = field(default_factory=list)  # the world's (remote inputs): a spec that fails
    warnings: list[str] = field(default_factory=list)
    inputs: list[Path | None] = field(default_factory=list)  # each input's local file; None: not had (yet)

    def fail(self, path: tuple, message: str, code: str | None = None) -> None:
        """A problem with the manifest, or with `code` a remote input that cannot be had (the job fails alone)."""
        if code is None:
            self.problems.append(self.raw.problem(path, message))
        else:
            self.failures.append(replace(self.raw.problem(path, message), code=code))


def version(r: Resolver) -> Version:
    return VERSIONS[r.ctx.model_version or DEFAULT_VERSION]
