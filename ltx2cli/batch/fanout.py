"""`ltx2 batch --endpoint runpod:ID`: a batch's jobs rendered by a RunPod endpoint's workers instead of this machine.

The jobs are planned and checked here exactly as for a local batch; each is then sent as a request the worker
plans again (its own fields as the manifest gave them, local inputs as the URLs they were staged to), at most
`concurrency` at a time, and polled until it ends. Journal, --json lines, summary, exit codes and contact sheet
are a local batch's.

Resume: the RunPod job id is journaled at submission ("submitted"). A rerun skips what is done (the journal, else
the output's sidecar, by the hash of the spec the worker plans: `remote_spec`), polls what is still in flight
instead of sending it again, and sends again only what RunPod no longer knows (results expire after ~30 min) and
whose output is not there.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ERRORS, Failure, Problem, failure
from ..jobs.cost import render_cost
from ..jobs.spec import RenderSpec, SpecPreview
from ..storage.sinks import Sink, sidecar_path, sink_for
from ..storage.sources import is_remote
from ..storage.staging import download, stage, staged_uri
from .endpoint import FINAL, Endpoint, EndpointError, Gone
from .journal import read_journal
from .results import JobResult, Recorder, Run
from .selection import already_done
from .signals import StopAfterJob

if TYPE_CHECKING:
    from ..jobs.manifest import RawJob
    from ..jobs.presets import PresetSet
    from ..output import Output
    from .options import RunOptions
    from .progress import JobProgress

DEFAULT_CONCURRENCY = 8  # when /health names no workers (an endpoint scaled to zero)
INPUT_FIELDS = ("image", "audio")  # a job's own input fields; keyframes[].image too
ERROR_CODE = re.compile(r"^(E_[A-Z]+):\s*(.*)$", re.S)
# Execution timeout: a floor for a short clip's cold caches, then a generous rate (render_cost's token-steps; a
# 10-s 768x512 clip is about 1.1 million, a minute or two on an H100): RunPod's limit is for a worker stuck.
TIMEOUT_FLOOR_S, COST_PER_S, TIMEOUT_CAP_S = 300, 2000, 24 * 3600
QUEUE_ALLOWANCE_S = 2 * 3600  # ttl = execution timeout + this: time to wait for a worker to start


@dataclass(frozen=True)
class Fanout:
    """How a batch goes through the endpoint."""

    endpoint: Endpoint
    stage: str | None = None  # gs://bucket/prefix/: where local inputs are uploaded for the workers
    download: bool = False  # fetch each MP4 (and its sidecar) into the output folder
    concurrency: int | None = None  # jobs in flight at once; None: the endpoint's workers, else 8
    retries: int = 3  # TIMED_OUT jobs sent again (calls retry 429/5xx/dropped connections on their own)
    poll_s: float = 0.5  # each job in flight is asked twice a second: a result is seen ~0.25 s after it is posted
    # A job keeps rendering on RunPod whether or not its status can be read: a poll that fails (after its own
    # retries) is tried again on the next round, and the job fails only once its status went unread this long.
    patience_s: float = 300.0


@dataclass
class Remote:
    """One job on its way through the endpoint."""

    spec: RenderSpec  # as the worker plans it (remote_spec): its hash is what the journal and the sidecar hold
    request: dict[str, Any]
    sink: Sink
    fetch_back: bool  # download the MP4: a local output, or --download
    staged: dict[str, str] = field(default_factory=dict)  # local input -> its URL
    rp_id: str | None = None
    attempts: int = 0
    start: float = 0.0
    shown: str = ""
    unread_since: float | None = None  # when its status calls began to fail, None while they answer


def check_fanout(specs: list[SpecPreview], raws: dict[str, RawJob], fan: Fanout, presets: PresetSet) -> list[Problem]:
    """What would keep jobs from the endpoint: local inputs with no --stage, LoRAs given by path, presets only this
    machine has (a worker has the built-in ones)."""
    problems = []
    for spec in specs:
        raw = raws[spec.source]
        local = [v for v in _inputs(raw.data) if not is_remote(v)]
        if local and not fan.stage:
            why = (
                f"{local[0]} is a local file: --endpoint needs --stage gs://BUCKET/prefix/ to upload it for the workers"
            )
            problems.append(Problem(spec.source, why, job=spec.id))
        if any(lo.path for lo in spec.loras):
            why = "a LoRA given by path cannot reach --endpoint's workers; name it (loras[].name)"
            problems.append(Problem(spec.source, why, job=spec.id, field="loras"))
        if presets.origin(spec.preset) != "built-in":
            where = presets.origin(spec.preset)
            why = f"preset {spec.preset!r} comes from {where}; --endpoint's workers have the built-in presets only"
            problems.append(Problem(spec.source, why, job=spec.id, field="preset"))
    return problems


def run_remote(specs: list[SpecPreview], raws: dict[str, RawJob], out: Output, opts: RunOptions, fan: Fanout) -> Run:
    """The batch through the endpoint; returns the same Run a local batch does. Ctrl-C cancels the jobs in flight."""
    from .progress import JobProgress

    run = Run()
    order = {spec.id: i for i, spec in enumerate(specs)}
    earlier = submitted(opts.journal.path) if opts.journal is not None else {}
    with JobProgress(out, len(specs)) as progress, StopAfterJob() as stop:
        recorder = Recorder(run, progress, opts.journal, out)
        todo = _todo(specs, raws, opts, fan, recorder)
        _fan_out(todo, earlier, out, opts, fan, recorder, progress, stop)
    run.results.sort(key=lambda r: order[r.id])
    return run


def _todo(specs: list[SpecPreview], raws: dict[str, RawJob], opts: RunOptions, fan: Fanout, recorder: Recorder):
    todo: list[Remote] = []
    for spec in specs:
        sink = sink_for(spec.output, opts.staging_dir)
        if not isinstance(spec, RenderSpec):
            failure = opts.unavailable.get(spec.id) or Failure("E_INPUT", "its clip length or size is not known")
            recorder.finished(spec, JobResult(spec.id, "failed", spec.output, failure=failure))
            continue
        staged = {path: staged_uri(Path(path), fan.stage or "") for path in _local_inputs(spec)}
        remote = remote_spec(spec, staged)
        if not opts.force and already_done(remote, sink, opts.journal):
            result = JobResult(spec.id, "skipped", spec.output)
            if fan.download and sink.remote and not sink.local.is_file():  # finished while no client was polling
                _fetch_back(spec.output, sink, result)
            result.local = _local(sink)
            recorder.finished(remote, result)
            continue
        request = _request(raws[spec.source], spec, staged)
        todo.append(Remote(remote, request, sink, fan.download or not sink.remote, staged))
    return todo


def _fan_out(todo, earlier, out, opts, fan, recorder, progress, stop) -> None:
    if not todo:
        return
    limit = fan.concurrency or fan.endpoint.workers() or DEFAULT_CONCURRENCY
    out.log(f"endpoint {fan.endpoint.target.endpoint_id}: {len(todo)} jobs, at most {limit} at a time")
    waiting, flying = list(todo), []
    for job in list(waiting):  # in flight when an earlier run stopped: polled, not sent again
        rp_id = earlier.get((job.spec.id, job.spec.spec_hash()))
        if rp_id is not None:
            waiting.remove(job)
            job.rp_id, job.start = rp_id, time.perf_counter()
            flying.append(job)
    try:
        while waiting or flying:
            if stop.requested:
                _cancel_all(flying, fan, out)
                recorder.run.interrupted = True
                out.error("interrupted: the jobs in flight were cancelled; rerun the same command to resume")
                return
            while waiting and len(flying) < limit and not (opts.fail_fast and recorder.any_failed):
                job = waiting.pop(0)
                if _send(job, fan, opts, recorder):
                    flying.append(job)
            if opts.fail_fast and recorder.any_failed:
                _cancel_all(flying, fan, out)
                out.error("--fail-fast: stopping at the first failed job")
                return
            for job in list(flying):
                if _poll(job, fan, opts, recorder, progress, out):
                    flying.remove(job)
            if flying:
                time.sleep(fan.poll_s)
    except KeyboardInterrupt:  # the second Ctrl-C: cancel and stop now
        _cancel_all(flying, fan, out)
        raise


def _send(job: Remote, fan: Fanout, opts: RunOptions, recorder: Recorder) -> bool:
    """Stage the inputs and submit; False (the job recorded as failed) if either fails."""
    job.start = time.perf_counter()
    try:
        for path, uri in job.staged.items():
            stage(Path(path), uri)
        job.rp_id = fan.endpoint.submit(job.request, policy(job.spec))
    except Exception as e:
        _fail(job, failure(e), recorder)
        return False
    job.attempts += 1
    if opts.journal is not None:
        opts.journal.record("submitted", job.spec.id, spec_hash=job.spec.spec_hash(), endpoint_job=job.rp_id)
    recorder.started(job.spec)
    return True


def _poll(job: Remote, fan: Fanout, opts: RunOptions, recorder: Recorder, progress: JobProgress, out: Output) -> bool:
    """Ask for the job's status once; True when it has ended (its result recorded, or sent again)."""
    try:
        status = fan.endpoint.status(job.rp_id or "")
    except Gone:  # RunPod forgot it: done if its output is there, else it goes again
        if _output_there(job):
            _done(job, {}, recorder)
            return True
        return not _resend(job, fan, opts, recorder, "RunPod no longer knows it")
    except EndpointError as e:
        now = time.monotonic()
        if job.unread_since is None:
            job.unread_since = now
            out.log(f"{job.spec.id}: status unread ({e}); asking again for up to {fan.patience_s:g} s")
        if now - job.unread_since < fan.patience_s:
            return False
        _fail(job, Failure("E_ENDPOINT", f"{e} (its status unread for {fan.patience_s:g} s)"), recorder)
        return True
    job.unread_since = None
    state = str(status.get("status"))
    _show(job, state, status.get("output"), progress, out)
    if state not in FINAL:
        return False
    if state == "COMPLETED":
        output = status.get("output") or {}
        if isinstance(output, dict) and "error" in output:  # a handler's error answer, should RunPod pass it as one
            _fail(job, _worker_failure(output["error"]), recorder)
        else:
            _done(job, output if isinstance(output, dict) else {}, recorder)
        return True
    if state == "FAILED":
        _fail(job, _worker_failure(status.get("error") or status.get("output")), recorder)
        return True
    # TIMED_OUT (over the policy's execution timeout or ttl) or CANCELLED (not by this batch): once more, or fail
    return not _resend(job, fan, opts, recorder, state.lower().replace("_", " "))


