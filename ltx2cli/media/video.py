"""Video out: H.264 (yuv420p) + AAC in an MP4 with faststart, written under a temp name then renamed.

One way of writing video, `VideoWriter`: frames are encoded on a thread of their own while the caller makes the
next ones (a render hands each decoded chunk over as it exists), and the sound is muxed at `finish`.
`write_mp4` is the same writer fed from frames already made.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Collection, Sequence
from fractions import Fraction
from pathlib import Path

import numpy as np

# x264's speed preset. At crf 18, veryfast encoded 768x512 frames 1.85x faster than medium at the same PSNR
# (42.0 vs 42.3 dB on smooth content, files ~15% larger); on an H200 host the medium encode of a 10-s clip took
# 3.8 s beside a 10-s render, so the preset matters end to end (bench/RESULTS.md, 2026-11-30).
X264_PRESET = "veryfast"
# Sample rates AAC carries as they are; anything else is resampled to 48 kHz.
AAC_RATES = {8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000}
# Frames waiting for the encoder, in bytes, before `append` waits for it: a 10-s 768x512 clip (355 MB) never
# waits; a longer or larger one keeps its memory bounded (what the encoder has not taken yet) instead of growing.
QUEUE_BYTES = 2 << 30


def temp_path(path: Path) -> Path:
    """A sibling name no reader mistakes for a finished file (same folder, so rename is atomic)."""
    return path.with_name(f".{path.stem}.{os.getpid()}.part.mp4")


def write_mp4(
    path: Path,
    frames: np.ndarray | Sequence[np.ndarray],
    fps: float,
    audio: np.ndarray | None = None,
    sample_rate: int | None = None,
    crf: int = 18,
    preset: str = X264_PRESET,
) -> Path:
    """Mux uint8 RGB frames (n, h, w, 3) and float audio (channels, samples) into `path`.

    The audio is cut or padded to exactly n / fps seconds, so both streams end together.
    """
    n, height, width = len(frames), *frames[0].shape[:2]
    with VideoWriter(path, fps, width, height, crf, preset) as writer:
        writer.sound_format(None if audio is None else _require_rate(sample_rate), _channels(audio))
        for start in range(0, n, 64):  # a FrameStore's frames are read from disk a few at a time
            chunk = frames[start : start + 64]
            writer.append(chunk if isinstance(chunk, np.ndarray) else np.stack(chunk))
        return writer.finish(audio, sample_rate)


class VideoWriter:
    """An MP4 written while its frames are still being made.

    `append` queues uint8 RGB frames (n, height, width, 3) for an encoder thread and returns (it waits only while
    QUEUE_BYTES are queued); x264 runs its own frame threads on the host's cores. MP4 declares every stream before
    the first packet, so the thread starts encoding once `sound_format` says what the sound will be (or `finish`
    says there is none). `finish(audio)` waits for the picture, encodes the sound, cut or padded to the frames'
    length, and renames the file into place; the encoder's error, if any, is raised there. `abort` (or leaving a
    `with` block without `finish`) stops the thread and removes the temp file.

    `keep`: frame indices whose frames are kept (copied) in `kept` as they pass, e.g. for thumbnails.
    """

    def __init__(
        self,
        path: Path,
        fps: float,
        width: int,
        height: int,
        crf: int = 18,
        preset: str = X264_PRESET,
        keep: Collection[int] = (),
        queue_bytes: int = QUEUE_BYTES,
    ):
        self.path, self.fps, self.width, self.height = path, fps, width, height
        self.crf, self.preset, self.queue_bytes = crf, preset, queue_bytes
        self.kept: dict[int, np.ndarray] = {}
        self.frames = 0  # appended so far
        self.encoded = 0  # taken by the encoder so far
        self.busy = 0.0  # seconds the encoder thread spent converting and encoding frames
        self.first_encoded: float | None = None  # time.perf_counter() when the first frame went to x264
        self._keep = frozenset(keep)
        self._queue: deque[np.ndarray] = deque()
        self._queued = 0  # bytes in _queue
        self._cond = threading.Condition()
        self._sound: tuple[int, int] | None = None  # (stream rate, channels) of the AAC stream; None: no sound
        self._sound_known = False  # encoding waits for this: MP4 declares every stream before the first packet
        self._audio: tuple[np.ndarray, int] | None = None
        self._closing = False  # finish() was called: no more frames, the thread may close the file
        self._aborted = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="ltx2-encode", daemon=True)
        self._thread.start()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread.is_alive():
            self.abort()

    def sound_format(self, rate: int | None, channels: int = 2) -> None:
        """The sound `finish` will bring: its sample rate and channels (it is converted to this if it differs);
        rate None: the MP4 has no sound. The first call counts."""
        with self._cond:
            if not self._sound_known:
                self._sound = None if rate is None else (rate if rate in AAC_RATES else 48000, min(channels, 2))
                self._sound_known = True
                self._cond.notify_all()

    def append(self, frames: np.ndarray) -> None:
        """Queue frames for the encoder; after an encoder error they are dropped (`finish` raises it)."""
        if frames.dtype != np.uint8 or frames.shape[1:] != (self.height, self.width, 3):
            want = f"uint8 ({self.height}, {self.width}, 3)"
            raise ValueError(f"frames must be {want}, got {frames.dtype} {frames.shape}")
        for index in self._keep & set(range(self.frames, self.frames + len(frames))):
            self.kept[index] = frames[index - self.frames].copy()
        self.frames += len(frames)
        with self._cond:
            # waits only for an encoder that is taking frames (not one still waiting for the sound's format)
            while self._queued > self.queue_bytes and self._sound_known and not self._aborted:
                self._cond.wait()
            if self._aborted:  # stopped, or the encoder failed
                return
            self._queue.append(frames)
            self._queued += frames.nbytes
            self._cond.notify_all()

    def finish(self, audio: np.ndarray | None = None, sample_rate: int | None = None) -> Path:
        """Wait for every frame to be encoded, mux `audio` (channels, samples) and rename the file into place."""
        if audio is not None:
            self._audio = (audio, _require_rate(sample_rate))
        self.sound_format(None if audio is None else sample_rate, _channels(audio))
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        self._thread.join()
        if self._error is not None:
            e = self._error
            if isinstance(e, OSError) and e.filename in (None, str(temp_path(self.path))):
                raise OSError(e.errno, e.strerror, str(self.path)) from e  # the file asked for, not our temp name
            raise e
        return self.path

    def abort(self) -> None:
        """Stop encoding and remove the temp file (a render that failed)."""
        with self._cond:
            self._aborted = True
            self._queue.clear()
            self._cond.notify_all()
        self._thread.join()

    def _next(self) -> np.ndarray | None:
        """The next queued frames; None once finish() was called and none are left, or on abort."""
        with self._cond:
            while not self._queue and not self._closing and not self._aborted:
                self._cond.wait()
            if self._aborted or not self._queue:
                return None
            frames = self._queue.popleft()
            self._queued -= frames.nbytes
            self._cond.notify_all()
            return frames

    def _run(self) -> None:
        import av

        from .image import yuv420p_frame

        tmp = temp_path(self.path)
        try:
            with self._cond:  # the streams first: wait until the sound is known, or known to be absent
                while not self._sound_known and not self._closing and not self._aborted:
                    self._cond.wait()
            if self._aborted:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with av.open(str(tmp), "w", format="mp4", options={"movflags": "+faststart"}) as out:
                video = out.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
                video.width, video.height, video.pix_fmt = self.width, self.height, "yuv420p"
                video.options = {"crf": str(self.crf), "preset": self.preset}
                # Frame threading: 199 vs 154 fps for PyAV's default slice threading (768x512, veryfast, 2 cores);
                # thread_count 0: x264 picks its thread count from the host's cores.
                video.thread_type, video.thread_count = "FRAME", 0
                a_stream = None
                if self._sound is not None:
                    rate, channels = self._sound
                    layout = "mono" if channels == 1 else "stereo"
                    a_stream = out.add_stream("aac", rate=rate, layout=layout)
                    a_stream.bit_rate = 192_000 if layout == "stereo" else 128_000
                while (frames := self._next()) is not None:
                    t0 = time.perf_counter()
                    if self.first_encoded is None:
                        self.first_encoded = t0
                    for rgb in frames:
                        frame = yuv420p_frame(rgb)
                        frame.pts = self.encoded  # in 1/fps units: the stream's codec time base
                        out.mux(video.encode(frame))
                        self.encoded += 1
                    self.busy += time.perf_counter() - t0
                if self._aborted:
                    return
                out.mux(video.encode(None))
                if a_stream is not None:
                    samples = _fit(self._audio, *self._sound, round(self.encoded / self.fps * self._sound[0]))
                    _encode_audio(out, a_stream, samples, self._sound[0])
            os.replace(tmp, self.path)
        except BaseException as e:  # handed to finish(), which raises it on the caller's thread
            self._error = e
        finally:
            tmp.unlink(missing_ok=True)
            with self._cond:
                self._aborted = self._aborted or self._error is not None  # later appends drop their frames
                self._cond.notify_all()


def _channels(audio: np.ndarray | None) -> int:
    return 0 if audio is None else np.atleast_2d(audio).shape[0]


def _require_rate(rate: int | None) -> int:
    if rate is None:
        raise ValueError("sample_rate is required with audio")
    return rate


def _fit(audio: tuple[np.ndarray, int] | None, rate: int, channels: int, wanted: int) -> np.ndarray:
    """The sound as the AAC stream takes it: float32 (channels, wanted) at `rate`; silence where there is none."""
    if audio is None:
        return np.zeros((channels, wanted), np.float32)
    samples = _resampled(np.atleast_2d(np.asarray(audio[0], dtype=np.float32)), audio[1], rate)
    if samples.shape[0] != channels:  # mono to both sides; more than two: the first two (mono: their first)
        samples = np.repeat(samples, 2, axis=0) if samples.shape[0] == 1 else samples[:channels]
    samples = samples[:, :wanted]
    if samples.shape[1] < wanted:
        samples = np.pad(samples, ((0, 0), (0, wanted - samples.shape[1])))
    return samples


def _resampled(audio: np.ndarray, rate: int, to: int) -> np.ndarray:
    if rate == to:
        return audio
    import av

    audio = audio[:2]
    layout = "mono" if audio.shape[0] == 1 else "stereo"
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(audio), format="fltp", layout=layout)
    frame.sample_rate = rate
    resampler = av.AudioResampler(format="fltp", layout=layout, rate=to)
    chunks = [f.to_ndarray() for f in [*resampler.resample(frame), *resampler.resample(None)]]
    return np.concatenate(chunks, axis=1)


def _encode_audio(out, stream, samples: np.ndarray, rate: int) -> None:
    import av

    layout = "mono" if samples.shape[0] == 1 else "stereo"
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="fltp", layout=layout)
    frame.sample_rate = rate
    # A pts on the input lets the muxer write an edit list, so players skip the encoder's priming.
    frame.pts, frame.time_base = 0, Fraction(1, rate)
    for packet in stream.encode(frame):
        out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
