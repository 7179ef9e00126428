"""A loopback stand-in for RunPod's serverless control plane, and a launcher for ltx2's real worker under it.

ControlPlane answers RunPod's client API under /v2/{endpoint_id}/ (run, status, cancel, health, purge-queue) and the
worker routes the runpod SDK (1.12.0) calls from `runpod.serverless.start`, as it reads them from its environment:

    RUNPOD_WEBHOOK_GET_JOB      GET  .../job-take/$ID?gpu=..   (+ &job_in_progress=0|1)  -> 200 {id, input} | 204
                                GET  .../job-stop/$ID?gpu=..   (derived by the SDK)      -> 200 {jobsToStop} | 204
    RUNPOD_WEBHOOK_POST_OUTPUT  POST .../job-done/$RUNPOD_POD_ID/$ID?gpu=..&isStream=false, a JSON body
                                ({"output"} / {"error"}; {"status": "IN_PROGRESS", "output"} is a progress_update)
    RUNPOD_WEBHOOK_PING         GET  .../ping/$RUNPOD_POD_ID?gpu=..&job_id=..&runpod_version=..
    (the SDK puts the worker id in for $ID in the job-take URL, for $RUNPOD_POD_ID in the others; job-take and
    job-stop are long polls here, as on RunPod: the SDK asks again at once after a 204)

Only the control plane is stood in for: the workers are `python -m ltx2cli.worker.handler` processes running the
SDK's own loop. Everything is in memory, on 127.0.0.1, and the clock is time.monotonic(). Not modelled: /runsync,
/stream, job-take-batch (a worker of concurrency 1 never asks for it), delivering `webhook` (it is only stored).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

QUEUED, RUNNING, COMPLETED, FAILED = "IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED"
CANCELLED, TIMED_OUT = "CANCELLED", "TIMED_OUT"
OPEN = (QUEUED, RUNNING)

# path segment after /v2/{endpoint_id}/ -> (route name as fail_next / requests know it, HTTP method)
PATHS = {
    "run": ("run", "POST"),
    "status": ("status", "GET"),
    "cancel": ("cancel", "POST"),
    "health": ("health", "GET"),
    "purge-queue": ("purge-queue", "POST"),
    "job-take": ("take", "GET"),
    "job-stop": ("stop", "GET"),
    "job-done": ("done", "POST"),  # "progress" when the body says IN_PROGRESS
    "ping": ("ping", "GET"),
}
ROUTES = frozenset(name for name, _ in PATHS.values()) | {"progress"}
DROP = 0  # an injected "status" that closes the connection unanswered


class _Reply(Exception):
    """Ends a request with this HTTP status and JSON body (None: no body)."""

    def __init__(self, status: int, body: dict | None = None):
        self.status, self.body = status, body


class ControlPlane:
    """RunPod's /v2/{endpoint_id}/ API on loopback, for a client and for real workers; a context manager.

    Tests read `jobs` (id -> {"id", "status", "input", "policy", "webhook", "output" | "error", "progress",
    "worker", "submitted", "taken", "finished", "retried", "forgotten"}, times from time.monotonic(); a job whose
    status now answers 404 stays here with `forgotten` saying why: "result_ttl", "ttl", "expire" or "purged"),
    `submissions` (the /run bodies that made a job, in order), `requests` (route -> requests seen, injected faults
    included), `workers` (worker id -> {"seen", "pings", "takes", "job": the id of the job it is on, from its
    job-take until it posts that job's result or asks again}) and `discarded` ((job id, worker id) of results that
    came for a job no longer theirs)."""

    def __init__(
        self,
        endpoint_id: str = "ltx2-loopback",
        api_key: str = "loopback-key",
        result_ttl_s: float = 1800.0,  # RunPod keeps a /run result 30 min
        take_wait_s: float = 1.0,  # how long job-take and job-stop hold a request open when there is nothing
        worker_stale_s: float = 30.0,  # a worker not heard of for this long is gone: its job goes back to the queue
    ):
        self.endpoint_id, self.api_key = endpoint_id, api_key
        self.result_ttl_s, self.take_wait_s, self.worker_stale_s = result_ttl_s, take_wait_s, worker_stale_s
        self.jobs: dict[str, dict[str, Any]] = {}
        self.submissions: list[dict[str, Any]] = []
        self.requests: Counter[str] = Counter()
        self.workers: dict[str, dict[str, Any]] = {}
        self.discarded: list[tuple[str, str]] = []
        self._faults: dict[str, deque[int]] = {r: deque() for r in ROUTES}
        self._stops: dict[str, set[str]] = {}  # worker id -> ids of its jobs it should stop
        self._cond = threading.Condition()
        self._closed = False
        self._server: _Server | None = None

    # -- life -------------------------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        handler = type("Handler", (_Handler,), {"plane": self})
        self._server = _Server(("127.0.0.1", 0), handler)
        threading.Thread(target=self._server.serve_forever, daemon=True, name="runpod-plane").start()
        return self

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._closed = True  # long polls answer now
            self._cond.notify_all()
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    @property
    def url(self) -> str:
        """The API base a client uses (RUNPOD_ENDPOINT_BASE_URL): {url}/{endpoint_id}/run and so on."""
        assert self._server is not None, "use the plane as a context manager"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v2"

    def worker_env(self, worker_id: str, ping_ms: int = 1000) -> dict[str, str]:
        """The variables RunPod gives a worker of this endpoint, pointing at this plane."""
        base, gpu = f"{self.url}/{self.endpoint_id}", "?gpu=LOOPBACK"
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID{gpu}",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID{gpu}",
            "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID{gpu}",
            "RUNPOD_POD_ID": worker_id,
            "RUNPOD_AI_API_KEY": self.api_key,
            "RUNPOD_ENDPOINT_ID": self.endpoint_id,
            "RUNPOD_PING_INTERVAL": str(ping_ms),
        }

    # -- fault injection and waiting -----------------------------------------------------------------------

    def fail_next(self, route: str, status: int, count: int = 1) -> None:
        """The next `count` requests to `route` are answered `status` (with a JSON error) and do nothing else."""
        self._inject(route, [status] * count)

    def drop_next(self, route: str, count: int = 1) -> None:
        """The next `count` requests to `route` get their connection closed unanswered, before they do anything (a
        dropped /run makes no job)."""
        self._inject(route, [DROP] * count)

    def _inject(self, route: str, faults: list[int]) -> None:
        if route not in ROUTES:
            raise ValueError(f"route {route!r} is not one of {', '.join(sorted(ROUTES))}")
        with self._cond:
            self._faults[route].extend(faults)

    def expire(self, job_id: str) -> None:
        """Forget a job now, as if its result had expired: /status answers 404, a result still to come is dropped."""
        with self._cond:
            self._forget(self.jobs[job_id], "expire")

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no job is queued or running and no worker is still on one (a job cancelled or timed out while
        it ran keeps its worker busy until the worker lets go of it); False if that took over `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                self._sweep()
                if not any(j["status"] in OPEN and not j["forgotten"] for j in self.jobs.values()) and not self._busy():
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.2))  # timeouts pass without a request: look again

    # -- one request ---------------------------------------------------------------------------------------

    def _fault(self, route: str) -> int | None:
        """This request's injected fault: an HTTP status, DROP, or None."""
        with self._cond:
            self.requests[route] += 1
            return self._faults[route].popleft() if self._faults[route] else None

    def handle(self, route: str, rest: list[str], body: Any) -> tuple[int, dict | None]:
        """One authorised request on this endpoint -> (status, JSON body or None)."""
        if route in ("take", "stop"):  # long polls: they wait on the condition themselves
            return self._take(rest[0]) if route == "take" else self._stop_signals(rest[0])
        with self._cond:
            self._sweep()
            if route == "run":
                return 200, self._run(body)
            if route == "health":
                return 200, self._health()
            if route == "purge-queue":
                return 200, self._purge()
            if route == "ping":
                self._seen(rest[0], "pings")
                return 200, None
            if route in ("done", "progress"):
                return 200, self._result(rest[0], rest[1], body)
            job = self._known(rest[0])
            return 200, self._cancel(job) if route == "cancel" else self._view(job)

    # -- client routes (called holding the lock) ----------------------------------------------------------

    def _run(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict) or "input" not in body:
            raise _Reply(400, {"error": "the body must be a JSON object with an `input` field"})
        policy = body.get("policy") or {}
        for key in ("executionTimeout", "ttl"):
            value = policy.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
                raise _Reply(400, {"error": f"policy.{key} must be a positive number of milliseconds, got {value!r}"})
        job_id = f"{uuid.uuid4()}-u1"
        self.jobs[job_id] = {
            "id": job_id, "status": QUEUED, "input": body["input"], "policy": policy, "webhook": body.get("webhook"),
            "submitted": time.monotonic(), "taken": None, "finished": None, "worker": None, "progress": None,
            "retried": 0, "forgotten": None,
        }  # fmt: skip
        self.submissions.append(body)
        self._cond.notify_all()
        return {"id": job_id, "status": QUEUED}

    def _known(self, job_id: str) -> dict[str, Any]:
        job = self.jobs.get(job_id)
        if job is None or job["forgotten"]:
            raise _Reply(404, {"error": "request does not exist"})
        return job

    def _view(self, job: dict[str, Any]) -> dict[str, Any]:
        """/status's answer: RunPod's fields; a running job shows its latest progress_update as `output`."""
        now = time.monotonic()
        view: dict[str, Any] = {"id": job["id"], "status": job["status"]}
        if job["taken"] is not None:
            end = job["finished"] or now
            view |= {"delayTime": _ms(job["taken"] - job["submitted"]), "executionTime": _ms(end - job["taken"])}
            view["workerId"] = job["worker"]
        if job["status"] == RUNNING and job["progress"] is not None:
            view["output"] = job["progress"]
        elif job["status"] == COMPLETED:
            view["output"] = job.get("output")
        elif job["status"] == FAILED:
            view["error"] = job.get("error")
        return view

    def _cancel(self, job: dict[str, Any]) -> dict[str, Any]:
        """A queued or running job becomes CANCELLED (a running one's result will be dropped); a finished one stays."""
        if job["status"] in OPEN:
            self._close(job, CANCELLED)
        return {"id": job["id"], "status": job["status"]}

    def _health(self) -> dict[str, Any]:
        jobs = [j for j in self.jobs.values() if not j["forgotten"]]
        count = Counter(j["status"] for j in jobs)
        alive, busy = self._alive(), self._busy()
        return {
            "jobs": {
                "completed": count[COMPLETED],
                "failed": count[FAILED],
                "inProgress": count[RUNNING],
                "inQueue": count[QUEUED],
                "retried": sum(j["retried"] for j in jobs),
            },
            "workers": {
                "idle": len(alive - busy),
                "initializing": 0,  # a worker is counted from its first ping or job-take: it is up by then
                "ready": len(alive - busy),
                "running": len(busy),
                "throttled": 0,
                "unhealthy": 0,
            },
        }

    def _purge(self) -> dict[str, Any]:
        queued = [j for j in self.jobs.values() if j["status"] == QUEUED and not j["forgotten"]]
        for job in queued:
            self._forget(job, "purged")
        return {"removed": len(queued), "status": "completed"}

    # -- worker routes --------------------------------------------------------------------------------------

    def _take(self, worker: str) -> tuple[int, dict | None]:
        deadline = time.monotonic() + self.take_wait_s
        with self._cond:
            self._seen(worker, "takes")["job"] = None  # asking for work: done with the last one
            self._cond.notify_all()
            while not self._closed:
                self._sweep()
                job = next((j for j in self.jobs.values() if j["status"] == QUEUED and not j["forgotten"]), None)
                if job is not None:
                    job.update(status=RUNNING, worker=worker, taken=time.monotonic(), progress=None)
                    self.workers[worker]["job"] = job["id"]
                    return 200, {"id": job["id"], "input": job["input"]}
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        return 204, None

    def _stop_signals(self, worker: str) -> tuple[int, dict | None]:
        """The SDK's stop channel: ids of this worker's jobs that were cancelled, timed out or forgotten."""
        deadline = time.monotonic() + self.take_wait_s
        with self._cond:
            self._seen(worker, None)
            while not self._closed:
                self._sweep()
                if stops := self._stops.pop(worker, None):
                    return 200, {"jobsToStop": sorted(stops)}
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        return 204, None

    def _result(self, worker: str, job_id: str, body: Any) -> dict | None:
        seen = self._seen(worker, None)
        final = not (isinstance(body, dict) and body.get("status") == RUNNING)
        if final and seen["job"] == job_id:
            seen["job"] = None
            self._cond.notify_all()
        job = self.jobs.get(job_id)
        if job is None or job["forgotten"] or job["status"] != RUNNING or job["worker"] != worker:
            if final:  # a late progress update is nothing
                self.discarded.append((job_id, worker))
            return None
        if not isinstance(body, dict):
            raise _Reply(400, {"error": "the body must be a JSON object"})
        if body.get("status") == RUNNING:
            job["progress"] = body.get("output")
        elif body.get("error"):
            job["error"] = body["error"]
            self._close(job, FAILED)
        else:
            job["output"] = body.get("output")
            self._close(job, COMPLETED)
        return None

    # -- state (called holding the lock) --------------------------------------------------------------------

    def _seen(self, worker: str, counter: str | None) -> dict[str, Any]:
        seen = self.workers.setdefault(worker, {"seen": 0.0, "pings": 0, "takes": 0, "job": None})
        seen["seen"] = time.monotonic()
        if counter:
            seen[counter] += 1
        return seen

    def _alive(self) -> set[str]:
        """Workers heard of lately (pings come every RUNPOD_PING_INTERVAL, rendering or not)."""
        now = time.monotonic()
        return {w for w, seen in self.workers.items() if now - seen["seen"] < self.worker_stale_s}

    def _busy(self) -> set[str]:
        return {w for w in self._alive() if self.workers[w]["job"]}

    def _close(self, job: dict[str, Any], status: str) -> None:
        if job["status"] == RUNNING and status in (CANCELLED, TIMED_OUT):
            self._stops.setdefault(job["worker"], set()).add(job["id"])
        job.update(status=status, finished=time.monotonic())
        self._cond.notify_all()

    def _forget(self, job: dict[str, Any], why: str) -> None:
        if job["status"] == RUNNING:
            self._stops.setdefault(job["worker"], set()).add(job["id"])
        job["forgotten"] = job["forgotten"] or why
        self._cond.notify_all()

    def _sweep(self) -> None:
        """Apply the clock: TTLs, execution timeouts, results expiring, jobs of workers that went away."""
        now = time.monotonic()
        for job in self.jobs.values():
            if job["forgotten"]:
                continue
            status = job["status"]
            if status in OPEN and now - job["submitted"] > _seconds(job["policy"], "ttl"):
                self._forget(job, "ttl")
            elif status == RUNNING and now - job["taken"] > _seconds(job["policy"], "executionTimeout"):
                self._close(job, TIMED_OUT)
            elif status == RUNNING and now - self.workers[job["worker"]]["seen"] > self.worker_stale_s:
                job.update(status=QUEUED, worker=None, taken=None, progress=None, retried=job["retried"] + 1)
                self._cond.notify_all()
            elif status not in OPEN and now - job["finished"] > self.result_ttl_s:
                self._forget(job, "result_ttl")


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _seconds(policy: dict[str, Any], key: str) -> float:
    """A policy's limit (milliseconds) in seconds; none given: no limit."""
    return policy[key] / 1000 if policy.get(key) else float("inf")


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a long poll never holds up the end

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):  # a worker killed mid-request: expected
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 with keep-alive, as RunPod's API: the SDK's aiohttp session and `requests` reuse connections."""

    plane: ControlPlane
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def _serve(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))  # read first: keep-alive stays in step
        try:
            self._reply(*self._answer(method, body))
        except _Reply as r:
            self._reply(r.status, r.body)
        except _Dropped:
            self.close_connection = True  # nothing written: the client sees the connection close

    def _answer(self, method: str, raw: bytes) -> tuple[int, dict | None]:
        parts = urlsplit(self.path)
        segments = parts.path.strip("/").split("/")
        if len(segments) < 3 or segments[0] != "v2" or segments[2] not in PATHS:
            raise _Reply(404, {"error": f"no route {parts.path}"})
        endpoint, (route, wanted), rest = segments[1], PATHS[segments[2]], segments[3:]
        body = _json(raw)
        if route == "done" and isinstance(body, dict) and body.get("status") == RUNNING:
            route = "progress"
        fault = self.plane._fault(route)
        if fault == DROP:
            raise _Dropped
        if fault is not None:
            raise _Reply(fault, {"error": f"injected HTTP {fault}"})
        key = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
        if key != self.plane.api_key:
            raise _Reply(401, {"error": "Unauthorized"})
        if endpoint != self.plane.endpoint_id:
            raise _Reply(404, {"error": f"endpoint {endpoint} not found"})
        if method != wanted:
            raise _Reply(405, {"error": f"{segments[2]} takes {wanted}"})
        if len(rest) != _ARGS[route]:
            raise _Reply(404, {"error": f"no route {parts.path}"})
        return self.plane.handle(route, rest, body)

    def _reply(self, status: int, body: dict | None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client gave up: expected
            self.send_response(status)
            if status != 204:
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)


class _Dropped(Exception):
    """A request whose connection is closed unanswered (drop_next)."""


_ARGS = {"run": 0, "health": 0, "purge-queue": 0, "status": 1, "cancel": 1, "take": 1, "stop": 1, "ping": 1}
_ARGS |= {"done": 2, "progress": 2}


def _json(raw: bytes) -> Any:
    """A request's JSON body (the SDK posts job-done's JSON as form-encoded text), or None."""
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise _Reply(400, {"error": "the body is not JSON"}) from None


# -- the real worker, as processes ------------------------------------------------------------------------------

# runpod.serverless.start's fitness checks dial 8.8.8.8:53 and want 4 GB of free memory; a loopback-only test host
# may have neither, and the checks are RunPod's host vetting, not the worker's code.
NO_HOST_CHECKS = {"RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true", "RUNPOD_SKIP_GPU_CHECK": "true"}


@dataclass
class WorkerProcess:
    """One `python -m ltx2cli.worker.handler` under the SDK's serverless loop (its own process group: the SDK's ping
    process goes with it)."""

    id: str
    process: subprocess.Popen
    log: Path
    stopped: bool = False  # stopped by us (stop / kill), not died on its own

    def tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""

    def kill(self) -> None:
        """kill -9, the whole group at once."""
        self.stopped = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM (the SDK lets its job and long polls finish, then exits), then SIGKILL."""
        stop_all([self], grace)


