"""Gemma 3 from a ComfyUI single file (`text_encoders/gemma_3_12B_it.safetensors`, `..._fp8_scaled.safetensors`).

ComfyUI stores the language model under transformers' Gemma3ForCausalLM names (`model.layers.N.*`,
`model.embed_tokens.weight`, `model.norm.weight`), the SentencePiece tokenizer as a uint8 tensor `spiece_model`,
and, in "fp8_scaled" files, float8 weights with a float32 scale beside each (`<layer>.scale_weight`, or
`<layer>.weight_scale` in the newer `comfy_quant` format) and a `scaled_fp8` marker. LTX-2 reads only the
language model's hidden states, so vision tower tensors, if any, are left out.

The architecture's sizes come from the tensor shapes; what shapes cannot say (RoPE, sliding window) is Gemma 3's,
from the shipped reference config.

Gemma 4 (LTX-2.5) comes as Lightricks' packed text-encoder file (`gemma4-12b-with-proj-ltx-2.5-bf16.safetensors`),
written by ltx-core's `text_encoders/gemma/gemma_assets.py`: the transformers config as JSON in the `gemma_config`
metadata, tokenizer.json as a uint8 tensor `tokenizer_json`, other HF files as `hf_asset__<name>` tensors (or, in
older packs, metadata strings), the language model under ComfyUI's flat names (`model.layers.N.*`; or HF's
`model.language_model.*`), plus the towers and LTX's text projections, which the text encoder does not use.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from ..errors import ModelError
from .header import Header, HeaderError, read_header

SPIECE = "spiece_model"
SCALE_NAMES = (".scale_weight", ".weight_scale")
COMFY_EXTRAS = ("scaled_fp8", ".scale_input", ".input_scale", ".comfy_quant")


GEMMA_CONFIG = "gemma_config"  # ltx-core's packed text encoder: its transformers config, JSON
TOKENIZER_JSON = "tokenizer_json"
HF_ASSET = "hf_asset__"
HF_LANGUAGE_MODEL = "model.language_model."  # HF's Gemma 4 names; ComfyUI's flat ones drop "language_model."
# transformers' tokenizer_config.json keys that are no constructor arguments (ltx-core's _TOKENIZER_CONFIG_SKIP)
TOKENIZER_CONFIG_SKIP = frozenset(
    {"tokenizer_class", "auto_map", "model_max_length", "backend", "is_local", "local_files_only",
     "processor_class", "added_tokens_decoder"}
)  # fmt: skip
TOKENIZER_MAX_LENGTH = 1024


def is_gemma_file(path: Path) -> bool:
    """A single-file Gemma: ComfyUI's Gemma 3 or Lightricks' packed Gemma 4 (flat or HF language-model names)."""
    try:
        keys = read_header(path).tensors
    except HeaderError:
        return False
    return any(k.startswith(("model.layers.", HF_LANGUAGE_MODEL + "layers.")) for k in keys)


def header_family(header: Header) -> str:
    """ "Gemma 4" or "Gemma 3" from a single file's header: ltx-core's packed Gemma 4 says gemma4 in its metadata
    (`gemma_config`'s model_type); ComfyUI's Gemma files are Gemma 3."""
    return "Gemma 4" if any("gemma4" in v.lower().replace("-", "") for v in header.metadata.values()) else "Gemma 3"


def encoder_family(path: Path) -> str | None:
    """ "Gemma 3" or "Gemma 4": a text encoder's family from its header (a single file) or its transformers config
    (a Gemma folder, or a diffusers LTX-2 folder's text_encoder/); None where neither tells."""
    if path.is_file():
        try:
            return header_family(read_header(path)) if is_gemma_file(path) else None
        except HeaderError:
            return None
    for config in (path / "config.json", path / "text_encoder" / "config.json"):
        try:
            model_type = str(json.loads(config.read_text()).get("model_type", ""))
        except (OSError, ValueError, AttributeError):
            continue
        return {"gemma3": "Gemma 3", "gemma4": "Gemma 4"}.get(model_type.split("_")[0])
    return None


def wrong_family(version: str, encoder: Path) -> str | None:
    """A text encoder of another Gemma than the release conditions on (2.5: Gemma 4; 2.0 and 2.3: Gemma 3), in words;
    None if it is the right one or its headers do not tell."""
    from ..jobs.releases import VERSIONS

    release, family = VERSIONS[version], encoder_family(encoder)
    if family is None or family in release.text_encoder:
        return None
    return (
        f"{release.name} conditions on {release.text_encoder}, but the text encoder {encoder} is {family}: its "
        f"prompts would be read by the wrong model; pass --text-encoder with {release.text_encoder}"
    )


def gemma_config(header: Header) -> dict[str, Any]:
    """Gemma3TextConfig fields: sizes from the shapes, the rest from the reference Gemma 3 12B config."""
    from .components import reference_config_dir

    base = json.loads((reference_config_dir() / "text_encoder" / "config.json").read_text())["text_config"]
    t = header.tensors
    layers = {int(m[1]) for k in t if (m := re.match(r"model\.layers\.(\d+)\.", k))}
    try:
        vocab, hidden = t["model.embed_tokens.weight"].shape
        head_dim = t["model.layers.0.self_attn.q_norm.weight"].shape[0]
        config = base | {
            "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": max(layers) + 1, "head_dim": head_dim,
            "intermediate_size": t["model.layers.0.mlp.gate_proj.weight"].shape[0],
            "num_attention_heads": t["model.layers.0.self_attn.q_proj.weight"].shape[0] // head_dim,
            "num_key_value_heads": t["model.layers.0.self_attn.k_proj.weight"].shape[0] // head_dim,
            "query_pre_attn_scalar": head_dim,
        }  # fmt: skip
    except (KeyError, ValueError) as e:
        raise ModelError(f"{header.path.name}: not a Gemma 3 text encoder (missing {e})") from e
    config.pop("layer_types", None)  # recomputed for the layer count
    return config


def load_gemma_file(path: Path, device: Any, dtype: Any) -> tuple[Any, Any]:
    """(Gemma language model, tokenizer) from a single file: Lightricks' packed Gemma 4 or ComfyUI's Gemma 3."""
    try:
        header = read_header(path)
    except HeaderError as e:
        raise ModelError(str(e)) from e
    if GEMMA_CONFIG in header.metadata:
        return _load_packed_gemma(header, device, dtype)
    return _load_comfy_gemma3(header, device, dtype)


def _load_comfy_gemma3(header: Header, device: Any, dtype: Any) -> tuple[Any, Any]:
    """(Gemma3ForCausalLM, tokenizer) from a ComfyUI Gemma 3 file."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    path = header.path
    if SPIECE not in header.tensors:
        raise ModelError(
            f"{path.name} has no embedded tokenizer (spiece_model): pass --text-encoder DIR with Gemma 3's "
            "tokenizer.model or tokenizer.json beside its config.json"
        )
    model = _with_weights(Gemma3ForCausalLM, Gemma3TextConfig(**gemma_config(header)), header, device, dtype)
    return model, _tokenizer(_tensor_bytes(header, SPIECE))


def _load_packed_gemma(header: Header, device: Any, dtype: Any) -> tuple[Any, Any]:
    """(Gemma4UnifiedForCausalLM, tokenizer) from ltx-core's packed file; sizes from its `gemma_config`."""
    from transformers import Gemma4UnifiedForCausalLM, Gemma4UnifiedTextConfig, PreTrainedTokenizerFast

    path, config = header.path, header.json_metadata(GEMMA_CONFIG) or {}
    if config.get("model_type") != "gemma4_unified" or not isinstance(config.get("text_config"), dict):
        raise ModelError(
            f"{path.name}: a packed text encoder of model_type {config.get('model_type')!r}; ltx2 reads Gemma 4 "
            "(gemma4_unified) packs, Gemma 3 as ComfyUI's gemma_3_12B_it*.safetensors or a transformers folder"
        )
    hf_names = any(k.startswith(HF_LANGUAGE_MODEL) for k in header.tensors)  # packed without ComfyUI's flat names
    names = _hf_language_model_name if hf_names else None
    text_config = Gemma4UnifiedTextConfig(**config["text_config"])
    model = _with_weights(Gemma4UnifiedForCausalLM, text_config, header, device, dtype, names)
    if TOKENIZER_JSON not in header.tensors:
        raise ModelError(f"{path.name} has no embedded tokenizer ({TOKENIZER_JSON}); pass --text-encoder DIR instead")
    asset = HF_ASSET + "tokenizer_config.json"
    raw = _tensor_bytes(header, asset) if asset in header.tensors else header.metadata.get("tokenizer_config.json")
    kwargs = {k: v for k, v in json.loads(raw or "{}").items() if k not in TOKENIZER_CONFIG_SKIP}
    from tokenizers import Tokenizer

    try:  # built as ltx-core builds it, so prompts tokenize as in Lightricks' reference
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=Tokenizer.from_buffer(_tensor_bytes(header, TOKENIZER_JSON)),
            model_max_length=TOKENIZER_MAX_LENGTH,
            **kwargs,
        )
    except Exception as e:  # tokenizers reports a bad tokenizer.json as a plain Exception
        raise ModelError(f"{path.name}: cannot read the embedded tokenizer: {e.__class__.__name__}: {e}") from e
    return model, tokenizer


def _hf_language_model_name(key: str) -> str:
    return HF_LANGUAGE_MODEL + key.removeprefix("model.")


def _with_weights(cls: Any, config: Any, header: Header, device: Any, dtype: Any, names: Any = None) -> Any:
    """`cls(config)` with every tensor from the file (`names`: model key -> file key), FP8 ones times their scale."""
    import torch
    from accelerate import init_empty_weights
    from safetensors import safe_open

    from .owned import owned

    path = header.path
    with init_empty_weights(include_buffers=False):
        model = cls(config)
    model = model.to(dtype)
    wanted = {k for k in model.state_dict() if k != "lm_head.weight"}  # lm_head is the tied embedding
    state = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for key in wanted:
            name = names(key) if names else key
            if name not in header.tensors:
                raise ModelError(f"{path.name}: Gemma tensor {name} is missing from the file")
            tensor = f.get_tensor(name)
            scale = next(
                (n for n in (name.removesuffix(".weight") + s for s in SCALE_NAMES) if n in header.tensors), None
            )
            if header.tensors[name].is_fp8:
                if scale is None:
                    raise ModelError(f"{path.name}: FP8 tensor {name} has no scale_weight / weight_scale beside it")
                tensor = tensor.float() * f.get_tensor(scale).float()
            state[key] = owned(tensor, device, dtype)
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    missing = [k for k, v in model.state_dict().items() if v.is_meta]
    if missing:
        raise ModelError(f"{path.name}: Gemma tensor {missing[0]} is missing from the file")
    torch.set_grad_enabled(False)
    return model.to(device).eval().requires_grad_(False)


def _tensor_bytes(header: Header, name: str) -> bytes:
    """A file stored in a tensor (uint8; ComfyUI may write int8)."""
    from safetensors import safe_open

    with safe_open(str(header.path), framework="np") as f:
        return f.get_tensor(name).astype("uint8").tobytes()


def _tokenizer(spiece: bytes) -> Any:
    """Gemma's tokenizer from SentencePiece model bytes, converted once and cached by content hash."""
    from transformers import AutoTokenizer

    from ..cache import cache_root

    cache = cache_root() / "tokenizers"
    folder = cache / hashlib.sha256(spiece).hexdigest()[:16]
    if not (folder / "tokenizer.json").is_file():
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "tokenizer.model").write_bytes(spiece)
        # Gemma prepends BOS (ComfyUI tokenizes with add_bos too); the pipeline pads on the left itself.
        config = {"tokenizer_class": "GemmaTokenizer", "add_bos_token": True, "add_eos_token": False}
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
        try:
            AutoTokenizer.from_pretrained(folder, local_files_only=True).save_pretrained(folder)
        except (OSError, ValueError, ImportError) as e:
            raise ModelError(f"cannot read the embedded SentencePiece tokenizer: {e.__class__.__name__}: {e}") from e
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


def prepend_bos(tokenizer: Any) -> None:
    """Make `tokenizer` start every encoding with BOS, once: ltx-core prepends BOS for Gemma 4 (LTX-2.5), whose
    tokenizer adds none, while diffusers' prompt encoding only asks for the tokenizer's own special tokens. A
    tokenizer that adds BOS already (Gemma 3's) is left as it is."""
    bos = tokenizer.bos_token_id
    if bos is None:
        raise ModelError(f"the text encoder's tokenizer ({type(tokenizer).__name__}) has no BOS token")
    if tokenizer("a").input_ids[:1] == [bos]:
        return
    tokenizer.add_bos_token = True  # transformers rebuilds the post-processor: BOS, then the text
    if tokenizer("a").input_ids[:1] != [bos]:
        raise ModelError(f"cannot make the text encoder's tokenizer ({type(tokenizer).__name__}) prepend BOS")