def _resend(job: Remote, fan: Fanout, opts: RunOptions, recorder: Recorder, why: str) -> bool:
    """Submit again if retries are left (True: in flight again); else record the failure."""
    if job.attempts > fan.retries:
        _fail(job, Failure("E_ENDPOINT", f"{why} after {job.attempts} tries (--retries {fan.retries})"), recorder)
        return False
    return _send(job, fan, opts, recorder)


def _done(job: Remote, output: dict[str, Any], recorder: Recorder) -> None:
    spec, result = job.spec, JobResult(job.spec.id, "done", job.spec.output)
    uri = output.get("gcs_uri") or (spec.output if job.sink.remote else None)
    result.uploaded = {k: v for k, v in (("uri", uri), ("url", output.get("video_url"))) if v}
    result.timings = dict(output.get("timings") or {})
    if job.fetch_back and uri:
        _fetch_back(uri, job.sink, result)
    result.seconds = round(time.perf_counter() - job.start, 3)
    recorder.finished(spec, result)


def _fetch_back(uri: str, sink: Sink, result: JobResult) -> None:
    """The MP4 at `uri` and its sidecar into the sink's local path; a download that fails fails the job."""
    t0 = time.perf_counter()
    try:
        download(uri, sink.local)
        download(_sidecar_uri(uri), sidecar_path(sink.local))
    except Exception as e:
        result.status, result.failure = "failed", failure(e)
        return
    result.local = str(sink.local)
    result.timings["download"] = round(time.perf_counter() - t0, 4)


