"""Checks that an input decodes whole, and the facts planning needs (image size, audio length).

No torch here: `ltx2 validate` runs these for every local input.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import MediaError
from .audio import first_non_finite, non_finite_error, planar, without_padding

# EXIF orientations 5-8 rotate by 90 degrees, swapping width and height.
_SWAPS_AXES = {5, 6, 7, 8}
# Past this, container metadata alone proves the audio is too long; no need to decode it.
_METADATA_SLACK_S = 1.0


@contextmanager
def opened_image(path: Path) -> Iterator[Any]:
    """Image.open as a context: the file failing to open, or to decode inside the block, is a MediaError."""
    from PIL import Image, UnidentifiedImageError

    # Pillow warns from 89 MP and refuses from 179 MP: the refusal is reported below, the warning is only noise.
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    try:
        with Image.open(path) as im:
            yield im
    except FileNotFoundError:
        raise MediaError(f"file not found: {path}") from None
    except IsADirectoryError:
        raise MediaError(f"is a directory, not an image: {path}") from None
    except UnidentifiedImageError:
        raise MediaError(f"not an image Pillow can read (PNG, JPEG, WebP, ...): {path}") from None
    except Image.DecompressionBombError as e:
        raise MediaError(f"{_too_large(e)}; scale it down: {path}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise MediaError(f"image is damaged or truncated ({e}): {path}") from None


def _too_large(error: Exception) -> str:
    from PIL import Image

    limit = f"the {2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} MP Pillow decodes safely"
    pixels = re.search(r"\((\d+) pixels\)", str(error))  # Pillow says "Image size (N pixels) exceeds limit ..."
    return f"{int(pixels[1]) / 1e6:.0f} MP is over {limit}" if pixels else f"over {limit} ({error})"


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) as displayed, i.e. after EXIF orientation; MediaError unless the whole image decodes.

    Decoding is what finds a truncated JPEG (verify() reads none of its data). A JPEG decodes at 1/8 scale (draft):
    every byte is still read, for 1/64 of the pixels.
    """
    with opened_image(path) as im:
        w, h = im.size
        orientation = im.getexif().get(0x0112, 1)
        im.draft(None, (1, 1))  # other formats ignore it
        im.load()
    return (h, w) if orientation in _SWAPS_AXES else (w, h)


def audio_duration(path: Path, max_duration: float | None = None) -> float:
    """Seconds of audio in the first audio stream, by counting decoded samples (and checking they are numbers).

    Decoding is exact where container metadata is not (MP3 without a Xing header, raw AAC); an encoder's padding
    after the end does not count (audio.without_padding). When metadata already shows the audio is longer than
    max_duration, return that instead.
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
            samples = last = 0
            rate = stream.codec_context.sample_rate or stream.rate
            for frame in container.decode(stream):
                rate = frame.sample_rate or rate
                _check_finite(frame, samples, rate, path)
                samples, last = samples + frame.samples, frame.samples
            samples = without_padding(stream, samples, last, rate)
    except MediaError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as e:
        raise MediaError(f"not audio that FFmpeg can decode ({e.__class__.__name__}): {path}") from None
    if not samples or not rate:
        raise MediaError(f"audio stream is empty: {path}")
    return samples / rate


def _check_finite(frame: Any, start: int, rate: int, path: Path) -> None:
    """MediaError if a decoded float frame holds NaN or inf; `start`: its first sample's index in the stream."""
    if frame.format.name not in ("flt", "fltp", "dbl", "dblp"):
        return  # integer samples are always numbers
    bad = first_non_finite(planar(frame))
    if bad is not None:
        raise non_finite_error((start + bad) / rate, path)
