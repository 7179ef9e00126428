"""Moving bytes in: inputs from http(s):// and gs:// into a local cache (outputs go out through sinks.py).

Downloads stream into a per-batch cache keyed by URL (an input shared by ten jobs is fetched once),
under a size cap, with connect/read timeouts and retries.
The content of a download is checked by decoding it (see media.probe), never by its extension.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from ..errors import Ltx2Error, MediaError
from ..media import probe
from . import sources

MB = 1024 * 1024
MAX_REDIRECTS = 5


class StorageError(Ltx2Error):
    """A fetch or upload failed: not found, timed out, too large, refused, or the service is down."""

    code = "E_STORAGE"


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int = 200 * MB
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 3
    backoff: float = 0.5  # seconds, doubled per retry
    # False: refuse http(s) hosts that resolve to private, loopback, link-local, reserved or metadata addresses,
    # at every redirect hop, and connect to the address that was checked (a server fetching URLs for clients).
    # The CLI fetches what its user asks for.
    allow_private: bool = True
    allowed_hosts: frozenset[str] = frozenset()  # host names exempt from that check (e.g. an in-VPC media server)


def default_cache_dir() -> Path:
    """$LTX2_CACHE_DIR/inputs, else ~/.cache/ltx2/inputs (beside the model cache)."""
    from ..cache import cache_root

    return cache_root() / "inputs"


def default_input_cache(
    cache_dir: Path | None = None,
    max_mb: float = 200,
    timeout: float | None = None,
    public_only: bool = False,
    allowed_hosts: list[str] | None = None,
) -> InputCache:
    """The cache the CLI's --cache-dir / --max-input-mb / --fetch-timeout / --public-only / --allow-host describe;
    one line for every command. `timeout` bounds each try's wait for the server (the connect wait at most 10 s)."""
    policy = FetchPolicy(
        max_bytes=int(max_mb * MB),
        allow_private=not public_only,
        allowed_hosts=frozenset(h.strip().rstrip(".").lower() for h in allowed_hosts or () if h.strip()),
    )
    if timeout is not None:
        policy = replace(policy, connect_timeout=min(policy.connect_timeout, timeout), read_timeout=timeout)
    return InputCache(cache_dir or default_cache_dir(), policy)


