"""A long clip's finished windows on disk, so a render killed in window k goes on from window k, not from the start.

After each window the engine appends its frames to the clip's FrameStore file, the generated sound that is final
(all but the last window's, whose tail the next window cross-fades) to a raw sound file, and then writes, under a
temp name renamed into place, everything the next window starts from: the seeded generator's state, the window's
overlap frames (float, not yet cross-faded), its generated audio latents and its sound. Both big files only grow,
so a checkpoint costs one window's data however long the clip. The folder is keyed
by the spec hash, the model and the decoded inputs' contents, so a checkpoint of another render (an edited job, a
replaced voice file of the same name) is thrown away, never resumed. The renders it joins are bit-identical to an
uninterrupted one (tests/test_window_resume.py).

The caller owns the folder's lifetime: it is discarded once the clip is delivered; a killed or failed job keeps it
for the rerun.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..media.frame_store import FrameStore

FORMAT = 2  # 2: generated sound placed at each window's exact time (1 drifted ~30 ms a window)
STATE = "state.safetensors"
FRAMES = "frames.rgb"
SOUND = "sound.f32"  # the final part of the generated sound: float32 samples, channels interleaved


class StoppedBetweenWindows(Exception):
    """A stop was asked for (the batch's first Ctrl-C) and the clip's finished windows are checkpointed."""

    def __init__(self, done: int, total: int):
        super().__init__(f"stopped after window {done} of {total}")
        self.done, self.total = done, total


@dataclass
class Resumed:
    """Where the last run stopped: `done` windows finished, and what window `done` starts from."""

    done: int
    frames: int
    generator: torch.Tensor
    pending: np.ndarray | None  # the last window's overlap frames, float (frames, H, W, 3)
    previous: torch.Tensor | None  # its generated audio latents (audio-gen)
    waves: list[np.ndarray]  # the generated sound so far: [the final part,] the last window's
    rate: int


def input_key(*parts: object) -> str:
    """A short hash of strings and arrays (the spec hash, the model, the decoded inputs)."""
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            h.update(repr((part.shape, part.dtype.str)).encode())
            h.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, torch.Tensor):
            h.update(repr((tuple(part.shape), str(part.dtype))).encode())
            h.update(part.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(part).encode())
    return h.hexdigest()[:24]


class WindowCheckpoint:
    def __init__(self, folder: Path, key: str):
        self.folder, self.key = folder, key
        self._written = 0  # leading entries of the engine's `waves` already in the sound file
        self._samples = 0  # samples (per channel) in the sound file

    def load(self) -> Resumed | None:
        """The saved state when it belongs to this render and its frames are all on disk; otherwise the folder is
        cleared and None (start from the first window)."""
        from safetensors import safe_open

        from ..weights.owned import owned

        path = self.folder / STATE
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("key") != self.key or meta.get("format") != str(FORMAT):
                    raise ValueError("another render's checkpoint")
                t = {k: owned(f.get_tensor(k)) for k in f.keys()}  # noqa: SIM118 - safe_open has no iterator
            info = json.loads(meta["info"])
            frames = int(info["frames"])
            if (self.folder / FRAMES).stat().st_size < frames * int(info["frame_bytes"]):
                raise ValueError("frames missing")
            samples, channels = int(info["samples"]), int(info["channels"])
            sound = self._read_sound(samples, channels)
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            self.discard()
            return None
        self._samples, self._written = samples, int(samples > 0)
        return Resumed(
            done=int(info["done"]),
            frames=frames,
            generator=t["generator"],
            pending=t["pending"].numpy() if "pending" in t else None,
            previous=t.get("previous"),
            waves=([sound] if samples else []) + ([t["wave"].numpy()] if "wave" in t else []),
            rate=int(info["rate"]),
        )

    def _read_sound(self, samples: int, channels: int) -> np.ndarray:
        """The sound file's first `samples` (channels, samples); what a killed run appended after is cut off."""
        path = self.folder / SOUND
        if not samples:
            path.unlink(missing_ok=True)
            return np.zeros((channels, 0), np.float32)
        with open(path, "r+b") as f:
            data = np.frombuffer(f.read(samples * channels * 4), np.float32)
            if data.size < samples * channels:
                raise ValueError("sound missing")
            f.truncate(samples * channels * 4)
        return data.reshape(samples, channels).T.copy()

    def frame_store(self, height: int, width: int, limit: int, resumed: Resumed | None) -> FrameStore:
        """The clip's frames file, holding the frames of the windows already finished."""
        return FrameStore(height, width, limit=limit, path=self.folder / FRAMES, count=resumed.frames if resumed else 0)

    def save(
        self,
        done: int,
        generator: torch.Generator,
        frames: FrameStore,
        pending: np.ndarray | None,
        previous: torch.Tensor | None,
        waves: list[np.ndarray],
        rate: int,
    ) -> None:
        from safetensors.torch import save_file

        frames.sync()  # the frames and final sound first: the state may only name what is on disk
        self._append_sound(waves[self._written : len(waves) - 1])
        self._written = max(len(waves) - 1, 0)
        tensors = {"generator": generator.get_state()}
        if pending is not None:
            tensors["pending"] = torch.from_numpy(np.ascontiguousarray(pending))
        if previous is not None:
            tensors["previous"] = previous.detach().to("cpu", copy=True).contiguous()
        if waves:
            tensors["wave"] = torch.from_numpy(np.ascontiguousarray(waves[-1]))
        channels = waves[-1].shape[0] if waves else 0
        info = {"done": done, "frames": frames.count, "frame_bytes": frames.frame_bytes}
        info |= {"samples": self._samples, "channels": channels}
        meta = {"key": self.key, "format": str(FORMAT), "info": json.dumps(info | {"rate": rate})}
        tmp = self.folder / f".{STATE}.{os.getpid()}.part"
        save_file(tensors, str(tmp), metadata=meta)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.folder / STATE)

    def _append_sound(self, final: list[np.ndarray]) -> None:
        if not final:
            return
        with open(self.folder / SOUND, "ab") as f:
            for wave in final:
                f.write(np.ascontiguousarray(wave.T, dtype=np.float32).tobytes())
                self._samples += wave.shape[1]
            f.flush()
            os.fsync(f.fileno())

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
