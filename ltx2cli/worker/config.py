"""The RunPod worker's configuration, read from its environment: where models live, where videos go, which URLs it
may fetch, its request limits, and the Google key file written from a RunPod secret."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

from ..engine.memory.vram import VRAM_ENV, parse_vram
from ..errors import Failure, UsageError
from ..jobs.limits import Limits, env_positive
from ..storage.fetch import FetchPolicy
from ..storage.sinks import output_name
from ..weights.source import MODEL_ENV

DEFAULT_MODEL_DIR = "/runpod-volume/ltx2"  # RunPod mounts an endpoint's network volume at /runpod-volume
BUCKET_ENV, PREFIX_ENV = "LTX2_GCS_BUCKET", "LTX2_GCS_PREFIX"
DEFAULT_PREFIX = "ugc_media/{job_id}/ltx2_videos/"  # where the original service put its videos
ALLOW_PRIVATE_ENV, ALLOWED_HOSTS_ENV = "LTX2_ALLOW_PRIVATE_URLS", "LTX2_ALLOWED_HOSTS"
ALLOW_CPU_ENV = "LTX2_ALLOW_CPU"
PLAN_SECONDS_ENV, DEFAULT_PLAN_SECONDS = "LTX2_PLAN_SECONDS", 10.0  # the clip length the start plan is chosen for
KEY_JSON_ENV, KEY_FILE_ENV = "GOOGLE_APPLICATION_CREDENTIALS_JSON", "GOOGLE_APPLICATION_CREDENTIALS"


@dataclass(frozen=True)
class Config:
    model_dir: str
    bucket: str
    prefix: str
    policy: FetchPolicy
    allow_cpu: bool = False  # real weights on a CPU: minutes per step and ~130 GB of RAM; only on request
    limits: Limits = field(default_factory=Limits)
    vram: str | None = None  # $LTX2_VRAM: the GPU size to plan for (None: this GPU's)
    plan_seconds: float = DEFAULT_PLAN_SECONDS  # the clip length the start plan is chosen for
    unreadable: str | None = None  # a setting that could not be read: every request answers it

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Config:
        hosts = frozenset(h.strip().lower() for h in env.get(ALLOWED_HOSTS_ENV, "").split(",") if h.strip())
        limits, plan_seconds, unreadable = Limits(), DEFAULT_PLAN_SECONDS, None
        try:  # never raise here: a worker that crashes at start only makes RunPod restart it in a loop
            limits = Limits.from_env(env)
            parse_vram(None, env)
            plan_seconds = env_positive(env, PLAN_SECONDS_ENV) or DEFAULT_PLAN_SECONDS
        except (ValueError, UsageError) as e:
            unreadable = str(e)
        return cls(
            model_dir=env.get(MODEL_ENV) or DEFAULT_MODEL_DIR,
            bucket=env.get(BUCKET_ENV, "").strip(),
            prefix=env.get(PREFIX_ENV) or DEFAULT_PREFIX,
            policy=FetchPolicy(allow_private=env.get(ALLOW_PRIVATE_ENV) == "1", allowed_hosts=hosts),
            allow_cpu=env.get(ALLOW_CPU_ENV) == "1",
            limits=limits,
            vram=env.get(VRAM_ENV) or None,
            plan_seconds=plan_seconds,
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