class InputCache:
    """Local copies of remote inputs; local paths pass through untouched. Safe to share between threads."""

    def __init__(self, cache_dir: Path, policy: FetchPolicy | None = None):
        self.dir = cache_dir
        self.policy = policy or FetchPolicy()
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._session = None
        self._checked: set[tuple[str, str]] = set()  # (url, kind) whose content was probed as that kind

    def get(self, source: str, kind: str) -> Path:
        """Local file for an image or audio source (kind "image" / "audio"), fetched once per URL."""
        canonical, local = sources.resolve(source, Path.cwd())
        if local is not None:
            return local
        target = self.dir / (hashlib.sha256(canonical.encode()).hexdigest()[:32] + _suffix(canonical))
        with self._lock(canonical):
            if not target.exists():
                self.dir.mkdir(parents=True, exist_ok=True)
                part = target.with_name(target.name + f".{os.getpid()}.part")
                try:
                    if canonical.startswith("gs://"):
                        _download_gs(canonical, part, self.policy)
                    else:
                        self._download_http(canonical, part)
                    _check_content(part, kind, canonical)
                    os.replace(part, target)
                finally:
                    part.unlink(missing_ok=True)
            elif (canonical, kind) not in self._checked:  # cached as the other kind, or by an earlier run
                _check_content(target, kind, canonical)
            self._checked.add((canonical, kind))
        return target

    def _lock(self, key: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _download_http(self, url: str, dest: Path) -> None:
        import requests

        shown = redact(url)
        try:
            with self._open(url) as response:
                if response.status_code >= 400:
                    raise StorageError(f"{shown}: HTTP {response.status_code} {response.reason}")
                declared = int(response.headers.get("Content-Length") or 0)
                if declared > self.policy.max_bytes:
                    raise StorageError(f"{shown}: {declared / MB:.1f} MB is over the {self._cap} cap")
                size = 0
                with open(dest, "wb") as f:
                    for chunk in response.iter_content(chunk_size=MB):
                        size += len(chunk)
                        if size > self.policy.max_bytes:
                            raise StorageError(f"{shown}: more than the {self._cap} cap")
                        f.write(chunk)
        except requests.exceptions.RetryError as e:
            raise StorageError(f"{shown}: still failing after {self.policy.retries} retries ({_reason(e)})") from None
        except requests.exceptions.RequestException as e:
            reason = _reason(e)
            if isinstance(e, requests.exceptions.Timeout) or "Timeout" in reason:
                timeouts = f"connect {self.policy.connect_timeout:g} s, read {self.policy.read_timeout:g} s"
                raise StorageError(f"{shown}: timed out ({timeouts})") from None
            if isinstance(e, requests.exceptions.ConnectionError):
                raise StorageError(f"{shown}: cannot connect ({reason})") from None
            raise StorageError(f"{shown}: {e.__class__.__name__}") from None

    def _open(self, url: str):
        """The streaming response for url, following redirects ourselves so every hop's host is checked (when
        private hosts are refused, by the session's PublicOnlyAdapter as it connects)."""
        from .public_only import NotPublic

        session = self.session()
        timeout = (self.policy.connect_timeout, self.policy.read_timeout)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                response = session.get(url, stream=True, allow_redirects=False, timeout=timeout)
            except NotPublic as e:
                raise StorageError(f"{redact(url)}: refused: {e}") from None
            target = session.get_redirect_target(response)
            if target is None:
                return response
            response.close()
            url = urljoin(url, target)
            if urlsplit(url).scheme not in ("http", "https"):
                raise StorageError(f"redirected to {redact(url)}: only http(s) redirects are followed")
        raise StorageError(f"{redact(url)}: more than {MAX_REDIRECTS} redirects")

    @property
    def _cap(self) -> str:
        return f"{self.policy.max_bytes / MB:g} MB"

    def session(self):
        """One requests session, retrying 5xx answers and dropped connections with backoff; when private hosts are
        refused, each connection goes to the address its host's check resolved (no second lookup to rebind)."""
        with self._guard:  # fetch threads start together; build the session (and its pool) once
            if self._session is None:
                self._session = self._new_session()
        return self._session

    def _new_session(self):
        import requests
        from requests.adapters import HTTPAdapter
        from urllib3.util.retry import Retry

        retry = Retry(
            total=self.policy.retries,
            backoff_factor=self.policy.backoff,
            status_forcelist=(500, 502, 503, 504),
            allowed_methods=("GET",),
            raise_on_status=True,
        )
        session = requests.Session()
        adapter = HTTPAdapter(max_retries=retry)
        if not self.policy.allow_private:
            from .public_only import PublicOnlyAdapter

            adapter = PublicOnlyAdapter(self.policy.allowed_hosts, max_retries=retry)
            session.trust_env = False  # an HTTP(S)_PROXY would resolve the host itself, past the check
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session


def check_public(url: str, allowed_hosts: frozenset[str] = frozenset()) -> None:
    """StorageError unless every address url's host resolves to is public (not private, loopback, link-local,
    reserved, multicast, or a cloud metadata server): the check a strict policy's connections make."""
    from .public_only import NotPublic, public_addresses

    parts = urlsplit(url)
    host = (parts.hostname or "").rstrip(".").lower()
    if host in allowed_hosts:
        return
    try:
        public_addresses(host, parts.port or 443)
    except NotPublic as e:
        raise StorageError(f"{redact(url)}: refused: {e}") from None
    except (socket.gaierror, UnicodeError) as e:
        raise StorageError(f"{redact(url)}: cannot resolve {host} ({e.__class__.__name__})") from None


def _suffix(url: str) -> str:
    ext = Path(urlsplit(url).path).suffix.lower()
    return ext if ext.isascii() and 1 < len(ext) <= 6 and ext[1:].isalnum() else ".bin"


def _reason(error: Exception) -> str:
    """The underlying cause's class name (urllib3 wraps it in MaxRetryError), without the URL."""
    inner = error.args[0] if error.args else None
    reason = getattr(inner, "reason", None)
    return reason.__class__.__name__ if reason is not None else inner.__class__.__name__


def _check_content(path: Path, kind: str, url: str) -> None:
    try:
        if kind == "image":
            probe.image_size(path)
        else:
            probe.audio_duration(path)
    except MediaError as e:
        raise MediaError(f"{redact(url)}: downloaded, but {str(e).rsplit(':', 1)[0]}") from None


def redact(url: str) -> str:
    """A URL fit for logs: no query string (signed URLs carry their signature there), no user info."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}" + ("?…" if parts.query else "")


# -- Google Cloud Storage -----------------------------------------------------------------------

_client_lock = threading.Lock()
_client = None


def gcs_client():
    """Credentials the standard way (ADC, GOOGLE_APPLICATION_CREDENTIALS); STORAGE_EMULATOR_HOST honoured."""
    global _client
    with _client_lock:
        if _client is None:
            from google.auth.exceptions import DefaultCredentialsError
            from google.cloud import storage

            try:
                _client = storage.Client()
            except DefaultCredentialsError:
                raise StorageError(
                    "no Google Cloud credentials: set GOOGLE_APPLICATION_CREDENTIALS or run "
                    "`gcloud auth application-default login`"
                ) from None
        return _client


def reset_gcs_client() -> None:
    global _client
    with _client_lock:
        _client = None


def gcs_error(uri: str, action: str, e: Exception) -> StorageError:
    """A Cloud Storage client error as one line naming the object (action: "download", "upload")."""
    from google.api_core import exceptions as gexc

    if isinstance(e, gexc.NotFound):
        bucket, _ = sources.parse_gs(uri)
        return StorageError(f"{uri}: not found (does bucket {bucket!r} exist?)")
    if isinstance(e, gexc.Forbidden):
        return StorageError(f"{uri}: permission denied to {action}")
    return StorageError(f"{uri}: {action} failed ({e.__class__.__name__})")


def _download_gs(uri: str, dest: Path, policy: FetchPolicy) -> None:
    from google.api_core import exceptions as gexc

    bucket_name, name = sources.parse_gs(uri)
    try:
        blob = gcs_client().bucket(bucket_name).get_blob(name, timeout=(policy.connect_timeout, policy.read_timeout))
        if blob is None:
            raise StorageError(f"{uri}: not found")
        if blob.size is not None and blob.size > policy.max_bytes:
            raise StorageError(f"{uri}: {blob.size / MB:.1f} MB is over the {policy.max_bytes / MB:g} MB cap")
        blob.download_to_filename(str(dest), timeout=(policy.connect_timeout, policy.read_timeout))
    except gexc.GoogleAPIError as e:
        raise gcs_error(uri, "download", e) from None
