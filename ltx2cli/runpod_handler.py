"""RunPod serverless worker: the original ComfyUI service's request schema on ltx2's own planner and renderer.

    python -m ltx2cli.runpod_handler                                            # on RunPod
    python -m ltx2cli.runpod_handler --rp_serve_api --rp_api_host 127.0.0.1    # the SDK's local /run, /runsync

A request's `input` becomes the same Job the CLI plans (jobs.ALIASES map the original field names), so a bad
request fails with the CLI's messages, as one code-prefixed line, before any model work; so does one over the
worker's limits (limits.py). Inputs must be http(s):// or gs:// URLs and are fetched under a strict policy (see
public_only.py); the MP4 goes to gs://$LTX2_GCS_BUCKET/$LTX2_GCS_PREFIX.
The runpod SDK is imported only here.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .engine.model_source import MODEL_ENV, TINY
from .errors import Failure, ModelError, Problem, failure
from .jobs import ALIASES, KEYFRAME_ALIASES
from .limits import Limits
from .manifest import RawJob, read_request
from .plan import PlanContext, plan_jobs
from .presets import PresetSet, load_presets
from .sinks import output_name, sink_for
from .sources import REMOTE_SCHEMES
from .spec import RenderSpec
from .storage import FetchPolicy, InputCache

DEFAULT_MODEL_DIR = "/runpod-volume/ltx2"  # RunPod mounts an endpoint's network volume at /runpod-volume
BUCKET_ENV, PREFIX_ENV = "LTX2_GCS_BUCKET", "LTX2_GCS_PREFIX"
DEFAULT_PREFIX = "ugc_media/{job_id}/ltx2_videos/"  # where the original service put its videos
ALLOW_PRIVATE_ENV, ALLOWED_HOSTS_ENV = "LTX2_ALLOW_PRIVATE_URLS", "LTX2_ALLOWED_HOSTS"
ALLOW_CPU_ENV = "LTX2_ALLOW_CPU"
PLAN_SECONDS_ENV, DEFAULT_PLAN_SECONDS = "LTX2_PLAN_SECONDS", 10.0  # the clip length the start plan is chosen for
KEY_JSON_ENV, KEY_FILE_ENV = "GOOGLE_APPLICATION_CREDENTIALS_JSON", "GOOGLE_APPLICATION_CREDENTIALS"
STEP_INTERVAL = 2.0  # seconds between denoising-step updates: each one is an HTTP post to RunPod
# Errors after which the CUDA context is unusable: the next job on this worker would fail too. Plain OOM is not one.
CUDA_POISONED = re.compile(
    r"CUDA error|device-side assert|cudaError\w+|illegal memory access|CUBLAS_STATUS_\w+|CUDNN_STATUS_\w+", re.I
)
ORIGINAL_NAMES = {v: k for k, v in ALIASES.items() if v in ("image", "audio", "preset")}  # for fields left out
ORIGINAL_KEYFRAME_NAMES = {v: k for k, v in KEYFRAME_ALIASES.items()}
WORKER_FIELDS = {"output": f"is chosen by the worker ({BUCKET_ENV}, {PREFIX_ENV}); leave it out"}


@dataclass(frozen=True)
class Config:
    model_dir: str
    bucket: str
    prefix: str
    policy: FetchPolicy
    allow_cpu: bool = False  # real weights on a CPU: minutes per step and ~130 GB of RAM; only on request
    limits: Limits = field(default_factory=Limits)
    unreadable: str | None = None  # a setting that could not be read: every request answers it

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Config:
        hosts = frozenset(h.strip().lower() for h in env.get(ALLOWED_HOSTS_ENV, "").split(",") if h.strip())
        try:  # never raise here: a worker that crashes at start only makes RunPod restart it in a loop
            limits, unreadable = Limits.from_env(env), None
        except ValueError as e:
            limits, unreadable = Limits(), str(e)
        return cls(
            model_dir=env.get(MODEL_ENV) or DEFAULT_MODEL_DIR,
            bucket=env.get(BUCKET_ENV, "").strip(),
            prefix=env.get(PREFIX_ENV) or DEFAULT_PREFIX,
            policy=FetchPolicy(allow_private=env.get(ALLOW_PRIVATE_ENV) == "1", allowed_hosts=hosts),
            allow_cpu=env.get(ALLOW_CPU_ENV) == "1",
            limits=limits,
            unreadable=unreadable,
        )

    def output(self, job_id: str) -> str:
        """The planner's `output` template: {job_id} is the RunPod job id, the rest ({id}, {mode}...) the planner's."""
        prefix = self.prefix.replace("{job_id}", job_id).lstrip("/")
        if not prefix.lower().endswith((".mp4", "/")):
            prefix += "/"
        return f"gs://{self.bucket}/{prefix}"

    def problem(self) -> str | None:
        """Why this configuration cannot deliver anything, or None."""
        if self.unreadable:
            return Failure("E_INTERNAL", self.unreadable).api()
        if not self.bucket:
            return Failure("E_STORAGE", f"{BUCKET_ENV} is not set: the worker has nowhere to upload videos").api()
        try:
            output_name(f"gs://{self.bucket}/probe.mp4", Path.cwd())
        except ValueError as e:
            return Failure("E_STORAGE", f"{BUCKET_ENV}={self.bucket!r}: {e}").api()
        template = self.output("job")
        template += "{id}.mp4" if template.endswith("/") else ""
        try:  # the planner fills these placeholders; any other one would fail every request
            output_name(template.format(id="job", job_id="job", mode="lipsync", preset="fast", seed=0), Path.cwd())
        except (KeyError, IndexError, ValueError) as e:
            why = f"{PREFIX_ENV}={self.prefix!r} does not make a gs:// object name: {e!r}"
            return Failure("E_STORAGE", why).api()
        return None


class Worker:
    """Models loaded once; every request planned like a manifest job, rendered, uploaded."""

    def __init__(self, config: Config, renderer: Any | None, presets: PresetSet, broken: str | None = None):
        self.config, self.renderer, self.presets = config, renderer, presets
        self.broken = broken  # set: the worker stays up and answers every request with this error

    @property
    def _version(self) -> str | None:
        """The loaded weights' release: its image CRF default and LoRAs apply to every request."""
        return self.renderer.models.version if self.renderer is not None else None

    @classmethod
    def start(cls, config: Config) -> Worker:
        """Load the models and presets; never raises (a crash here would only make RunPod restart us in a loop)."""
        presets, problems = load_presets()
        for p in problems:
            log(f"preset problem: {p}")
        broken = config.problem() or key_file_from_env(os.environ)
        renderer = None
        if broken is None:
            memory = _budget(config.model_dir)
            renderer, broken = _load(config.model_dir, config.allow_cpu, presets, memory)
        if broken:
            log(f"cannot render, every request will fail with: {broken}")
        return cls(config, renderer, presets, broken)

    def handle(self, job: dict[str, Any]) -> dict[str, Any]:
        """The RunPod handler: {"id", "input"} -> the result, or {"error": "E_CODE: one line"}."""
        try:
            return self._handle(job, _Progress(_sender(job)))
        except Exception as e:  # anything unforeseen still answers one line; the traceback goes to the log only
            traceback.print_exc()
            return _failure(failure(e))

    def _handle(self, job: dict[str, Any], progress: _Progress) -> dict[str, Any]:
        from .run_options import RunOptions
        from .stages import render_job

        if self.broken:
            return {"error": self.broken}
        start = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="ltx2-job-") as tmp:  # inputs and the staged MP4, gone after
            cache = InputCache(Path(tmp) / "inputs", self.config.policy)
            progress.stage("fetch")
            spec, error = self.plan(job, cache)
            if spec is None:
                return {"error": error}
            memory, room = None, self.renderer.models.room
            if room is not None:  # this job's plan on this GPU, before any model work
                from .engine.residency import fit_request

                memory, why = fit_request(room, self.renderer.models, spec)
                if memory is None:
                    return {"error": Failure("E_INPUT", why).api()}
            planned = time.perf_counter() - start
            opts = RunOptions(staging_dir=Path(tmp) / "out", fetch=cache.get, debug=True, memory=memory)
            result = render_job(self.renderer, spec, opts, on_step=progress.step, on_stage=progress.stage)
        if result.failure is not None:
            return _failure(result.failure)
        timings = {"plan": round(planned, 4), **result.timings, "total": round(time.perf_counter() - start, 4)}
        return _output(spec, result.uploaded or {}, timings)

    def plan(self, job: dict[str, Any], cache: InputCache) -> tuple[RenderSpec | None, str]:
        """(spec, "") or (None, "E_INPUT: ..."): the CLI's checks plus the worker's own, inputs fetched and probed."""
        request = job.get("input")
        if not isinstance(request, dict):
            why = f"input must be a JSON object of job fields, got {type(request).__name__}"
            return None, Failure("E_INPUT", why).api()
        raw, problems = read_request({"id": str(job.get("id", "job")), "input": request})
        if raw is None or problems:
            return None, _describe(problems, request)
        # Before planning: planning would read a local path, and fetches what an over-limit request names.
        problems = _worker_checks(raw) + self.config.limits.check_request(raw)
        if problems:
            return None, _describe(problems, request)
        raw.data["output"] = self.config.output(str(job.get("id", "job")))
        specs, problems = plan_jobs([raw], PlanContext(self.presets, cache=cache, model_version=self._version))
        if problems or not specs or not isinstance(spec := specs[0], RenderSpec):  # fetched: a preview has problems
            return None, _describe(problems, request)
        if problems := self.config.limits.check_spec(raw, spec):  # the audio's length, the preset's steps...
            return None, _describe(problems, request)
        from .weights.fit import lora_problems

        # The volume's LoRA files, checked before anything renders: a LoRA for another model is the volume's fault.
        if misfits := lora_problems([spec], self.config.model_dir):
            return None, Failure("E_MODEL", "; ".join(p.message for p in misfits)).api()
        for w in spec.warnings:
            log(f"{spec.id}: {w}")
        return spec, ""


