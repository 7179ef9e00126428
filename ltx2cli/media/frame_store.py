"""Decoded frames on disk instead of in memory: a long clip's frames, appended window by window, as its window
checkpoint keeps them (engine.window_checkpoint) and as a render that writes no MP4 hands them back, so memory
stays that of one window however long the clip is.

Reads go through plain file reads (not a memory map, whose touched pages would count against the process): one
frame, `frames[i]`, or a few, `frames[i:j]` (a resumed clip's finished windows handed to the MP4 writer).
"""

from __future__ import annotations

import os
import tempfile
import weakref
from pathlib import Path

import numpy as np


class FrameStore:
    """uint8 RGB frames (height, width, 3), appended in order, in one file: a temp file deleted with the object, or
    (`path`) a file that outlives it, reopened with its first `count` frames (a long clip's window checkpoint)."""

    def __init__(
        self,
        height: int,
        width: int,
        folder: Path | None = None,
        limit: int | None = None,
        path: Path | None = None,
        count: int = 0,
    ):
        self.height, self.width = height, width
        self.limit = limit  # frames beyond this many are dropped (the clip's exact length)
        temp = path is None
        if path is None:
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix="ltx2-frames-", suffix=".rgb", dir=folder)
            os.close(fd)
            path, count = Path(name), 0
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        self.path, self.count = path, count
        self._file = open(self.path, "r+b")  # noqa: SIM115 - lives as long as the store
        self._file.truncate(count * self.frame_bytes)  # frames a killed run wrote after its last checkpoint
        weakref.finalize(self, _remove if temp else _close, self._file, self.path)

    def sync(self) -> None:
        """Every appended frame on disk (before a checkpoint says they are there)."""
        self._file.flush()
        os.fsync(self._file.fileno())

    @property
    def frame_bytes(self) -> int:
        return self.height * self.width * 3

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (self.count, self.height, self.width, 3)

    def __len__(self) -> int:
        return self.count

    def append(self, frames: np.ndarray) -> None:
        if self.limit is not None:
            frames = frames[: max(self.limit - self.count, 0)]
        if not len(frames):
            return
        assert frames.dtype == np.uint8 and frames.shape[1:] == (self.height, self.width, 3), frames.shape
        self._file.seek(self.count * self.frame_bytes)
        self._file.write(np.ascontiguousarray(frames).tobytes())
        self.count += len(frames)

    def __getitem__(self, index: int | slice) -> np.ndarray:
        """One frame (H, W, 3), or a slice of them (n, H, W, 3) in one read."""
        if isinstance(index, slice):
            start, stop, step = index.indices(self.count)
            if step != 1:
                raise ValueError("a FrameStore reads contiguous frames only")
            return self._read(start, max(stop - start, 0))
        if not -self.count <= index < self.count:
            raise IndexError(index)
        return self._read(index % self.count, 1)[0]

    def _read(self, start: int, count: int) -> np.ndarray:
        self._file.seek(start * self.frame_bytes)
        data = self._file.read(count * self.frame_bytes)
        return np.frombuffer(data, dtype=np.uint8).reshape(count, self.height, self.width, 3)


def _remove(file, path: Path) -> None:
    file.close()
    path.unlink(missing_ok=True)


def _close(file, _path: Path) -> None:
    file.close()
