"""safetensors headers read without loading a byte of tensor data (instant even for a 26 GB checkpoint).

A safetensors file is an 8-byte little-endian header length, a JSON header (`{name: {dtype, shape,
data_offsets}}` plus an optional `__metadata__` of string values), then the raw data. Only the first two are read.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path

MAX_HEADER = 100 * 2**20  # the format's own limit on the JSON header
# Bytes per element of the safetensors dtype names.
DTYPE_BYTES = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
    "U8": 1, "U16": 2, "U32": 4, "U64": 8, "BOOL": 1,
}  # fmt: skip
FP8_DTYPES = frozenset({"F8_E4M3", "F8_E5M2"})


class HeaderError(ValueError):
    """The file is not a readable safetensors file."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: str  # safetensors name: BF16, F8_E4M3, ...
    shape: tuple[int, ...]
    offsets: tuple[int, int] = (0, 0)  # its bytes in the data section (after the header)

    @property
    def numel(self) -> int:
        return prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_BYTES.get(self.dtype, 0)

    @property
    def is_fp8(self) -> bool:
        return self.dtype in FP8_DTYPES


@dataclass(frozen=True)
class Header:
    path: Path
    metadata: dict[str, str]
    tensors: dict[str, TensorInfo]
    data_start: int = 0  # where the data section begins in the file: 8 + the header's length

    def json_metadata(self, key: str) -> dict | None:
        """A metadata value that holds JSON (Lightricks' `config`), parsed; None if absent or not a JSON object
        (json_error says which)."""
        return self._json(key)[0]

    def json_error(self, key: str) -> str | None:
        """Why metadata `key` is not a JSON object, in words (`config` metadata is not valid JSON (...)); None if it
        is one or is absent."""
        return self._json(key)[1]

    def _json(self, key: str) -> tuple[dict | None, str | None]:
        raw = self.metadata.get(key)
        if raw is None:
            return None, None
        try:
            value = json.loads(raw)
        except ValueError as e:
            return None, f"`{key}` metadata is not valid JSON ({e})"
        if not isinstance(value, dict):
            return None, f"`{key}` metadata is JSON but not an object (a {type(value).__name__})"
        return value, None


def read_header(path: str | Path) -> Header:
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise HeaderError(f"{path}: not a safetensors file (shorter than 8 bytes)")
            (length,) = struct.unpack("<Q", head)
            if not 2 <= length <= MAX_HEADER:
                raise HeaderError(f"{path}: not a safetensors file (header length {length})")
            raw = f.read(length)
    except OSError as e:
        raise HeaderError(f"{path}: cannot read: {e.strerror or e}") from e
    if len(raw) < length:
        raise HeaderError(f"{path}: truncated safetensors header")
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise HeaderError(f"{path}: not a safetensors file (header is not JSON: {e})") from e
    if not isinstance(doc, dict):
        raise HeaderError(f"{path}: not a safetensors file (header is not a JSON object)")
    metadata = doc.pop("__metadata__", None) or {}
    tensors = {}
    for name, info in doc.items():
        try:
            begin, end = (int(o) for o in info.get("data_offsets", (0, 0)))
            tensors[name] = TensorInfo(str(info["dtype"]), tuple(int(d) for d in info["shape"]), (begin, end))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise HeaderError(f"{path}: bad header entry for tensor {name!r}") from e
    wanted = 8 + length + max((t.offsets[1] for t in tensors.values()), default=0)
    size = path.stat().st_size
    if size < wanted:  # a download or copy cut short: the header is whole, the data is not
        raise HeaderError(
            f"{path}: truncated: {size / 2**20:.1f} of {wanted / 2**20:.1f} MiB; copy or download it again"
        )
    return Header(path, {str(k): str(v) for k, v in metadata.items()}, tensors, data_start=8 + length)