def _budget(model_dir: str) -> Any | None:
    """engine.residency.Budget: this GPU's memory and the model's configs (None without a GPU, or when the model
    cannot be found: loading it says why)."""
    from .engine import residency
    from .engine.model_source import resolve_model

    try:
        return residency.worker_budget(resolve_model(model_dir))
    except Exception:
        return None


def _load(
    model_dir: str, allow_cpu: bool = False, presets: PresetSet | None = None, memory: Any = None
) -> tuple[Any | None, str | None]:
    """(renderer, None) or (None, "E_MODEL: ..."). With a memory budget (a GPU) the models load in host memory and
    follow the plan that fits the default preset for LTX2_PLAN_SECONDS (a request that needs a leaner one moves
    them to it; one no plan fits is refused before any model work)."""
    import torch

    from .engine import residency
    from .engine.compile import COMPILE_ENV, CompileMode
    from .engine.loader import load_renderer
    from .engine.model_source import resolve_model
    from .presets import DEFAULT_PRESET

    mode = os.environ.get(COMPILE_ENV, "auto").strip().lower()
    if mode not in CompileMode.__members__:
        return None, Failure("E_MODEL", f"{COMPILE_ENV}={mode!r} is not one of auto, on, off").api()
    try:
        resolve_model(model_dir)
        if model_dir != TINY and not allow_cpu and not torch.cuda.is_available():
            # Without this, a host whose driver is too old for this torch build would load 60 GB into RAM and crawl.
            cuda = torch.version.cuda or "none"
            why = (
                f"no CUDA GPU visible to torch {torch.__version__} (built for CUDA {cuda}): check the GPU "
                f"type and that the host driver supports CUDA {cuda}; {ALLOW_CPU_ENV}=1 renders on the CPU"
            )
            return None, Failure("E_MODEL", why).api()
        start = None
        if memory is not None:
            seconds = float(os.environ.get(PLAN_SECONDS_ENV, DEFAULT_PLAN_SECONDS))
            start = residency.start_plan(memory, (presets or load_presets()[0]).lookup(DEFAULT_PRESET), seconds)
            log(f"memory plan {start.plan.label} for {memory.gib:.0f} GiB ({seconds:g} s {DEFAULT_PRESET})")
        # A worker lives for many requests: `auto` compiles on a GPU (the first request of each clip shape pays ~15 s).
        renderer = load_renderer(model_dir, start, mode, None, log)
        renderer.models.room = memory  # each request is planned against it (Worker._handle)
        return renderer, None
    except Exception as e:  # ModelError, or CUDA/driver trouble: either way this worker cannot render
        message = str(e) if isinstance(e, ModelError) else f"cannot load models from {model_dir}: {e!r}"
        return None, Failure("E_MODEL", message).api()