def _fail(job: Remote, failure: Failure, recorder: Recorder) -> None:
    result = JobResult(job.spec.id, "failed", job.spec.output, failure=failure)
    result.seconds = round(time.perf_counter() - job.start, 3) if job.start else 0.0
    recorder.finished(job.spec, result)


def _cancel_all(flying: list[Remote], fan: Fanout, out: Output) -> None:
    for job in flying:
        try:
            fan.endpoint.cancel(job.rp_id or "")
        except EndpointError as e:
            out.warning(f"{job.spec.id}: {e}")
    if flying:
        out.log(f"cancelled {len(flying)} jobs in flight: {', '.join(j.spec.id for j in flying)}")


def _show(job: Remote, state: str, output: Any, progress: JobProgress, out: Output) -> None:
    """A line when a job's state or stage changes (the worker's progress updates are its interim output)."""
    stage = output.get("stage") if isinstance(output, dict) and state == "IN_PROGRESS" else None
    shown = f"{state} {stage}" if stage else state
    if shown != job.shown and state not in FINAL:
        job.shown = shown
        out.log(f"{job.spec.id}: {shown.lower().replace('_', ' ')} ({job.rp_id})")


# -- what is sent, and what the worker will plan --------------------------------------------------------------


def remote_spec(spec: RenderSpec, staged: dict[str, str]) -> RenderSpec:
    """The spec as the worker plans it: the same job with its local inputs at their staged URLs (the same bytes:
    inputs_sha256 is unchanged)."""
    keyframes = [kf.model_copy(update={"image": staged.get(kf.image, kf.image)}) for kf in spec.keyframes]
    audio = staged.get(spec.audio, spec.audio) if spec.audio else spec.audio
    return spec.model_copy(update={"keyframes": keyframes, "audio": audio})


