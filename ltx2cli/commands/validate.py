"""`ltx2 validate`: parse, check and resolve every job; print the render plan. Renders nothing."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

from rich.table import Table

from ..engine.models import MODEL_ENV, ModelError, ModelSource, model_version, resolve_model
from ..errors import InvalidJobs, Problem
from ..output import Output, output_mode
from ..plan import plan_manifests
from ..spec import RenderSpec
from ..storage import default_input_cache
from ..weights.fit import lora_problems
from ..weights.versions import DEFAULT, VERSIONS
from .options import (
    CacheDir,
    Cfg,
    Checkpoint,
    Fetch,
    Fps,
    Json,
    Manifests,
    MaxDuration,
    MaxInputMb,
    Model,
    OutputDir,
    Precision,
    Preset,
    PresetsDir,
    Quiet,
    Steps,
    TextEncoder,
    cli_overrides,
)

EXAMPLES = """
Examples:

  ltx2 validate examples/jobs/

  ltx2 validate jobs.jsonl --json | jq .num_frames

  ltx2 validate jobs.yaml --preset balanced --fps 24

  ltx2 validate requests.jsonl --no-fetch     # skip downloading URL inputs
"""


def validate(
    manifests: Manifests,
    json_: Json = False,
    quiet: Quiet = False,
    preset: Preset = None,
    steps: Steps = None,
    cfg: Cfg = None,
    fps: Fps = None,
    max_duration: MaxDuration = None,
    output_dir: OutputDir = "outputs",  # type: ignore[assignment]
    presets_dir: PresetsDir = None,
    fetch: Fetch = True,
    cache_dir: CacheDir = None,
    max_input_mb: MaxInputMb = 200,
    model: Model = None,
    text_encoder: TextEncoder = None,
    checkpoint: Checkpoint = None,
    precision: Precision = None,
) -> None:
    """Check manifests and print the exact render plan. Exit 0 if valid, 2 if not.

    URL and gs:// inputs are downloaded to the cache (each once) and checked like local files. With --model (or
    LTX2_MODEL_DIR), every LoRA is also checked against that model from its file header: a LoRA made for another
    model (LTX-Video 2B, say) is a problem.
    """
    out = Output(output_mode(json_, quiet))
    overrides = cli_overrides(preset=preset, steps=steps, cfg=cfg, fps=fps, max_duration=max_duration)
    cache = default_input_cache(cache_dir, max_input_mb) if fetch else None
    source = ModelSource(model, text_encoder, checkpoint, precision)
    version, problems = None, []
    if model or os.environ.get(MODEL_ENV):
        try:
            resolve_model(source)  # a model named and not there is a problem here, not at render time
            version = model_version(source)
        except ModelError as e:
            problems.append(Problem("--model", str(e)))
    specs, planned = plan_manifests(
        manifests, overrides, output_dir=output_dir, presets_dirs=presets_dir, cache=cache, model_version=version
    )
    problems = planned + problems
    if version is None:
        default = VERSIONS[DEFAULT]
        out.log(
            f"planned for {default.name} (no --model): jobs without img_compression get its {default.crf_default}; "
            "the model's release may differ (LTX-2.5: 18) and may lack a preset's LoRA"
        )
    problems += lora_problems(specs, source)
    for spec in specs:
        out.result(spec.model_dump(mode="json"))
        for w in spec.warnings:
            out.warning(f"{spec.source}: job {spec.id!r}: {w}")
    if specs:
        out.table(plan_table(specs))
    if problems:
        raise InvalidJobs(problems)
    out.log(f"{len(specs)} job(s) valid")


validate.__doc__ = inspect.cleandoc(validate.__doc__ or "") + "\n" + EXAMPLES


def plan_table(specs: list[RenderSpec]) -> Table:
    table = Table(title="Render plan", title_justify="left", caption="frames: output/rendered; keys: frame@strength")
    for col in ("id", "mode", "seconds", "frames", "size", "keys", "preset", "output"):
        table.add_column(col, overflow="fold")
    for s in specs:
        frames = f"{s.output_frames}/{s.num_frames}" if s.num_frames else "from audio"
        size = f"{s.width}x{s.height}" if s.width else "from image"
        seconds = f"{s.duration:.2f}" if s.duration is not None else "from audio"
        kfs = " ".join(f"{k.frame if k.frame is not None else k.position}@{k.strength:g}" for k in s.keyframes)
        table.add_row(s.id, s.mode, seconds, frames, size, kfs, s.preset, _short(s.output))
    return table


def _short(output: str) -> str:
    """Outputs under the working directory are shown relative to it."""
    if output.startswith("gs://"):
        return output
    try:
        return str(Path(output).relative_to(Path.cwd()))
    except ValueError:
        return output
