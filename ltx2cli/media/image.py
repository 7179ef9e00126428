"""Conditioning images: load any photo the way a person sees it, fit it to the render size, and
optionally pass it through one H.264 frame so it looks like video (the original's img_compression).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from ..errors import MediaError
from .probe import opened_image

BACKGROUND = (255, 255, 255)  # transparent areas become white, as in most viewers


def load_image(path: Path):
    """RGB PIL image, EXIF orientation applied, alpha flattened, CMYK / greyscale / 16-bit converted."""
    from PIL import Image, ImageOps

    with opened_image(path) as im:
        im = ImageOps.exif_transpose(im)
        im.load()
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return flat
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        im = im.point(lambda v: v / 256).convert("L")  # 16-bit greyscale -> 8-bit
    if im.mode == "F":  # float greyscale (scientific TIFFs): 0..1 is its usual range; Pillow would cut it to black
        values = np.nan_to_num(np.asarray(im, dtype=np.float32))
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        im = Image.fromarray(np.clip(values * scale, 0, 255).round().astype(np.uint8), "L")
    return im.convert("RGB")


def fit(image, width: int, height: int):
    """Cover-resize and centre-crop to exactly width x height (no stretching, no borders)."""
    from PIL import Image, ImageOps

    return ImageOps.fit(image, (width, height), method=Image.Resampling.LANCZOS, centering=(0.5, 0.5))


def yuv420p_frame(rgb: np.ndarray):
    """An av.VideoFrame in yuv420p from RGB uint8 (H, W, 3), converted here rather than by the encoder. Handed an
    rgb24 frame, PyAV converts it inside `encode` and libx264's output varies from run to run for the same pixels
    (4 different files in 150 encodes of one 64x96 clip; 150 identical ones converted first). Under CPU load x264
    itself still varies now and then for some content (3 of 60 encodes), which no option here removed."""
    import av

    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")


def h264_round_trip(frame: np.ndarray, crf: int) -> np.ndarray:
    """Encode one RGB uint8 frame as yuv420p H.264 at `crf` and decode it back; crf 0 = unchanged."""
    if crf == 0:
        return frame
    import av

    height, width, _ = frame.shape
    encoder = av.CodecContext.create("libx264", "w")
    encoder.width, encoder.height, encoder.pix_fmt = width, height, "yuv420p"
    encoder.time_base = Fraction(1, 25)
    encoder.options = {"crf": str(crf), "preset": "medium"}
    decoder = av.CodecContext.create("h264", "r")
    packets = [*encoder.encode(yuv420p_frame(frame)), *encoder.encode(None)]
    decoded = [f for p in packets for f in decoder.decode(p)] + list(decoder.decode(None))
    if not decoded:
        raise MediaError("H.264 round trip produced no frame")
    return decoded[0].to_ndarray(format="rgb24")


def conditioning_frame(path: Path, width: int, height: int, crf: int) -> np.ndarray:
    """The pixels the model is conditioned on: loaded, fitted, compressed; uint8 (H, W, 3)."""
    return h264_round_trip(np.asarray(fit(load_image(path), width, height)), crf)