def policy(spec: RenderSpec) -> dict[str, int]:
    """RunPod's execution timeout and ttl (milliseconds) for a job, from its estimated cost."""
    timeout = min(TIMEOUT_CAP_S, TIMEOUT_FLOOR_S + render_cost(spec) / COST_PER_S)
    return {"executionTimeout": int(timeout * 1000), "ttl": int((timeout + QUEUE_ALLOWANCE_S) * 1000)}


def _request(raw: RawJob, spec: RenderSpec, staged: dict[str, str]) -> dict[str, Any]:
    """The job's own fields (defaults and command-line settings merged in, as planned here) with local inputs as
    their staged URLs, and the output where the manifest says when it is a gs:// object."""
    data = {k: v for k, v in raw.data.items() if k != "output"}

    def url(value: Any) -> Any:
        if not isinstance(value, str) or is_remote(value):
            return value
        return staged.get(str((raw.base_dir / value).expanduser().resolve()), value)

    for key in INPUT_FIELDS:
        if key in data:
            data[key] = url(data[key])
    if isinstance(data.get("keyframes"), list):
        data["keyframes"] = [
            kf | {"image": url(kf.get("image"))} if isinstance(kf, dict) else kf for kf in data["keyframes"]
        ]
    data["id"] = spec.id
    if spec.output.startswith("gs://"):
        data["output"] = spec.output
    return data


def _inputs(data: dict[str, Any]) -> list[str]:
    values = [data.get(k) for k in INPUT_FIELDS]
    values += [kf.get("image") for kf in data.get("keyframes") or [] if isinstance(kf, dict)]
    return [v for v in values if isinstance(v, str)]


def _local_inputs(spec: RenderSpec) -> list[str]:
    paths = [spec.audio] if spec.audio else []
    paths += [kf.image for kf in spec.keyframes]
    return list(dict.fromkeys(p for p in paths if not is_remote(p)))


def _output_there(job: Remote) -> bool:
    """The output (its sidecar's hash) is there: a gs:// one in its bucket; a local one only once downloaded, so a
    job whose worker wrote to its own bucket and whose status expired before the download is rendered again."""
    return job.sink.done(job.spec.spec_hash(), False)


def _local(sink: Sink) -> str | None:
    return str(sink.local) if sink.local.is_file() else None


def _sidecar_uri(uri: str) -> str:
    return uri.removesuffix(".mp4") + ".json"


def _worker_failure(error: Any) -> Failure:
    """The worker's `E_CODE: message` answer as a Failure (an answer without a code is E_ENDPOINT's)."""
    text = error if isinstance(error, str) else str(error or "the worker gave no reason")
    m = ERROR_CODE.match(text.strip())
    if m and m[1] in ERRORS:
        return Failure(m[1], m[2].strip())
    return Failure("E_ENDPOINT", text.strip()[:500])


def submitted(journal: Path) -> dict[tuple[str, str], str]:
    """(job id, spec hash) -> RunPod job id, for the jobs an earlier run sent and saw no end of."""
    flying: dict[tuple[str, str], str] = {}
    for record in read_journal(journal):
        key = (record.get("id"), record.get("spec_hash"))
        if record.get("event") == "submitted" and record.get("endpoint_job"):
            flying[key] = record["endpoint_job"]  # type: ignore[index]
        elif record.get("event") in ("done", "failed", "skipped"):
            flying.pop(key, None)  # type: ignore[arg-type]
    return flying
