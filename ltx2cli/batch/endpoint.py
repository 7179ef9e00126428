"""A RunPod serverless endpoint as `ltx2 batch --endpoint runpod:ID` talks to it: submit, status, cancel, health.

The runpod SDK's client (runpod.endpoint.runner: Endpoint, Job, RunPodClient) does the calls. Where it falls short
for a batch that must not lose or double a job, the missing part is done here on the same HTTP API (runpod 1.12.0):
- its automatic retry (408/429 only) is mounted on `http://` URLs alone, so RunPod's own https API never retries:
  every call here retries 429, 5xx and connections refused or dropped, with backoff (urllib3's Retry on the SDK's
  session, both schemes; Retry-After is respected);
- POST /run is retried only where the request cannot have reached a worker's queue (a refused connection, or an
  answer of 429/5xx): a connection dropped after the request was sent may have queued the job, so that is not
  retried blindly (RunPod has no idempotency key); the batch records it as unknown and asks the output later;
- `Job.status()` caches only COMPLETED/FAILED/TIMED_OUT/CANCELLED, and `Job.stream()` does not treat CANCELLED as
  final: the batch polls GET /status itself (`status` below), which also says when RunPod no longer knows the job
  (404: results are kept about 30 minutes);
- `AsyncioEndpoint.run` cannot send `policy`; the sync `Endpoint.run` sends the whole body, `policy` included.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..errors import Ltx2Error, UsageError

API_KEY_ENV = "RUNPOD_API_KEY"
BASE_URL_ENV = "RUNPOD_ENDPOINT_BASE_URL"
DEFAULT_BASE_URL = "https://api.runpod.ai/v2"
SCHEME = "runpod:"
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
RETRY_STATUSES = (429, 500, 502, 503, 504)
CALL_TIMEOUT_S = 30


class EndpointError(Ltx2Error):
    """A call to the endpoint failed for good (after its retries), or it timed out or cancelled a job."""

    code = "E_ENDPOINT"


class Gone(EndpointError):
    """The endpoint does not know this job (any more): RunPod forgets a finished job's result after ~30 minutes."""


@dataclass(frozen=True)
class Target:
    """Which endpoint, where its API is, and the key."""

    endpoint_id: str
    base_url: str
    api_key: str

    @classmethod
    def parse(cls, value: str, base_url: str | None = None, env: dict[str, str] | None = None) -> Target:
        """`runpod:ENDPOINT_ID` -> a Target; the key from $RUNPOD_API_KEY, the base URL from --endpoint-url or
        $RUNPOD_ENDPOINT_BASE_URL (else RunPod's own). A usage error says what is missing."""
        env = dict(os.environ) if env is None else env
        if not value.startswith(SCHEME) or not value[len(SCHEME) :].strip():
            raise UsageError(f"--endpoint {value!r}: use runpod:ENDPOINT_ID (the id from RunPod's console)")
        key = env.get(API_KEY_ENV, "").strip()
        if not key:
            raise UsageError(f"--endpoint {value}: set {API_KEY_ENV} to a RunPod API key that may run this endpoint")
        base = (base_url or env.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise UsageError(f"--endpoint-url {base!r}: an http(s):// URL, e.g. {DEFAULT_BASE_URL}")
        return cls(value[len(SCHEME) :].strip(), base, key)


class Endpoint:
    """One endpoint's API through the runpod SDK's client, with the retries a batch needs."""

    def __init__(self, target: Target, retries: int = 5, backoff_s: float = 0.5):
        from requests.adapters import HTTPAdapter
        from runpod.endpoint.runner import Endpoint as SdkEndpoint
        from urllib3.util.retry import Retry

        self.target = target
        every = Retry(
            total=retries, connect=retries, read=retries, status=retries, other=retries,
            backoff_factor=backoff_s, status_forcelist=RETRY_STATUSES, allowed_methods=("GET", "POST"),
            respect_retry_after_header=True, raise_on_status=False,
        )  # fmt: skip
        # Two SDK endpoints, each with its own session: POST /run must not retry a read error (sent, no answer: the
        # job may be queued), everything else may.
        self._runner, self._sdk = (
            SdkEndpoint(target.endpoint_id, target.api_key),
            SdkEndpoint(target.endpoint_id, target.api_key),
        )
        for sdk, retry in ((self._runner, every.new(read=0, other=0)), (self._sdk, every)):
            sdk.rp_client.endpoint_url_base = target.base_url  # the SDK reads its base once, at import
            for scheme in ("http://", "https://"):
                sdk.rp_client.rp_session.mount(scheme, HTTPAdapter(max_retries=retry))
        self._client = self._sdk.rp_client

    def submit(self, request: dict[str, Any], policy: dict[str, int] | None = None) -> str:
        """POST /run -> the RunPod job id. `policy`: executionTimeout / ttl in milliseconds."""
        body = {"input": request} | ({"policy": policy} if policy else {})
        try:
            return self._runner.run(body).job_id
        except Exception as e:
            raise EndpointError(f"submitting to {self.target.endpoint_id}: {_why(e)}") from e

    def status(self, job_id: str) -> dict[str, Any]:
        """GET /status/{id}: {"status", "output" | "error", ...}; raises Gone when RunPod no longer knows it."""
        return self._get(f"status/{job_id}", job_id)

    def cancel(self, job_id: str) -> None:
        from runpod.endpoint.runner import Job

        try:
            Job(self.target.endpoint_id, job_id, self._client).cancel(timeout=CALL_TIMEOUT_S)
        except Exception as e:
            if _status(e) != 404:  # already gone: nothing left to cancel
                raise EndpointError(f"cancelling {job_id}: {_why(e)}") from e

    def health(self) -> dict[str, Any]:
        """GET /health: {"jobs": {...}, "workers": {...}}."""
        return self._get("health", None)

    def workers(self) -> int | None:
        """How many workers the endpoint has or may start now (from /health); None if it does not say."""
        try:
            workers = self.health().get("workers") or {}
        except EndpointError:
            return None
        # RunPod's roll-up: running + idle + initializing + throttled + unhealthy = total ("ready" repeats idle)
        counts = [v for k, v in workers.items() if k in ("idle", "running", "initializing", "throttled")]
        total = sum(int(v) for v in counts if isinstance(v, int | float))
        return total or None

    def _get(self, path: str, job_id: str | None) -> dict[str, Any]:
        try:
            return self._client.get(f"{self.target.endpoint_id}/{path}", timeout=CALL_TIMEOUT_S)
        except Exception as e:
            if job_id is not None and _status(e) == 404:
                raise Gone(f"{self.target.endpoint_id} no longer knows job {job_id}") from e
            raise EndpointError(f"GET {path} at {self.target.endpoint_id}: {_why(e)}") from e


def _status(e: Exception) -> int | None:
    response = getattr(e, "response", None)
    return getattr(response, "status_code", None)


def _why(e: Exception) -> str:
    status = _status(e)
    if status is not None:
        return f"HTTP {status}"
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__