def key_file_from_env(env: MutableMapping[str, str]) -> str | None:
    """RunPod secrets arrive as environment variables, the Google client wants a key file: write one (mode 0600)
    from GOOGLE_APPLICATION_CREDENTIALS_JSON unless GOOGLE_APPLICATION_CREDENTIALS is set. -> a problem or None."""
    content = env.get(KEY_JSON_ENV)
    if not content or env.get(KEY_FILE_ENV):
        return None
    try:
        json.loads(content)
    except ValueError as e:
        where = f"{e.__class__.__name__} at char {getattr(e, 'pos', '?')}"
        return Failure("E_STORAGE", f"{KEY_JSON_ENV} is not valid JSON ({where})").api()
    fd, path = tempfile.mkstemp(prefix="gcs-key-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        f.write(content)
    env[KEY_FILE_ENV] = path
    return None


def _worker_checks(raw: RawJob) -> list[Problem]:
    """Requests come from the network: no local paths, no LoRA files by path, no choosing where output goes."""
    data, problems = raw.data, []
    for key, why in WORKER_FIELDS.items():
        if key in data:
            problems.append(raw.problem((key,), why))
    inputs: list[tuple[tuple, Any]] = [(("image",), data.get("image")), (("audio",), data.get("audio"))]
    keyframes = data.get("keyframes")
    if isinstance(keyframes, list):
        inputs += [(("keyframes", i, "image"), k.get("image")) for i, k in enumerate(keyframes) if isinstance(k, dict)]
    for path, value in inputs:
        if isinstance(value, str) and urlsplit(value.strip()).scheme.lower() not in REMOTE_SCHEMES:
            shown = value if len(value) <= 60 else value[:57] + "..."
            problems.append(raw.problem(path, f"must be an http(s):// or gs:// URL (no local files), got {shown!r}"))
    loras = data.get("loras")
    if isinstance(loras, list):
        for i, lo in enumerate(loras):
            if isinstance(lo, dict) and "path" in lo:
                problems.append(raw.problem(("loras", i, "path"), "LoRAs are given by name here, not by path"))
    return problems


def _describe(problems: list[Problem], request: dict[str, Any]) -> str:
    """Every problem on one line, each as `field message`, fields named as the client wrote them."""
    parts = [f"{_as_written(p.field, request)} {p.message}" if p.field else p.message for p in problems]
    return Failure("E_INPUT", "; ".join(parts or ["invalid request"])).api()


def _as_written(field: str, request: dict[str, Any]) -> str:
    """A field the client left out, named as the original service named it (image_url, not image)."""
    if field in ORIGINAL_NAMES and field not in request:
        return ORIGINAL_NAMES[field]
    m = re.fullmatch(r"keyframes\[(\d+)\]\.(\w+)", field)
    keyframes = request.get("keyframes")
    if m and m[2] in ORIGINAL_KEYFRAME_NAMES and isinstance(keyframes, list) and int(m[1]) < len(keyframes):
        kf = keyframes[int(m[1])]
        if isinstance(kf, dict) and m[2] not in kf:
            return f"keyframes[{m[1]}].{ORIGINAL_KEYFRAME_NAMES[m[2]]}"
    return field


def _output(spec: RenderSpec, uploaded: dict[str, Any], timings: dict[str, float]) -> dict[str, Any]:
    uri = uploaded.get("uri") or spec.output
    frames = spec.output_frames
    out = {
        "video_url": uploaded.get("url") or sink_for(uri).url,
        "gcs_uri": uri,
        "duration": round(frames / spec.fps, 4),  # the MP4's length: output frames / fps
        "num_frames": frames,  # frames in the MP4 (the 8k+1 rendered count is cut back to this)
        "fps": spec.fps,
        "width": spec.width,
        "height": spec.height,
        "seed": spec.seed,
        "timings": timings,
    }
    if spec.window is not None:  # a clip longer than one window (engine.windows)
        out["windows"] = spec.window.count
    if spec.warnings:
        out["warnings"] = spec.warnings
    return out


def _failure(what: Failure) -> dict[str, Any]:
    out: dict[str, Any] = {"error": what.api()}
    if what.code != "E_OOM" and CUDA_POISONED.search(what.message) and "out of memory" not in what.message.lower():
        out["refresh_worker"] = True  # RunPod replaces this worker after the job
    return out


class _Progress:
    """Stage changes and (throttled) denoising steps, sent to RunPod's /status as the job's interim output."""

    def __init__(self, send: Callable[[dict[str, Any]], None] | None, interval: float = STEP_INTERVAL):
        self.send, self.interval = send, interval
        self.current: str | None = None
        self.last_step = 0.0

    def stage(self, name: str) -> None:
        if name != self.current:
            self.current = name
            self._send({"stage": name})

    def step(self, done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - self.last_step >= self.interval:
            self.last_step = now
            self._send({"stage": "denoise", "step": done, "steps": total})

    def _send(self, update: dict[str, Any]) -> None:
        if self.send is not None:
            self.send(update)


def _sender(job: dict[str, Any]) -> Callable[[dict[str, Any]], None] | None:
    """progress_update posts to RunPod's job-done webhook; without one (the local API server) there is no one to
    tell, and the SDK would only log a failed post per update."""
    if not os.environ.get("RUNPOD_WEBHOOK_POST_OUTPUT"):
        return None
    import runpod

    return lambda update: runpod.serverless.progress_update(job, update)


def log(message: str) -> None:
    print(f"ltx2 worker: {message}", file=sys.stderr, flush=True)


def main() -> None:
    import runpod

    worker = Worker.start(Config.from_env())
    runpod.serverless.start({"handler": worker.handle})


if __name__ == "__main__":
    main()
