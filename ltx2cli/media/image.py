"""Conditioning images, prepared as Lightricks' ltx-pipelines prepares them (`load_image_and_preprocess` in
packages/ltx-pipelines/src/ltx_pipelines/utils/media_io/decode.py and resize.py, Lightricks/LTX-2 @ 400fd31; the
same steps at the release, 9ce438b): load the photo the way a person sees it (sRGB), pass it through one H.264
frame at its own resolution so it looks like video (the original's img_compression), then cover-resize and
centre-crop it to the render size, kept as float for the VAE.
"""

from __future__ import annotations

import math
from io import BytesIO
from pathlib import Path

import numpy as np

from ..errors import MediaError
from .probe import opened_image

BACKGROUND = (255, 255, 255)  # transparent areas become white, as in most viewers


def load_image(path: Path):
    """RGB PIL image in sRGB, EXIF orientation applied, alpha flattened, CMYK / greyscale / 16-bit converted."""
    from PIL import Image, ImageOps

    with opened_image(path) as im:
        icc = im.info.get("icc_profile")
        im = ImageOps.exif_transpose(im)
        im.load()
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        flat = Image.new("RGB", rgba.size, BACKGROUND)
        flat.paste(rgba, mask=rgba.getchannel("A"))
        return to_srgb(flat, icc)
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        im = im.point(lambda v: v / 256).convert("L")  # 16-bit greyscale -> 8-bit
    if im.mode == "F":  # float greyscale (scientific TIFFs): 0..1 is its usual range; Pillow would cut it to black
        values = np.nan_to_num(np.asarray(im, dtype=np.float32))
        scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
        im = Image.fromarray(np.clip(values * scale, 0, 255).round().astype(np.uint8), "L")
    return to_srgb(im, icc)


def to_srgb(im, icc: bytes | None):
    """RGB in sRGB: an embedded ICC profile converted as ltx-pipelines' `decode_image` does (a wide-gamut or
    CMYK photo keeps its colours); without one, or one that does not fit the pixels, a plain conversion."""
    from PIL import ImageCms

    if icc:
        try:
            source = ImageCms.ImageCmsProfile(BytesIO(icc))
            return ImageCms.profileToProfile(im, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError):
            pass
    return im.convert("RGB")


def cover_crop(frames: np.ndarray, width: int, height: int) -> np.ndarray:
    """Frames (..., H, W, 3), uint8 or float, cover-resized and centre-cropped to exactly width x height (no
    stretching, no borders), float32 0..255 unrounded: ltx-pipelines' `resize_and_center_crop` (scale to cover,
    sizes rounded up, bilinear without antialiasing, the crop's offsets rounded down)."""
    import torch

    x = torch.from_numpy(np.array(frames, dtype=np.float32)).reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2)
    src_h, src_w = x.shape[-2:]
    scale = max(height / src_h, width / src_w)
    new_h, new_w = math.ceil(src_h * scale), math.ceil(src_w * scale)
    x = torch.nn.functional.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    x = x[:, :, top : top + height, left : left + width].permute(0, 2, 3, 1)
    return x.reshape(*frames.shape[:-3], height, width, 3).numpy()


def yuv420p_frame(rgb: np.ndarray):
    """An av.VideoFrame in yuv420p from RGB uint8 (H, W, 3), converted here rather than by the encoder. Handed an
    rgb24 frame, PyAV converts it inside `encode` and libx264's output varies from run to run for the same pixels
    (4 different files in 150 encodes of one 64x96 clip; 150 identical ones converted first). Under CPU load x264
    itself still varies now and then for some content (3 of 60 encodes), which no option here removed."""
    import av

    return av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24").reformat(format="yuv420p")


def h264_round_trip(frame: np.ndarray, crf: int) -> np.ndarray:
    """One RGB uint8 frame through H.264 at `crf` and back, as ltx-pipelines' `preprocess` does it: cropped to
    even sides (from the top left), yuv420p, an MP4 at 1 fps, x264's veryfast preset; the rate and the preset
    both change x264's choices. crf 0 (or a side under 2) = unchanged."""
    if crf == 0 or min(frame.shape[:2]) < 2:
        return frame
    import av

    frame = frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2]
    buffer = BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=1, options={"crf": str(crf), "preset": "veryfast"})
        stream.height, stream.width = frame.shape[:2]
        container.mux(stream.encode(yuv420p_frame(frame)))
        container.mux(stream.encode())
    buffer.seek(0)
    with av.open(buffer) as container:
        decoded = next(container.decode(video=0), None)
    if decoded is None:
        raise MediaError("H.264 round trip produced no frame")
    return decoded.to_ndarray(format="rgb24")


ROUND_TRIP_SIDE = 4096  # larger sources are fitted to the render size before their H.264 round trip (see below)


def conditioning_frame(path: Path, width: int, height: int, crf: int) -> np.ndarray:
    """The pixels the model is conditioned on: loaded, compressed at the source's size, then cover-cropped to
    the render size; float32 (H, W, 3), 0..255. A source with a side over ROUND_TRIP_SIDE is cover-cropped first
    and compressed at the render size: x264 refuses frames over 16384 wide (a panorama), and the round trip's cost
    grows with the area (a 9000x9000 photo took 19 s of CPU)."""
    image = np.asarray(load_image(path))
    if max(image.shape[:2]) > ROUND_TRIP_SIDE:
        fitted = cover_crop(image, width, height).round().clip(0, 255).astype(np.uint8)
        return h264_round_trip(fitted, crf).astype(np.float32)
    return cover_crop(h264_round_trip(image, crf), width, height)
