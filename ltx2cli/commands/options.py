"""Every option the commands share, declared once: each in a group (a frozen dataclass whose fields are the
options) that a command takes as ONE parameter. `@option_groups` spreads a group's fields into the command's
options (under the group's --help panel) and gathers them back into the group when the command runs, so a new
shared option is one field here and the commands that take its group get it."""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from copy import copy
from pathlib import Path
from typing import Annotated, Any, ClassVar, get_args, get_type_hints

import typer

from ..batch.endpoint import Endpoint, Target
from ..batch.fanout import Fanout
from ..engine.models.attention import ACCURACY_BAR, ATTENTION_ENV, AttentionChoice
from ..engine.models.compile import AUTO_MIN_JOBS, COMPILE_ENV, CompileMode
from ..errors import UsageError
from ..jobs.manifest import MANIFEST_TYPES
from ..output import Output, output_mode
from ..storage.fetch import InputCache, default_input_cache
from ..synthetic.tiny import resolve_tiny
from ..weights.source import ModelSource
from ..weights.source import Precision as PrecisionChoice

Json = Annotated[bool, typer.Option("--json", help="Print one JSON object per job on stdout.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors.")]
PresetsDir = Annotated[
    list[Path] | None,
    typer.Option(
        "--presets-dir",
        help="Extra directory of preset YAML files (repeatable; also LTX2_PRESETS_DIR). Same name replaces a built-in.",
        show_default=False,
    ),
]
Manifests = Annotated[
    list[Path],
    typer.Argument(
        help=f"Manifest files ({MANIFEST_TYPES}) or folders of them (the files directly inside; subfolders are not "
        "read).",
        show_default=False,
    ),
]
OutputDir = Annotated[Path, typer.Option("--output-dir", "-o", help="Where jobs without `output` write {id}.mp4.")]
Preset = Annotated[str | None, typer.Option("--preset", "-p", help="Preset for every job (overrides the manifest).")]
Steps = Annotated[
    int | None, typer.Option("--steps", min=1, max=200, help="Denoising steps (replaces the preset's schedule).")
]
Cfg = Annotated[float | None, typer.Option("--cfg", min=0.0, help="Video CFG guidance scale for every job.")]
Fps = Annotated[float | None, typer.Option("--fps", min=1.0, max=120.0, help="Frames per second for every job.")]
MaxDuration = Annotated[
    float | None,
    typer.Option(
        "--max-duration",
        min=0.1,
        help="Longest clip allowed, seconds; one longer than its preset's window (10 s) renders in windows "
        "\\[default: 600].",
    ),
]

# Remote inputs (http(s):// and gs://): build the cache with storage.default_input_cache(cache_dir, max_input_mb,
# fetch_timeout, public_only, allow_host).
Fetch = Annotated[
    bool,
    typer.Option(
        "--fetch/--no-fetch",
        help="Download URL and gs:// inputs to the cache to check them and measure their length and size.",
    ),
]
CacheDir = Annotated[
    Path | None,
    typer.Option(
        "--cache-dir",
        help="Where downloaded inputs are kept \\[default: $LTX2_CACHE_DIR/inputs or ~/.cache/ltx2/inputs].",
        show_default=False,
    ),
]
MaxInputMb = Annotated[float, typer.Option("--max-input-mb", min=1.0, help="Largest input download, MB.")]
FetchTimeout = Annotated[
    float,
    typer.Option(
        "--fetch-timeout",
        min=0.1,
        help="Seconds a URL input's server may take to accept the connection (at most 10) or to send more data; "
        "each download is tried 4 times.",
    ),
]
PublicOnly = Annotated[
    bool,
    typer.Option(
        "--public-only",
        help="Fetch URL inputs only from public addresses: hosts that resolve to private, loopback, link-local or "
        "cloud-metadata addresses are refused, at every redirect (for manifests whose URLs others wrote).",
    ),
]
AllowHost = Annotated[
    list[str] | None,
    typer.Option("--allow-host", help="A host name --public-only lets through (repeatable), e.g. your media server."),
]
Strict = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Any problem stops the batch (exit 2), also a URL input that cannot be fetched or decoded now, which "
        "otherwise fails only its own job.",
    ),
]


