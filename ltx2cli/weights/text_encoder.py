"""Gemma 3 from a ComfyUI single file (`text_encoders/gemma_3_12B_it.safetensors`, `..._fp8_scaled.safetensors`).

ComfyUI stores the language model under transformers' Gemma3ForCausalLM names (`model.layers.N.*`,
`model.embed_tokens.weight`, `model.norm.weight`), the SentencePiece tokenizer as a uint8 tensor `spiece_model`,
and, in "fp8_scaled" files, float8 weights with a float32 scale beside each (`<layer>.scale_weight`, or
`<layer>.weight_scale` in the newer `comfy_quant` format) and a `scaled_fp8` marker. LTX-2 reads only the
language model's hidden states, so vision tower tensors, if any, are left out.

The architecture's sizes come from the tensor shapes; what shapes cannot say (RoPE, sliding window) is Gemma 3's,
from the shipped reference config.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from ..engine.models import ModelError
from .header import Header, HeaderError, read_header

SPIECE = "spiece_model"
SCALE_NAMES = (".scale_weight", ".weight_scale")
COMFY_EXTRAS = ("scaled_fp8", ".scale_input", ".input_scale", ".comfy_quant")


def is_comfy_gemma(path: Path) -> bool:
    try:
        keys = read_header(path).tensors
    except HeaderError:
        return False
    return any(k.startswith("model.layers.") for k in keys)


def gemma_config(header: Header) -> dict[str, Any]:
    """Gemma3TextConfig fields: sizes from the shapes, the rest from the reference Gemma 3 12B config."""
    from ..engine.random_weights import reference_config_dir

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


def load_comfy_gemma(path: Path, device: Any, dtype: Any) -> tuple[Any, Any]:
    """(Gemma3ForCausalLM, tokenizer) from a ComfyUI Gemma 3 file."""
    import torch
    from accelerate import init_empty_weights
    from safetensors import safe_open
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    try:
        header = read_header(path)
    except HeaderError as e:
        raise ModelError(str(e)) from e
    if SPIECE not in header.tensors:
        raise ModelError(
            f"{path.name} has no embedded tokenizer (spiece_model): pass --text-encoder DIR with Gemma 3's "
            "tokenizer.model or tokenizer.json beside its config.json"
        )
    config = Gemma3TextConfig(**gemma_config(header))
    with init_empty_weights(include_buffers=False):
        model = Gemma3ForCausalLM(config)
    model = model.to(dtype)
    wanted = {k for k in model.state_dict() if k != "lm_head.weight"}  # lm_head is the tied embedding
    state = {}
    with safe_open(str(path), framework="pt", device="cpu") as f:
        for key in wanted:
            if key not in header.tensors:
                raise ModelError(f"{path.name}: Gemma tensor {key} is missing from the file")
            tensor = f.get_tensor(key)
            scale = next(
                (n for n in (key.removesuffix(".weight") + s for s in SCALE_NAMES) if n in header.tensors), None
            )
            if header.tensors[key].is_fp8:
                if scale is None:
                    raise ModelError(f"{path.name}: FP8 tensor {key} has no scale_weight / weight_scale beside it")
                tensor = tensor.float() * f.get_tensor(scale).float()
            state[key] = tensor.to(dtype).to(device)
        tokenizer = _tokenizer(f.get_tensor(SPIECE).numpy().tobytes())
    model.load_state_dict(state, strict=False, assign=True)
    model.tie_weights()
    missing = [k for k, v in model.state_dict().items() if v.is_meta]
    if missing:
        raise ModelError(f"{path.name}: Gemma tensor {missing[0]} is missing from the file")
    torch.set_grad_enabled(False)
    return model.to(device).eval().requires_grad_(False), tokenizer


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
