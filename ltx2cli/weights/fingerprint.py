"""What makes two weight files the same weights, cheaply: a hash of their headers and of the first bytes of every
tensor's data. Names, shapes and metadata alone cannot tell a dev checkpoint from a distilled one or a fine-tune
(same layout, other numbers), yet encoded prompts are stored under the model's identity; hashing 26 GB would take
minutes. Any training or merge changes the leading values of the tensors it touches, so this reads
64 bytes per tensor (a few MB for a whole model) and still tells them apart.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from .header import read_header

SAMPLE = 64  # bytes read from the start of each tensor's data


def fingerprint(files: Iterable[Path]) -> str:
    """12 hex digits standing for the contents of these safetensors files (in name order)."""
    digest = hashlib.sha256()
    for path in sorted(files):
        header = read_header(path)
        digest.update(f"{path.name}:{path.stat().st_size}:{sorted(header.metadata.items())}".encode())
        with path.open("rb") as f:
            for name, info in sorted(header.tensors.items(), key=lambda kv: kv[1].offsets):
                f.seek(header.data_start + info.offsets[0])
                digest.update(f"{name}{info.dtype}{info.shape}".encode())
                digest.update(f.read(min(SAMPLE, info.offsets[1] - info.offsets[0])))
    return digest.hexdigest()[:12]
