"""RunPod serverless worker: the original ComfyUI service's request schema on ltx2's own planner and renderer.

    python -m ltx2cli.worker.handler                                            # on RunPod
    python -m ltx2cli.worker.handler --rp_serve_api --rp_api_host 127.0.0.1    # the SDK's local /run, /runsync

A request's `input` becomes the same Job the CLI plans (jobs.job.ALIASES map the original field names), so a bad
request fails with the CLI's messages, as one code-prefixed line, before any model work; so does one over the
worker's limits (jobs.limits). Inputs must be http(s):// or gs:// URLs and are fetched under a strict policy (see
storage.public_only); the MP4 goes to gs://$LTX2_GCS_BUCKET/$LTX2_GCS_PREFIX.
Here: the Worker (models, per-request plan and memory fit, render) and the entry point; worker.config reads the
environment, worker.schema holds the original service's request and response shapes, worker.progress the updates.
The runpod SDK is imported only here.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import Failure, Ltx2Error, ModelError, UsageError, failure
from ..jobs.manifest import read_request
from ..jobs.presets import PresetSet, load_presets
from ..jobs.spec import RenderSpec
from ..plan.context import PlanContext
from ..plan.resolve import plan_jobs
from ..storage.fetch import InputCache
from ..storage.sinks import sink_for
from ..synthetic.tiny import resolve_tiny
from .config import ALLOW_CPU_ENV, DEFAULT_PLAN_SECONDS, Config, key_file_from_env
from .progress import Progress
from .schema import client_extras, describe, failure_result, render_result, with_schema_problems, worker_checks


class Worker:
    """Models loaded once; every request planned like a manifest job, rendered, uploaded."""

    def __init__(self, config: Config, renderer: Any | None, presets: PresetSet, broken: str | None = None):
        self.config, self.renderer, self.presets = config, renderer, presets
        self.broken = broken  # set: the worker stays up and answers every request with this error
        self.bucket_seen = False  # the output bucket answered once: not asked again before each render
        # seconds from start to models ready, reported with the first request (whose first steps also compile): a
        # RunPod cold start is this plus that request's total
        self.cold_start_s: float | None = None

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
        renderer, t0 = None, time.perf_counter()
        if broken is None:
            try:  # `tiny`: the synthetic model's folder (a CPU renders it: it is small)
                model = resolve_tiny(config.model_dir) or config.model_dir
                config = replace(config, model_dir=model, allow_cpu=config.allow_cpu or model != config.model_dir)
            except Exception as e:
                broken = Failure("E_MODEL", f"cannot build the tiny model: {e!r}").api()
        if broken is None:
            memory = _budget(config.model_dir, config.vram)
            renderer, broken = _load(config.model_dir, config.allow_cpu, presets, memory, config.plan_seconds)
        if broken:
            log(f"cannot render, every request will fail with: {broken}")
            return cls(config, renderer, presets, broken)
        worker = cls(config, renderer, presets)
        worker.cold_start_s = round(time.perf_counter() - t0, 2)
        log(f"ready in {worker.cold_start_s:.1f} s")
        return worker

    def handle(self, job: dict[str, Any]) -> dict[str, Any]:
        """The RunPod handler: {"id", "input"} -> the result, or {"error": "E_CODE: one line"}."""
        try:
            return self._handle(job, Progress(_sender(job)))
        except Exception as e:  # anything unforeseen still answers one line; the traceback goes to the log only
            traceback.print_exc()
            return failure_result(failure(e))

    def _handle(self, job: dict[str, Any], progress: Progress) -> dict[str, Any]:
        from ..batch.options import RunOptions
        from ..batch.stages import render_job

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
                from ..engine.memory.residency import fit_request, job_loras

                memory, why = fit_request(room, self.renderer.models, spec)
                if memory is None:
                    return {"error": Failure("E_INPUT", why).api()}
                # the plan counted this request's LoRAs only: earlier requests' adapters leave the GPU
                self.renderer.models.forget_loras(job_loras(spec.loras, spec.two_stage))
            planned = time.perf_counter() - start
            opts = RunOptions(staging_dir=Path(tmp) / "out", fetch=cache.get, debug=True, memory=memory)
            result = render_job(self.renderer, spec, opts, on_step=progress.step, on_stage=progress.stage)
        if result.failure is not None:
            return failure_result(result.failure)
        timings = {"plan": round(planned, 4), **result.timings, "total": round(time.perf_counter() - start, 4)}
        if self.cold_start_s is not None:  # the first request: the worker's own start, load (and compile) counted
            timings["cold_start"], self.cold_start_s = self.cold_start_s, None
        return render_result(spec, result.uploaded or {}, timings)

    def plan(self, job: dict[str, Any], cache: InputCache) -> tuple[RenderSpec | None, str]:
        """(spec, "") or (None, "E_INPUT: ..."): the CLI's checks plus the worker's own, inputs fetched and probed."""
        request = job.get("input")
        if not isinstance(request, dict):
            why = f"input must be a JSON object of job fields, got {type(request).__name__}"
            return None, Failure("E_INPUT", why).api()
        raw, problems = read_request({"id": str(job.get("id", "job")), "input": request})
        if raw is None or problems:
            return None, describe(problems, request)
        ignored = client_extras(raw)
        # Before planning: planning would read a local path, and fetches what an over-limit request names.
        problems = worker_checks(raw, self.config.bucket) + self.config.limits.check_request(raw)
        if problems:
            return None, describe(with_schema_problems(raw, problems), request)
        raw.data.setdefault("output", self.config.output(str(job.get("id", "job"))))
        specs, problems = plan_jobs([raw], PlanContext(self.presets, cache=cache, model_version=self._version))
        if problems or not specs or not isinstance(spec := specs[0], RenderSpec):  # fetched: a preview has problems
            return None, describe(problems, request)
        if problems := self.config.limits.check_spec(raw, spec):  # the audio's length, the preset's steps...
            return None, describe(problems, request)
        if not self.bucket_seen:  # a bucket that is not there would fail every request, after its render
            try:
                sink_for(spec.output).ready(look=True)
            except Ltx2Error as e:
                return None, Failure(e.code, str(e)).api()
            self.bucket_seen = True
        from ..weights.fit import model_problems

        # The volume's LoRA files, checked before anything renders: a LoRA for another model is the volume's fault.
        if misfits := model_problems([spec], self.config.model_dir, by_path=False):
            return None, Failure("E_MODEL", "; ".join(p.message for p in misfits)).api()
        if ignored:
            spec = spec.model_copy(update={"warnings": [*spec.warnings, *ignored]})
        for w in spec.warnings:
            log(f"{spec.id}: {w}")
        return spec, ""


def _budget(model_dir: str, vram: str | None = None) -> Any | None:
    """engine.memory.residency.Budget: this GPU's memory and the model's configs (None without a GPU, or when the model
    cannot be found: loading it says why)."""
    from ..engine.memory import residency
    from ..weights.source import resolve_model

    try:
        return residency.worker_budget(resolve_model(model_dir), vram)
    except Exception:
        return None


def _load(
    model_dir: str,
    allow_cpu: bool = False,
    presets: PresetSet | None = None,
    memory: Any = None,
    plan_seconds: float = DEFAULT_PLAN_SECONDS,
) -> tuple[Any | None, str | None]:
    """(renderer, None) or (None, "E_MODEL: ..."). With a memory budget (a GPU) the models load in host memory and
    follow the plan that fits the default preset for LTX2_PLAN_SECONDS (a request that needs a leaner one moves
    them to it; one no plan fits is refused before any model work)."""
    import torch

    from ..engine.loader import load_renderer
    from ..engine.memory import residency
    from ..engine.models.attention import ATTENTION_ENV, AttentionChoice
    from ..engine.models.compile import COMPILE_ENV, CompileMode
    from ..jobs.presets import DEFAULT_PRESET
    from ..weights.source import resolve_model

    chosen: dict[str, str] = {}  # LTX2_COMPILE, LTX2_ATTENTION: auto when unset
    for variable, choices in ((COMPILE_ENV, CompileMode), (ATTENTION_ENV, AttentionChoice)):
        chosen[variable] = value = os.environ.get(variable, "auto").strip().lower()
        if value not in choices.__members__:
            return None, Failure(
                "E_MODEL", f"{variable}={value!r} is not one of {', '.join(choices.__members__)}"
            ).api()
    try:
        resolve_model(model_dir)
        if not allow_cpu and not torch.cuda.is_available():
            # Without this, a host whose driver is too old for this torch build would load 60 GB into RAM and crawl.
            cuda = torch.version.cuda or "none"
            why = (
                f"no CUDA GPU visible to torch {torch.__version__} (built for CUDA {cuda}): check the GPU "
                f"type and that the host driver supports CUDA {cuda}; {ALLOW_CPU_ENV}=1 renders on the CPU"
            )
            return None, Failure("E_MODEL", why).api()
        start = None
        if memory is not None:
            start = residency.start_plan(memory, (presets or load_presets()[0]).lookup(DEFAULT_PRESET), plan_seconds)
            log(f"memory plan {start.plan.label} for {memory.gib:.0f} GiB ({plan_seconds:g} s {DEFAULT_PRESET})")
        # A worker lives for many requests: `auto` compiles on a GPU (the first request of each clip shape pays ~20 s).
        renderer = load_renderer(model_dir, start, chosen[COMPILE_ENV], None, log, chosen[ATTENTION_ENV])
        renderer.models.room = memory  # each request is planned against it (Worker._handle)
        return renderer, None
    except Exception as e:  # ModelError, or CUDA/driver trouble: either way this worker cannot render
        message = str(e) if isinstance(e, ModelError | UsageError) else f"cannot load models from {model_dir}: {e!r}"
        return None, Failure("E_MODEL", message).api()


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
