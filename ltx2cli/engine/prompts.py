"""Encoded prompts on disk, by (model identity, prompt length, text, negative): a batch encodes every distinct
prompt in one text-encoder phase before its first denoise, and a resumed or repeated batch encodes none again.

One small safetensors file per prompt (the connectors' outputs and mask, on the CPU) under
$LTX2_CACHE_DIR/prompts; written under a temp name and renamed, so a killed run leaves no half file.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..cache import cache_root
from .guidance import Prompt


class PromptStore:
    def __init__(self, identity: str, max_sequence_length: int, folder: Path | None = None):
        self.folder = folder or cache_root() / "prompts"
        self.identity, self.max_sequence_length = identity, max_sequence_length

    def path(self, text: str, negative: str | None, adapted: str = "") -> Path:
        """`adapted`: the LoRAs on the text connectors (Models.connector_lora_key; "" for none)."""
        key = json.dumps([self.identity, self.max_sequence_length, text, negative] + ([adapted] if adapted else []))
        return self.folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.safetensors"

    def get(self, text: str, negative: str | None, adapted: str = "") -> Prompt | None:
        from safetensors.torch import load_file

        from ..weights.owned import owned

        path = self.path(text, negative, adapted)
        if not path.is_file():
            return None
        try:
            t = {k: owned(v) for k, v in load_file(path).items()}
            return Prompt(t["video"], t["audio"], t["mask"])
        except (OSError, KeyError, ValueError):  # a damaged file is encoded again
            return None

    def put(self, text: str, negative: str | None, prompt: Prompt, adapted: str = "") -> None:
        from safetensors.torch import save_file

        path = self.path(text, negative, adapted)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.stem}.{os.getpid()}.part")
            tensors = {"video": prompt.video, "audio": prompt.audio, "mask": prompt.mask}
            save_file({k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}, str(tmp))
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only or full cache only costs encoding again next time
