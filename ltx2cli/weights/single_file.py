"""Loading a Lightricks single-file LTX-2 checkpoint (`ltx-2-19b-dev.safetensors`, `...-fp8.safetensors`).

Every tensor is renamed to diffusers (layout.py), the modules are built on the meta device from the file's own
configuration (configs.py) and compared with the file tensor by tensor (a missing, extra or misshapen tensor is
an error naming it: never a random init), then filled straight from the file onto the device.

FP8 weights (float8_e4m3fn + a float32 `<name>.weight_scale`): precision "bf16" dequantises them at load
(weight.float() * scale, in the compute dtype); "fp8" keeps the transformer blocks' Linears in FP8
(weights.fp8.Fp8Linear: `torch._scaled_mm` where the GPU has it). diffusers' own single-file loader casts FP8 to
bf16 and drops the scales, which is why it is not used here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError
from .configs import ConfigMismatch, component_configs
from .header import Header, HeaderError, TensorInfo, read_header
from .layout import COMPONENTS, WEIGHT_SCALES, is_scale, split, to_diffusers

PRECISIONS = ("auto", "bf16", "fp8")


@dataclass
class Plan:
    """What loading a file will do, decided from its header alone."""

    header: Header
    version: str
    configs: dict[str, dict]  # diffusers configs by component (and the scheduler's)
    names: dict[str, dict[str, str]]  # component -> {diffusers name: name in the file}
    origins: dict[str, str] = field(default_factory=dict)  # component -> where its config came from, in words

    @property
    def has_fp8(self) -> bool:
        return any(self.header.tensors[k].is_fp8 for names in self.names.values() for k in names.values())


def plan(path: Path) -> Plan:
    from .versions import detect_version, version_contradiction

    try:
        header = read_header(path)
    except HeaderError as e:
        raise ModelError(str(e)) from e
    parts, unknown = split(header.tensors)
    if unknown:
        raise ModelError(
            f"{path.name}: {len(unknown)} tensors outside LTX-2's single-file layout, e.g. {next(iter(unknown))}"
        )
    missing = [c for c in COMPONENTS if not parts[c]]
    if missing:
        raise ModelError(f"{path.name} is not a whole LTX-2 checkpoint: no {', '.join(missing)} tensors")
    if wrong := version_contradiction(header.metadata, list(header.tensors)):
        raise ModelError(f"{path.name}: {wrong}; the file's metadata cannot be trusted")
    if bad := header.json_error("config"):
        raise ModelError(f"{path.name}: {bad}; fix or remove it (without it the shipped reference config is used)")
    names = {c: to_diffusers(c, {k: k for k in parts[c]}) for c in COMPONENTS}
    shapes = {c: {d: header.tensors[o] for d, o in names[c].items()} for c in COMPONENTS}
    version, _how = detect_version(header.metadata, list(header.tensors))
    metadata = header.json_metadata("config")
    try:
        configs = component_configs(version, metadata, shapes)
    except ConfigMismatch as e:
        raise ModelError(f"{path.name}: {e}") from e
    return Plan(header, version, configs, names, config_origins(version, metadata))


# The `config` section each component's settings come from (the connectors' are in ltx-core's transformer config).
SECTIONS = {"transformer": "transformer", "connectors": "transformer", "vae": "vae", "audio_vae": "audio_vae",
            "vocoder": "vocoder"}  # fmt: skip


def config_origins(version: str, metadata: dict | None) -> dict[str, str]:
    """{component: where its configuration came from, in words}, for errors that blame a configuration."""
    from ..jobs.releases import VERSIONS

    reference = f"the shipped {VERSIONS[version].name} reference config"
    if metadata is None:
        return dict.fromkeys(COMPONENTS, f"{reference} (the file has no `config` metadata)")
    return {
        c: "the file's metadata" if s in metadata else f"{reference} (the file's `config` has no `{s}`)"
        for c, s in SECTIONS.items()
    }


def check(
    module: Any, component: str, expected: dict[str, TensorInfo], file: str, origin: str = "the file's metadata"
) -> None:
    """The module built from the file's config must hold exactly the file's tensors, shape for shape. `origin`:
    where that config came from, for the error."""
    own = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    given = {k: info.shape for k, info in expected.items() if not is_scale(k)}
    for key, shape in own.items():
        if key not in given:
            raise ModelError(f"{file}: {component} tensor {key} is missing from the file")
        if given[key] != shape:
            raise ModelError(
                f"{file}: {component} tensor {key} has shape {list(given[key])}, the {component} configured by "
                f"{origin} expects {list(shape)}"
            )
    extra = sorted(set(given) - set(own))
    if extra:
        raise ModelError(f"{file}: {component} tensor {extra[0]} has no place in the model ({len(extra)} such)")


def load_components(p: Plan, device: Any, dtype: Any, precision: str) -> dict[str, Any]:
    """{component: loaded module} for the five components of the planned file."""
    import torch
    from safetensors import safe_open

    from .components import construct
    from .fp8 import Fp8Linear, swap_block_linears
    from .owned import owned

    path = p.header.path
    fp8 = precision == "fp8"
    modules: dict[str, Any] = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for component in COMPONENTS:
            module = construct(None, component, dtype, config=p.configs[component])
            expected = {d: p.header.tensors[o] for d, o in p.names[component].items()}
            check(module, component, expected, path.name, p.origins.get(component, "the file's metadata"))
            swapped = set()
            if fp8 and component == "transformer":
                swap_block_linears(module)
                swapped = {n for n, m in module.named_modules() if isinstance(m, Fp8Linear)}
            state = {}
            for name, original in p.names[component].items():
                if is_scale(name):
                    continue
                tensor = f.get_tensor(original)
                scale = _scale(f, p.header, original)
                owner = name.rsplit(".", 1)[0]
                if owner in swapped and name.endswith(".weight"):
                    state[owner + ".weight_fp8"], state[owner + ".weight_scale"] = _as_fp8(tensor, scale, device)
                    continue
                if scale is not None:
                    tensor = tensor.float() * scale.float()
                state[name] = owned(tensor, device, dtype)
            module.load_state_dict(state, strict=True, assign=True)
            modules[component] = module.to(device).eval().requires_grad_(False)
    torch.set_grad_enabled(False)
    return modules


def _scale(f: Any, header: Header, key: str):
    """The per-tensor scale stored beside an FP8 weight, if any."""
    if not key.endswith(".weight") or not header.tensors[key].is_fp8:
        return None
    stem = key.removesuffix(".weight")
    for name in (stem + suffix for suffix in WEIGHT_SCALES):
        if name in header.tensors:
            return f.get_tensor(name)
    raise ModelError(
        f"{header.path.name}: FP8 tensor {key} has no weight_scale / scale_weight beside it: its real values cannot "
        "be recovered"
    )


def _as_fp8(tensor: Any, scale: Any, device: Any) -> tuple[Any, Any]:
    """(float8 weight, float32 scalar scale) for an Fp8Linear: as stored when the file is FP8, quantised if not."""
    import torch

    from .fp8 import FP8_DTYPE, FP8_MAX, to_fp8

    if tensor.dtype == FP8_DTYPE and scale is not None:
        return tensor.to(device), scale.float().reshape(()).to(device)
    weight = tensor.float() if scale is None else tensor.float() * scale.float()
    new_scale = weight.abs().amax().clamp(min=1e-12) / FP8_MAX
    return to_fp8(weight, new_scale).to(device), new_scale.reshape(()).to(torch.float32).to(device)


def identity(p: Plan) -> str:
    """File name plus a fingerprint of its contents (weights.fingerprint: header and every tensor's first bytes)."""
    from .fingerprint import fingerprint

    return f"{p.header.path.name}@{fingerprint([p.header.path])}"


def resolve_precision(precision: str, p: Plan, device: Any) -> str:
    """`auto`: keep FP8 weights in FP8 only where the GPU multiplies FP8 and the bf16 model would not fit in its
    free memory; everything else renders in the compute dtype."""
    import torch

    from .fp8 import fp8_matmul_ok

    if precision != "auto":
        return precision
    device = torch.device(device)
    if device.type != "cuda" or not p.has_fp8 or not fp8_matmul_ok(device):
        return "bf16"
    free, _total = torch.cuda.mem_get_info(device)
    needed = sum(2 * t.numel for names in p.names.values() for k in names.values() if (t := p.header.tensors[k]))
    return "fp8" if needed > 0.85 * free else "bf16"


def text_encoder_dir(path: Path | None) -> tuple[Path, Path]:
    """(Gemma weights folder, tokenizer folder) from a diffusers LTX-2 folder (text_encoder/ + tokenizer/) or a
    transformers folder (config.json and the tokenizer files together)."""
    if path is None:
        raise ModelError(
            "a single-file checkpoint holds no text encoder: pass --text-encoder PATH (a diffusers LTX-2 folder, a "
            "Gemma transformers folder, ComfyUI's gemma_3_12B_it*.safetensors or LTX-2.5's gemma4-12b-with-proj "
            "file), set LTX2_TEXT_ENCODER, or put it in the ComfyUI models root's text_encoders/"
        )
    if (path / "text_encoder" / "config.json").is_file():
        weights, tokenizer = path / "text_encoder", path / "tokenizer"
    elif (path / "config.json").is_file():
        weights = tokenizer = path
    else:
        raise ModelError(f"{path}: not a text encoder folder (no config.json or text_encoder/config.json)")
    if not any((tokenizer / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        raise ModelError(f"{tokenizer}: no tokenizer files (add tokenizer.json or tokenizer.model from Gemma)")
    return weights, tokenizer
