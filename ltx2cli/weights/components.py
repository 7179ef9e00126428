"""LTX-2's components as modules, built from their diffusers / transformers configs before any weight is read, and
where the full-size reference configs live. Every loader (single files, the upscaler, the text encoder, the
memory estimate's meta models and the synthetic random-weight models) constructs components here."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelError
from .quiet import quiet_libraries

if TYPE_CHECKING:
    from torch import nn

CONFIG_ENV = "LTX2_REFERENCE_CONFIGS"
UPSAMPLER = "latent_upsampler"
_PACKAGE = Path(__file__).resolve().parents[1]  # the ltx2cli package
# The full-size configs ship with ltx2 (configs/reference, no weights; provenance in PROVENANCE.md there):
# inside the package when installed from a wheel, beside it in a checkout.
REFERENCE_CANDIDATES = (
    _PACKAGE / "configs" / "reference" / "LTX-2",
    _PACKAGE.parent / "configs" / "reference" / "LTX-2",
)


def reference_config_dir() -> Path:
    """The full-size LTX-2 configs: $LTX2_REFERENCE_CONFIGS, else the first candidate folder that exists."""
    env = os.environ.get(CONFIG_ENV)
    for path in ([Path(env)] if env else []) + list(REFERENCE_CANDIDATES):
        if (path / "transformer" / "config.json").is_file():
            return path
    tried = ", ".join(str(p) for p in ([Path(env)] if env else []) + list(REFERENCE_CANDIDATES))
    raise ModelError(f"LTX-2 reference configs not found (tried {tried}); pass --config-dir or set {CONFIG_ENV}")


def component_classes() -> dict[str, Any]:
    from diffusers import AutoencoderKLLTX2Audio, AutoencoderKLLTX2Video, LTX2VideoTransformer3DModel
    from diffusers.pipelines.ltx2.connectors import LTX2TextConnectors
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel
    from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder, LTX2VocoderWithBWE

    return {
        "LTX2VocoderWithBWE": LTX2VocoderWithBWE,  # 2.3 on, chosen by a config's _class_name
        "transformer": LTX2VideoTransformer3DModel,
        "connectors": LTX2TextConnectors,
        "vae": AutoencoderKLLTX2Video,
        "audio_vae": AutoencoderKLLTX2Audio,
        "vocoder": LTX2Vocoder,
        UPSAMPLER: LTX2LatentUpsamplerModel,
    }


def construct(
    config_dir: Path | None, name: str, dtype: Any, empty: bool = True, config: dict | None = None
) -> nn.Module:
    """One component from `config_dir/name/config.json` (or the diffusers `config` given), in `dtype`; parameters on
    the meta device if `empty`.

    dtypes follow the libraries' own loaders: diffusers casts the whole module (buffers too), transformers builds
    under a default dtype (RoPE inv_freq stays float32, as in `from_pretrained`).
    """
    from contextlib import nullcontext

    from accelerate import init_empty_weights

    quiet_libraries()
    empty_ctx = init_empty_weights(include_buffers=False) if empty else nullcontext()
    folder = Path(config_dir or ".") / name
    if name == "text_encoder":
        from transformers import Gemma3Config, Gemma3ForConditionalGeneration

        config = Gemma3Config.from_pretrained(folder)
        with empty_ctx:
            module = Gemma3ForConditionalGeneration._from_config(config, dtype=dtype)
    else:
        classes = component_classes()
        cls = classes.get(str((config or {}).get("_class_name")), classes[name])
        with empty_ctx:
            module = cls.from_config(config if config is not None else cls.load_config(folder))
        module = module.to(dtype)  # on meta: free; real buffers are cast like from_pretrained(dtype=) casts them
    return module.eval().requires_grad_(False)