Model = Annotated[
    str | None,
    typer.Option(
        "--model", "-m", envvar="LTX2_MODEL_DIR",
        help="LTX-2 weights: a diffusers-format folder, a single-file checkpoint (.safetensors), a ComfyUI models "
        "root, or `tiny` (built-in random weights: real code path, output is noise) \\[env: LTX2_MODEL_DIR].",
        show_default=False, show_envvar=False,
    ),
]  # fmt: skip
TextEncoder = Annotated[
    str | None,
    typer.Option(
        "--text-encoder",
        help="Gemma for a single-file checkpoint: a diffusers LTX-2 folder or a transformers folder \\[env: "
        "LTX2_TEXT_ENCODER; default: the folder in a ComfyUI root's text_encoders/].",
        show_default=False,
    ),
]
Checkpoint = Annotated[
    str | None,
    typer.Option(
        "--checkpoint",
        help="Which file of a ComfyUI root's checkpoints/ (needed when it holds several) \\[env: LTX2_CHECKPOINT].",
        show_default=False,
    ),
]
Precision = Annotated[
    PrecisionChoice | None,
    typer.Option(
        "--precision",
        case_sensitive=False,
        help="What the transformer blocks compute in: bf16 (a single file's FP8 weights dequantised at load), fp8 "
        "(FP8 weights kept, a bf16 model's quantised at load; torch._scaled_mm on GPUs that have it), auto (fp8 where "
        "the blocks compile on an FP8 GPU, or bf16 would not fit it) \\[env: LTX2_PRECISION; default: auto].",
        show_default=False,
    ),
]


def _checked_vram(value: str | None) -> str | None:
    """A --vram that is not a size is refused before anything is read or loaded."""
    from ..engine.memory.vram import parse_vram
    from ..errors import UsageError

    try:
        parse_vram(value)
    except UsageError as e:
        raise typer.BadParameter(str(e).removeprefix("--vram ")) from None
    return value


Vram = Annotated[
    str | None,
    typer.Option(
        "--vram",
        callback=_checked_vram,
        help="GPU memory to plan for: auto (this GPU's) or a card size in GB, e.g. 24, 32, 48, 80; the memory plan "
        "(which components stay on the GPU, FP8, tiled decode) is the fastest whose estimated peak fits \\[env: "
        "LTX2_VRAM; default: auto].",
        show_default=False,
    ),
]
Debug = Annotated[bool, typer.Option("--debug", help="Print tracebacks of failed jobs.")]
Compile = Annotated[
    CompileMode,
    typer.Option(
        "--compile", envvar=COMPILE_ENV, case_sensitive=False,
        help="torch.compile the transformer blocks: about 1.3x faster steps on a GPU after ~20 s of compiling per "
        f"clip shape; auto = on a GPU for {AUTO_MIN_JOBS}+ jobs \\[env: {COMPILE_ENV}].",
        show_envvar=False,
    ),
]  # fmt: skip
Attention = Annotated[
    AttentionChoice,
    typer.Option(
        "--attention", envvar=ATTENTION_ENV, case_sensitive=False,
        help="The transformer's attention kernel: sdpa (PyTorch's), cudnn, flash (flash-attn 2), fa3 "
        f"(FlashAttention-3), sage (SageAttention, INT8); auto = on a GPU the fastest within {ACCURACY_BAR:.0%} "
        f"of sdpa, timed once per GPU, else sdpa \\[env: {ATTENTION_ENV}].",
        show_envvar=False,
    ),
]  # fmt: skip


# ---- the groups -------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ModelOptions:
    """The weights, and the GPU size to plan for (every command that renders, plans or checks a model)."""

    PANEL: ClassVar[str] = "Model"
    model: Model = None
    text_encoder: TextEncoder = None
    checkpoint: Checkpoint = None
    precision: Precision = None
    vram: Vram = None

    @property
    def given(self) -> ModelSource:
        """The weights as named on the command line (option_warnings reads them so)."""
        return ModelSource(self.model, self.text_encoder, self.checkpoint, self.precision)

    def source(self) -> ModelSource:
        """The weights as the engine takes them: `tiny` (option or $LTX2_MODEL_DIR) is its cached folder."""
        return dataclasses.replace(self.given, model=resolve_tiny(self.model))


@dataclasses.dataclass(frozen=True)
class OutputOptions:
    """How results are printed."""

    PANEL: ClassVar[str] = "Output"
    json_: Json = False
    quiet: Quiet = False

    def output(self) -> Output:
        return Output(output_mode(self.json_, self.quiet))


@dataclasses.dataclass(frozen=True)
class InputOptions:
    """Presets, and how URL and gs:// inputs are fetched."""

    PANEL: ClassVar[str] = "Inputs"
    presets_dir: PresetsDir = None
    cache_dir: CacheDir = None
    max_input_mb: MaxInputMb = 200
    fetch_timeout: FetchTimeout = 60
    public_only: PublicOnly = False
    allow_host: AllowHost = None

    def cache(self) -> InputCache:
        return default_input_cache(
            self.cache_dir, self.max_input_mb, self.fetch_timeout, self.public_only, self.allow_host
        )


