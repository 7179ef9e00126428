"""Cheap checks that an input decodes, and the facts planning needs (image size, audio length).

No torch here: `ltx2 validate` runs these for every local input.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import MediaError

# EXIF orientations 5-8 rotate by 90 degrees, swapping width and height.
_SWAPS_AXES = {5, 6, 7, 8}
# Past this, container metadata alone proves the audio is too long; no need to decode it.
_METADATA_SLACK_S = 1.0


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) as displayed, i.e. after EXIF orientation; MediaError if not an image."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.verify()  # structure and checksums; must come right after open
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise MediaError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise MediaError(f"is a directory, not an image: {path}") from None
    except UnidentifiedImageError:
        raise MediaError(f"not an image Pillow can read (PNG, JPEG, WebP, ...): {path}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise MediaError(f"image is damaged or truncated ({e}): {path}") from None
    return (h, w) if orientation in _SWAPS_AXES else (w, h)


def audio_duration(path: Path, max_duration: float | None = None) -> float:
    """Seconds of audio in the first audio stream, by counting decoded samples.

    Decoding is exact where container metadata is not (MP3 without a Xing header, raw AAC).
    When metadata already shows the audio is longer than max_duration, return that instead.
    """
    import av

    if not path.exists():
        raise MediaError(f"file not found: {path}")
    if path.is_dir():
        raise MediaError(f"is a directory, not audio: {path}")
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                raise MediaError(f"has no audio stream: {path}")
            stream = container.streams.audio[0]
            if max_duration is not None and container.duration is not None:
                meta = container.duration / 1_000_000
                if meta > max_duration + _METADATA_SLACK_S:
                    return meta
            samples = 0
            rate = stream.codec_context.sample_rate or stream.rate
            for frame in container.decode(stream):
                samples += frame.samples
                rate = frame.sample_rate or rate
    except MediaError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise MediaError(f"not audio that FFmpeg can decode ({e.__class__.__name__}): {path}") from None
    if not samples or not rate:
        raise MediaError(f"audio stream is empty: {path}")
    return samples / rate
