"""Real media files for tests, written with PIL and PyAV (no fixtures checked in)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

# suffix -> (container format, codec, sample format)
AUDIO_CODECS = {
    ".wav": ("wav", "pcm_s16le", "s16"),
    ".mp3": ("mp3", "libmp3lame", "fltp"),
    ".m4a": ("mp4", "aac", "fltp"),
    ".flac": ("flac", "flac", "s16"),
    ".ogg": ("ogg", "libopus", "flt"),
}


def write_image(path: Path, size=(96, 64), mode="RGB", exif_orientation: int | None = None) -> Path:
    w, h = size
    ramp = np.linspace(0, 255, w * h, dtype=np.uint8).reshape(h, w)
    im = Image.fromarray(np.stack([ramp, ramp[::-1], np.full_like(ramp, 90)], axis=-1), "RGB").convert(mode)
    kwargs = {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif
    im.save(path, **kwargs)
    return path


def write_truncated_jpeg(path: Path, size=(64, 96), keep: float = 1 / 3) -> Path:
    """A JPEG of noise cut after `keep` of its bytes: headers intact, so only decoding finds it broken."""
    w, h = size
    noise = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: round(len(data) * keep)])
    return path


def write_blank_png(path: Path, size: tuple[int, int]) -> Path:
    """A 1-bit black PNG: cheap to write and decode at any pixel count (100 MP: 12 MB in memory)."""
    Image.new("1", size).save(path)
    return path


def tone(seconds: float, rate: int, channels: int = 1, freq: float = 220.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    mono = 0.3 * np.sin(2 * np.pi * freq * t)
    return np.repeat(mono[None, :], channels, axis=0).astype(np.float32)


def write_audio(path: Path, seconds: float, rate: int = 16000, channels: int = 1) -> Path:
    return write_waveform(path, tone(seconds, rate, channels), rate)


def write_waveform(path: Path, samples: np.ndarray, rate: int) -> Path:
    """float samples (channels, n) at `rate` -> an audio file whose format follows the suffix (Opus: 48 kHz)."""
    fmt, codec, sample_fmt = AUDIO_CODECS[path.suffix]
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    out_rate = 48000 if codec == "libopus" else rate
    samples = np.ascontiguousarray(samples, dtype=np.float32)
    with av.open(str(path), "w", format=fmt) as out:
        stream = out.add_stream(codec, rate=out_rate, layout=layout)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts, frame.time_base = 0, Fraction(1, rate)  # so an MP4 gets an edit list, as FFmpeg's CLI writes it
        resampler = av.AudioResampler(format=sample_fmt, layout=layout, rate=out_rate)
        for f in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(f):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path


def write_float_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """32-bit float WAV (channels, n): the one common format that stores NaN and inf as they are."""
    import soundfile

    soundfile.write(path, samples.T, rate, subtype="FLOAT")
    return path


def write_non_finite_wav(path: Path, seconds: float = 1.0, rate: int = 16000, at: float = 0.25) -> Path:
    """A float WAV tone whose second channel is NaN at `at` seconds and inf just after."""
    samples = tone(seconds, rate, channels=2)
    i = round(at * rate)
    samples[1, i], samples[1, i + 1] = np.nan, np.inf
    return write_float_wav(path, samples, rate)


def write_video_with_audio(path: Path, seconds: float, fps: int = 24, rate: int = 16000) -> Path:
    """An MP4 (H.264 + AAC): usable as an audio source for lipsync."""
    with av.open(str(path), "w") as out:
        v = out.add_stream("libx264", rate=fps)
        v.width, v.height, v.pix_fmt = 64, 48, "yuv420p"
        a = out.add_stream("aac", rate=rate, layout="mono")
        for i in range(round(seconds * fps)):
            img = np.full((48, 64, 3), (i * 9) % 255, dtype=np.uint8)
            for packet in v.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in v.encode(None):
            out.mux(packet)
        frame = av.AudioFrame.from_ndarray(tone(seconds, rate), format="flt", layout="mono")
        frame.sample_rate = rate
        frame.pts, frame.time_base = 0, Fraction(1, rate)  # an edit list: players skip AAC's priming
        for f in [*av.AudioResampler(format="fltp", layout="mono", rate=rate).resample(frame)]:
            for packet in a.encode(f):
                out.mux(packet)
        for packet in a.encode(None):
            out.mux(packet)
    return path
