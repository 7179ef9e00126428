"""Audio in: decode any format FFmpeg reads to float32 samples, resampled and trimmed/padded."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import MediaError


def decode_audio(path: Path, rate: int | None = None, channels: int | None = None) -> tuple[np.ndarray, int]:
    """-> (samples float32 (channels, n), sample rate) of the first audio stream, without an encoder's padding.

    With `rate` / `channels` FFmpeg's resampler converts (1 = mono downmix, 2 = stereo; mono is
    duplicated to stereo). Without them the audio comes back as it is stored.
    """
    import av

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise MediaError(f"has no audio stream: {path}")
            stream = container.streams.audio[0]
            # By channel count, not layout name: WAV stores mono as an unnamed "1 channels" layout.
            # Surround folds down to stereo: a voice track needs no more than two channels.
            layout = {1: "mono", 2: "stereo"}.get(channels or stream.codec_context.channels, "stereo")
            in_rate = stream.codec_context.sample_rate
            out_rate = rate or in_rate
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=out_rate)
            chunks, decoded, last = [], 0, 0
            for frame in container.decode(stream):
                in_rate, decoded, last = frame.sample_rate or in_rate, decoded + frame.samples, frame.samples
                chunks += [f.to_ndarray() for f in resampler.resample(frame)]
            chunks += [f.to_ndarray() for f in resampler.resample(None)]
            kept = round(without_padding(stream, decoded, last, in_rate) * out_rate / in_rate) if decoded else 0
    except MediaError:
        raise
    except (av.error.FFmpegError, ValueError) as e:
        raise MediaError(f"not audio that FFmpeg can decode ({e.__class__.__name__}): {path}") from None
    if not chunks:
        raise MediaError(f"audio stream is empty: {path}")
    samples = np.concatenate(chunks, axis=1)[:, :kept].astype(np.float32)
    bad = first_non_finite(samples)
    if bad is not None:
        raise non_finite_error(bad / out_rate, path)
    return samples, out_rate


def without_padding(stream, decoded: int, last_frame: int, rate: int) -> int:
    """`decoded` samples less an encoder's padding after the end: AAC fills its last frame (1024 samples) with
    silence, which would lengthen a lip-sync clip by a frame. The stream's duration caps them where the container
    states one (an MP4's edit list); short by a whole frame or more, it is an estimate (ADTS, MP3 without a Xing
    header) and the decoded count stands."""
    if not stream.duration or not stream.time_base:
        return decoded
    stated = round(stream.duration * stream.time_base * rate)
    return stated if decoded - last_frame < stated < decoded else decoded


def planar(frame) -> np.ndarray:
    """A decoded av.AudioFrame's samples as (channels, n), whether FFmpeg stores them planar or interleaved."""
    samples = frame.to_ndarray()
    return samples if frame.format.is_planar else samples.reshape(-1, len(frame.layout.channels)).T


def first_non_finite(samples: np.ndarray) -> int | None:
    """Index of the first sample (channels, n) that is NaN or infinite in any channel; None if all are numbers."""
    bad = ~np.isfinite(samples).all(axis=0)
    return int(bad.argmax()) if bad.any() else None


def non_finite_error(seconds: float, path: Path) -> MediaError:
    # A float WAV can hold them; FFmpeg's AAC encoder refuses them and the model turns them into NaN frames.
    return MediaError(f"contains NaN or infinite samples (the first at {seconds:.3f} s): {path}")


def fit_length(samples: np.ndarray, n: int) -> np.ndarray:
    """Trim to n samples, or pad the end with silence."""
    if samples.shape[1] >= n:
        return samples[:, :n]
    return np.pad(samples, ((0, 0), (0, n - samples.shape[1])))
