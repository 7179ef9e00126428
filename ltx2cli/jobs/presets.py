"""Presets: named sampling recipes in YAML (configs/presets/*.yaml plus user directories).

Precedence when a job is resolved: preset < manifest defaults < job < CLI flags.
User directories (--presets-dir, LTX2_PRESETS_DIR with os.pathsep) come after the built-ins, so a
user preset with a built-in's name replaces it.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from ..errors import Problem
from .job import Guidance, LoraRef, Number, Strict
from .loras import canonical_name
from .releases import VERSIONS

ENV_DIRS = "LTX2_PRESETS_DIR"
DEFAULT_PRESET = "fast"

# Guidance everywhere a preset says nothing: plain conditional prediction, no extra passes.
GUIDANCE_OFF = Guidance(
    cfg=1.0, stg=0.0, modality=1.0, rescale=0.0,
    audio_cfg=1.0, audio_stg=0.0, audio_modality=1.0, audio_rescale=0.0,
    stg_blocks=[VERSIONS["2.3"].stg_block],  # the only releases STG perturbs here (weights.versions)
)  # fmt: skip


class Preset(Strict):
    name: str
    description: str = ""
    aliases: list[str] = []
    model: Literal["dev", "distilled"] = "dev"
    steps: int | None = Field(default=None, ge=1, le=200)
    sigmas: list[Number] | None = Field(default=None, min_length=2)
    guidance: Guidance = Guidance()
    resolution: str = "768x512"
    two_stage: bool = False
    stage2_sigmas: list[Number] | None = Field(default=None, min_length=2)
    loras: list[LoraRef] = []
    # Clips longer than this render as overlapping windows (jobs.windows); the model saw up to ~20 s in training.
    window_seconds: float = Field(default=10.0, ge=1.0, le=20.0)
    window_overlap: int = Field(default=3, ge=1, le=8)  # latent frames shared (8 each)
    window_strength: float = Field(default=1.0, ge=0.0, le=1.0)

    @field_validator("resolution")
    @classmethod
    def _resolution(cls, v: str) -> str:
        w, _, h = v.partition("x")
        if not (w.isdigit() and h.isdigit() and int(w) % 32 == 0 and int(h) % 32 == 0):
            raise ValueError(f"must be WIDTHxHEIGHT in multiples of 32, got {v!r}")
        return v

    @field_validator("sigmas", "stage2_sigmas")
    @classmethod
    def _schedule(cls, v: list[float] | None) -> list[float] | None:
        if v is not None and (v[-1] != 0.0 or any(a <= b for a, b in itertools.pairwise(v)) or v[0] > 1.0):
            raise ValueError("must decrease strictly from at most 1.0 and end at 0.0")
        return v

    @field_validator("loras")
    @classmethod
    def _loras(cls, v: list[LoraRef]) -> list[LoraRef]:
        for ref in v:
            if ref.name is not None:
                canonical_name(ref.name)
        return v

    @model_validator(mode="after")
    def _checks(self) -> Preset:
        if (self.steps is None) == (self.sigmas is None):
            raise ValueError("give exactly one of steps or sigmas")
        if self.two_stage and self.stage2_sigmas is None:
            raise ValueError("two_stage needs stage2_sigmas")
        return self

    @property
    def size(self) -> tuple[int, int]:
        w, _, h = self.resolution.partition("x")
        return int(w), int(h)

    @property
    def num_steps(self) -> int:
        return self.steps if self.steps is not None else len(self.sigmas or ()) - 1

    @property
    def full_guidance(self) -> Guidance:
        return self.guidance.over(GUIDANCE_OFF)


def builtin_dir() -> Path:
    here = Path(__file__).resolve().parents[1]  # the ltx2cli package
    installed = here / "configs" / "presets"  # a wheel carries configs/ inside the package
    return installed if installed.is_dir() else here.parent / "configs" / "presets"


def preset_dirs(extra: list[Path] | None = None) -> list[Path]:
    dirs = [builtin_dir()]
    env = os.environ.get(ENV_DIRS, "")
    dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs += list(extra or [])
    return dirs


@dataclass(frozen=True)
class PresetSet:
    presets: dict[str, Preset]  # by name
    sources: dict[str, Path]  # name -> file

    def origin(self, name: str) -> str:
        f = self.sources[name]
        return "built-in" if f.parent == builtin_dir() else str(f)

    def lookup(self, name: str) -> Preset:
        """Preset by name or alias, case-insensitive; ValueError listing the valid ones."""
        key = name.strip().lower()
        for p in self.presets.values():
            if key == p.name or key in p.aliases:
                return p
        raise ValueError(f"unknown preset {name!r}; valid: {self.describe_names()}")

    def describe_names(self) -> str:
        return ", ".join(
            p.name + (f" (alias {', '.join(p.aliases)})" if p.aliases else "") for p in self.presets.values()
        )


def load_presets(extra_dirs: list[Path] | None = None) -> tuple[PresetSet, list[Problem]]:
    presets: dict[str, Preset] = {}
    sources: dict[str, Path] = {}
    problems: list[Problem] = []
    for d in preset_dirs(extra_dirs):
        if not d.is_dir():
            problems.append(Problem(str(d), "presets directory does not exist"))
            continue
        for f in sorted([*d.glob("*.yaml"), *d.glob("*.yml")]):
            try:
                data = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
                if not isinstance(data, dict):
                    raise ValueError("a preset file must be a mapping")
                data.setdefault("name", f.stem)
                p = Preset.model_validate(data)
            except yaml.YAMLError as e:
                problems.append(Problem(str(f), f"not valid YAML: {e}"))
                continue
            except ValidationError as e:
                for err in e.errors():
                    field = ".".join(str(x) for x in err["loc"]) or None
                    problems.append(Problem(str(f), err["msg"].removeprefix("Value error, "), field=field))
                continue
            except ValueError as e:
                problems.append(Problem(str(f), str(e)))
                continue
            name = p.name.lower()
            presets[name] = p.model_copy(update={"name": name, "aliases": [a.lower() for a in p.aliases]})
            sources[name] = f
    # Cheapest first: fast, balanced, quality.
    order = sorted(presets, key=lambda n: (presets[n].size[0] * presets[n].size[1], presets[n].num_steps, n))
    return PresetSet({n: presets[n] for n in order}, sources), problems
