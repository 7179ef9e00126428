"""The original ComfyUI service's request and response shapes: what a network request may not ask for, problems
named as the client wrote the fields, the result JSON, and error answers (with RunPod's refresh_worker flag)."""

from __future__ import annotations

import difflib
import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from ..errors import Failure, Problem
from ..jobs.job import ALIASES, KEYFRAME_ALIASES, Job
from ..jobs.manifest import RawJob
from ..jobs.problems import schema_problems
from ..jobs.spec import RenderSpec
from ..storage.sinks import sink_for
from ..storage.sources import REMOTE_SCHEMES
from .config import BUCKET_ENV, PREFIX_ENV

# Errors after which the CUDA context is unusable: the next job on this worker would fail too. Plain OOM is not one.
CUDA_POISONED = re.compile(
    r"CUDA error|device-side assert|cudaError\w+|illegal memory access|CUBLAS_STATUS_\w+|CUDNN_STATUS_\w+", re.I
)
ORIGINAL_NAMES = {v: k for k, v in ALIASES.items() if v in ("image", "audio", "preset")}  # for fields left out
ORIGINAL_KEYFRAME_NAMES = {v: k for k, v in KEYFRAME_ALIASES.items()}
_KNOWN = sorted(set(Job.model_fields) | set(ALIASES))


def worker_checks(raw: RawJob, bucket: str) -> list[Problem]:
    """Requests come from the network: no local paths, no LoRA files by path, output only in the worker's bucket
    (`ltx2 batch --endpoint` sends the manifest's gs:// output; the original service's clients send none)."""
    data, problems = raw.data, []
    output = data.get("output")
    if output is not None and not (
        isinstance(output, str) and output.startswith(f"gs://{bucket}/") and output.lower().endswith(".mp4")
    ):
        why = (
            f"must be a gs://{bucket}/....mp4 object in this worker's bucket ({BUCKET_ENV}), or left out ({PREFIX_ENV})"
        )
        problems.append(raw.problem(("output",), why))
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


def client_extras(raw: RawJob) -> list[str]:
    """Take out the top-level fields this API does not know and that are no near miss of one it does: a client's
    own metadata (a user id, a trace id) that the original service let pass. -> a warning per field. A near
    miss (`promt`) stays in, and the planner refuses it naming the field meant."""
    extras = [k for k in raw.data if k not in _KNOWN and not difflib.get_close_matches(k, _KNOWN, n=1, cutoff=0.75)]
    for key in extras:
        del raw.data[key]
    return [f"{key} is not a field of this API and was ignored" for key in extras]


def with_schema_problems(raw: RawJob, problems: list[Problem]) -> list[Problem]:
    """`problems` and the request's schema problems on other fields, so one answer names everything wrong (the
    planner, which would find them, does not run on a request that names a local file)."""
    try:
        Job.model_validate(raw.data)
    except ValidationError as e:
        seen = {p.field for p in problems}
        problems = problems + [p for p in schema_problems(raw, e) if p.field not in seen]
    return problems


def describe(problems: list[Problem], request: dict[str, Any]) -> str:
    """Every problem on one line, each as `field message`, fields named as the client wrote them. E_INPUT, unless
    the world is at fault for every one of them alike (E_STORAGE: a bucket that refuses)."""
    parts = [f"{_as_written(p.field, request)} {p.message}" if p.field else p.message for p in problems]
    codes = {p.code for p in problems}
    code = codes.pop() if len(codes) == 1 and None not in codes else "E_INPUT"
    return Failure(code, "; ".join(parts or ["invalid request"])).api()


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


def render_result(spec: RenderSpec, uploaded: dict[str, Any], timings: dict[str, float]) -> dict[str, Any]:
    """A rendered job's answer, as the original service shaped it."""
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
    if spec.window is not None:  # a clip longer than one window (jobs.windows)
        out["windows"] = spec.window.count
    if spec.warnings:
        out["warnings"] = spec.warnings
    return out


def failure_result(what: Failure) -> dict[str, Any]:
    """A failed job's answer: {"error": "E_CODE: one line"}, plus refresh_worker when the GPU is left unusable."""
    out: dict[str, Any] = {"error": what.api()}
    if what.code != "E_OOM" and CUDA_POISONED.search(what.message) and "out of memory" not in what.message.lower():
        out["refresh_worker"] = True  # RunPod replaces this worker after the job
    return out
