"""What one request may cost a RunPod worker: the longest clip, the largest frame, the most denoising steps.

Each limit is set per worker from the environment. A request over one is refused as E_INPUT naming the limit and
its variable: before anything is fetched for what the request itself says (duration, size, steps), and after
planning, still before any model work, for what only its inputs or preset tell (the audio's length, a size from
the image's aspect ratio, the preset's steps).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import ValidationError

from ..errors import Problem
from .job import Job
from .manifest import RawJob
from .spec import RenderSpec

DURATION_ENV, PIXELS_ENV, STEPS_ENV = "LTX2_MAX_DURATION", "LTX2_MAX_PIXELS", "LTX2_MAX_STEPS"


def env_positive(env: Mapping[str, str], var: str, kind: type = float) -> float | None:
    """$var as a positive number (`kind` int: a whole one); None when unset; ValueError naming it otherwise."""
    text = env.get(var, "").strip()
    if not text:
        return None
    try:
        value = kind(text)
    except ValueError:
        value = 0
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{var}={text!r} must be a positive {'number' if kind is float else 'whole number'}")
    return value


_SETTINGS = (("duration", DURATION_ENV, float), ("pixels", PIXELS_ENV, int), ("steps", STEPS_ENV, int))


@dataclass(frozen=True)
class Limits:
    duration: float = 20.0  # seconds: a job's default max_duration (the original service's fields cannot raise it)
    pixels: int = 1920 * 1088  # width * height of one frame: 1080p on the VAE's 32-pixel grid
    steps: int = 100  # first-stage denoising steps (the quality preset takes 40)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Limits:
        """The limits the environment sets, defaults for the rest; ValueError naming a variable set to anything but
        a positive number (a whole one for pixels and steps)."""
        values = {name: env_positive(env, var, kind) for name, var, kind in _SETTINGS}
        return cls(**{name: value for name, value in values.items() if value is not None})

    def check_request(self, raw: RawJob) -> list[Problem]:
        """What the request's own fields put over the limits; an invalid request is left to the planner."""
        try:
            job = Job.model_validate(raw.data)
        except ValidationError:
            return []
        size = None
        if job.resolution != "auto":
            w, _, h = job.resolution.partition("x")
            size = (int(w), int(h))
        elif job.width is not None and job.height is not None:
            size = (job.width, job.height)
        return self._over(raw, job.duration, False, size, job.steps)

    def check_spec(self, raw: RawJob, spec: RenderSpec) -> list[Problem]:
        """The planned render over the limits: what the inputs and the preset decided too."""
        size = (spec.width, spec.height)
        steps = spec.steps if spec.steps is not None else len(spec.sigmas or ()) - 1
        return self._over(raw, spec.duration, spec.mode == "lipsync", size, steps)

    def _over(
        self, raw: RawJob, duration: float | None, from_audio: bool, size: tuple[int, int] | None, steps: int | None
    ) -> list[Problem]:
        problems = []
        limit = "this worker's limit of"
        if duration is not None and duration > self.duration:
            over = f"{limit} {self.duration:g} s ({DURATION_ENV})"
            if from_audio:
                problems.append(raw.problem(("audio",), f"is {duration:.2f} s long, over {over}"))
            else:
                problems.append(raw.problem(("duration",), f"{duration:g} s is over {over}"))
        if size is not None and size[0] * size[1] > self.pixels:
            w, h = size
            message = f"size {w}x{h} ({w * h} pixels) is over {limit} {self.pixels} pixels ({PIXELS_ENV})"
            problems.append(raw.problem((), message))
        if steps is not None and steps > self.steps:
            problems.append(raw.problem(("steps",), f"{steps} is over {limit} {self.steps} ({STEPS_ENV})"))
        return problems