def stop_all(workers: list[WorkerProcess], grace: float = 10.0) -> None:
    """SIGTERM to all at once, then SIGKILL each one (and its group's leftovers) not gone after `grace` seconds."""
    for w in workers:
        w.stopped = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(w.process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for w in workers:
        with contextlib.suppress(subprocess.TimeoutExpired):
            w.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        w.kill()


@contextmanager
def start_workers(
    plane: ControlPlane, count: int, env: dict[str, str], logs: Path | None = None, timeout: float = 180.0
) -> Iterator[list[WorkerProcess]]:
    """`count` real workers taking jobs from `plane` (ids worker-0.., logs in `logs`), each with this environment
    plus `env` (LTX2_MODEL_DIR, LTX2_GCS_BUCKET, STORAGE_EMULATOR_HOST...); yields once every one has pinged or
    asked for a job. On exit they are stopped; one that had died on its own is an error, with its log's tail.
    (The SDK's job-take sends the key from ~/.runpod/config.toml when that file exists, not RUNPOD_AI_API_KEY: on a
    machine set up with `runpod config`, the plane answers its job-takes 401.)"""
    logs = logs or Path(tempfile.mkdtemp(prefix="runpod-workers-"))
    logs.mkdir(parents=True, exist_ok=True)
    workers: list[WorkerProcess] = []
    try:
        for i in range(count):
            wid = f"worker-{i}"
            full = os.environ | NO_HOST_CHECKS | {"PYTHONUNBUFFERED": "1"} | plane.worker_env(wid) | env
            log = logs / f"{wid}.log"
            with open(log, "wb") as out:
                cmd = [sys.executable, "-m", "ltx2cli.worker.handler"]
                process = subprocess.Popen(cmd, env=full, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
            workers.append(WorkerProcess(wid, process, log))
        _wait_up(plane, workers, timeout)
        yield workers
    except BaseException as e:
        if died := _died(workers):
            e.add_note(died)
        raise
    else:
        if died := _died(workers):
            raise RuntimeError(died)
    finally:
        stop_all(workers)


def _wait_up(plane: ControlPlane, workers: list[WorkerProcess], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not all(w.id in plane.workers for w in workers):
        if died := _died(workers):
            raise RuntimeError(died)
        if time.monotonic() > deadline:
            late = [w.id for w in workers if w.id not in plane.workers]
            raise TimeoutError(f"{', '.join(late)} not up after {timeout:g} s:\n{workers[0].tail()}")
        time.sleep(0.1)


def _died(workers: list[WorkerProcess]) -> str:
    """What the workers that exited on their own said last ("" if none did)."""
    dead = [w for w in workers if not w.stopped and w.process.poll() is not None]
    return "\n".join(f"{w.id} exited ({w.process.returncode}):\n{w.tail()}" for w in dead)