@dataclasses.dataclass(frozen=True)
class ManifestOptions:
    """Settings for every job of the manifests (the top layer of preset < defaults < job < command line)."""

    PANEL: ClassVar[str] = "Jobs"
    output_dir: OutputDir = Path("outputs")
    preset: Preset = None
    steps: Steps = None
    cfg: Cfg = None
    fps: Fps = None
    max_duration: MaxDuration = None
    strict: Strict = False

    def overrides(self) -> dict[str, Any]:
        """The job fields set on the command line."""
        out: dict[str, Any] = {"preset": self.preset, "steps": self.steps, "fps": self.fps}
        out |= {"max_duration": self.max_duration, "guidance": {"cfg": self.cfg} if self.cfg is not None else None}
        return {k: v for k, v in out.items() if v is not None}


@dataclasses.dataclass(frozen=True)
class RenderOptions:
    """How rendering runs (the commands that render)."""

    PANEL: ClassVar[str] = "Rendering"
    compile_: Compile = CompileMode.auto
    attention: Attention = AttentionChoice.auto
    debug: Debug = False

    def checked_attention(self) -> str:
        """--attention, refused before anything loads where its kernel cannot run on this machine's device."""
        from ..engine.models.attention import require
        from ..engine.models.loading import default_device

        require(self.attention.value, default_device())
        return self.attention.value


def option_groups(command: Callable[..., Any]) -> Callable[..., Any]:
    """A command whose parameters may be option groups: Typer sees each group's fields as options (in the group's
    --help panel); the command gets the group built from them."""
    hints = get_type_hints(command, include_extras=True)
    params: list[inspect.Parameter] = []
    groups: dict[str, type] = {}
    for p in inspect.signature(command).parameters.values():
        group = hints.get(p.name)
        if not (isinstance(group, type) and dataclasses.is_dataclass(group)):
            params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY, annotation=hints.get(p.name, p.annotation)))
            continue
        groups[p.name] = group
        fields = get_type_hints(group, include_extras=True)
        for f in dataclasses.fields(group):
            kind, default = inspect.Parameter.KEYWORD_ONLY, f.default
            params.append(inspect.Parameter(f.name, kind, default=default, annotation=_in_panel(fields[f.name], group)))
    names = [p.name for p in params]
    assert len(names) == len(set(names)), f"{command.__name__}: an option in two groups"

    @functools.wraps(command)
    def run(**kwargs: Any) -> Any:
        for name, group in groups.items():
            kwargs[name] = group(**{f.name: kwargs.pop(f.name) for f in dataclasses.fields(group)})
        return command(**kwargs)

    run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in params}
    return run


def _in_panel(annotation: Any, group: type) -> Any:
    """The same Annotated option, shown in the group's --help panel."""
    kind, info = get_args(annotation)
    info = copy(info)
    info.rich_help_panel = group.PANEL  # type: ignore[attr-defined]
    return Annotated[kind, info]


@dataclasses.dataclass(frozen=True)
class EndpointOptions:
    """Rendering on a RunPod serverless endpoint (ltx2's worker) instead of this machine's GPU."""

    PANEL: ClassVar[str] = "RunPod endpoint"
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            help="runpod:ENDPOINT_ID: render every job on this RunPod serverless endpoint running ltx2's worker "
            "(key: $RUNPOD_API_KEY), at most --concurrency at a time; journal, resume and report as here.",
            show_default=False,
        ),
    ] = None
    endpoint_url: Annotated[
        str | None,
        typer.Option(
            "--endpoint-url",
            help="The endpoints' API base URL \\[env: RUNPOD_ENDPOINT_BASE_URL; default: https://api.runpod.ai/v2].",
            show_default=False,
        ),
    ] = None
    stage: Annotated[
        str | None,
        typer.Option(
            "--stage",
            help="gs://BUCKET/prefix/: where local inputs are uploaded (once, named by their content's SHA-256) "
            "for the workers to fetch.",
            show_default=False,
        ),
    ] = None
    download: Annotated[
        bool,
        typer.Option(
            "--download",
            help="Fetch each MP4 and its sidecar into the output folder, checked against the object's size and MD5 "
            "(jobs whose output is a local path are always fetched).",
        ),
    ] = False
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency", min=1, help="Jobs in flight at once \\[default: the endpoint's workers, else 8].",
            show_default=False,
        ),
    ] = None  # fmt: skip
    retries: Annotated[
        int,
        typer.Option(
            "--retries", min=0,
            help="Times a call that got 429, 5xx or a dropped connection is tried again (with backoff), and a job "
            "that timed out is sent again.",
        ),
    ] = 3  # fmt: skip

    def fanout(self) -> Fanout | None:
        """The endpoint's Fanout, None without --endpoint; a usage error for what is missing."""
        if self.endpoint is None:
            return None
        if self.stage is not None and not self.stage.startswith("gs://"):
            raise UsageError(f"--stage {self.stage!r}: use gs://BUCKET/prefix/")
        target = Target.parse(self.endpoint, self.endpoint_url)
        endpoint = Endpoint(target, retries=self.retries)
        return Fanout(endpoint, self.stage, self.download, self.concurrency, self.retries)
