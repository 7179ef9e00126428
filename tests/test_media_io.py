"""Media in and out, checked by decoding real files."""

import math
import struct
from io import BytesIO

import av
import numpy as np
import pytest
import torch
from media import tone, write_audio, write_blank_png, write_image, write_non_finite_wav, write_truncated_jpeg
from PIL import Image, ImageCms

from ltx2cli.errors import MediaError
from ltx2cli.media.audio import decode_audio, fit_length
from ltx2cli.media.image import conditioning_frame, cover_crop, h264_round_trip, load_image
from ltx2cli.media.video import write_mp4


def test_load_image_applies_exif_and_flattens_alpha(tmp_path):
    assert load_image(write_image(tmp_path / "r.jpg", (96, 64), exif_orientation=6)).size == (64, 96)
    Image.new("RGBA", (8, 8), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    im = load_image(tmp_path / "clear.png")
    assert im.mode == "RGB" and im.getpixel((0, 0)) == (255, 255, 255)
    for mode in ("L", "CMYK", "P", "I;16", "LA"):
        name = "c.jpg" if mode == "CMYK" else f"{mode.replace(';', '')}.png"
        Image.new(mode, (8, 6)).save(tmp_path / name)
        assert load_image(tmp_path / name).mode == "RGB"
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(MediaError, match="not an image"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(MediaError, match="truncated"):
        load_image(write_truncated_jpeg(tmp_path / "cut.jpg"))
    with pytest.raises(MediaError, match=r"195 MP is over"):
        load_image(write_blank_png(tmp_path / "huge.png", (15000, 13000)))


@pytest.mark.parametrize("top", [1.0, 255.0])
def test_a_float_tiff_keeps_its_greys(tmp_path, top):
    """Mode F (float greyscale, 0..1 or 0..255): Pillow's own convert cuts 0..1 to black."""
    ramp = np.tile(np.linspace(0, top, 64, dtype=np.float32), (8, 1))
    Image.fromarray(ramp, "F").save(tmp_path / "f.tif")
    grey = np.asarray(load_image(tmp_path / "f.tif"))[..., 0]
    assert grey[0, 0] == 0 and grey[0, -1] == 255 and abs(float(grey.mean()) - 127.5) < 1


def test_fit_covers_and_centre_crops():
    im = Image.new("RGB", (300, 100), (0, 0, 0))
    im.paste((255, 255, 255), (100, 0, 200, 100))  # white centre third
    out = cover_crop(np.asarray(im), 64, 64)
    assert out.shape == (64, 64, 3)
    assert out[32, 32].tolist() == [255, 255, 255]  # centre kept, sides cropped


def test_h264_round_trip_compresses_at_crf():
    rng = np.random.default_rng(0)
    frame = (rng.random((64, 96, 3)) * 255).astype(np.uint8)
    assert h264_round_trip(frame, 0) is frame
    light, heavy = h264_round_trip(frame, 10), h264_round_trip(frame, 45)
    assert light.shape == heavy.shape == frame.shape
    err = [np.abs(x.astype(int) - frame).mean() for x in (light, heavy)]
    assert 0 < err[0] < err[1]


def test_conditioning_frame_shape(tmp_path):
    frame = conditioning_frame(write_image(tmp_path / "p.webp", (100, 70)), 64, 96, 23)
    assert frame.shape == (96, 64, 3) and frame.dtype == np.float32  # unrounded into the VAE, as ltx-pipelines


def test_a_panorama_wider_than_x264_takes_is_fitted_before_its_round_trip(tmp_path):
    """x264 refuses a frame over 16384 wide: such a source (any side over ROUND_TRIP_SIDE) is cover-cropped to
    the render size first, then compressed there, instead of failing the job."""
    from PIL import Image

    from ltx2cli.media.image import ROUND_TRIP_SIDE

    ramp = np.broadcast_to(np.linspace(0, 255, 17000, dtype=np.float32)[None, :, None], (64, 17000, 3))
    Image.fromarray(ramp.astype(np.uint8)).save(tmp_path / "pano.png")
    assert ROUND_TRIP_SIDE < 17000
    frame = conditioning_frame(tmp_path / "pano.png", 64, 96, 23)
    assert frame.shape == (96, 64, 3) and frame.dtype == np.float32
    assert abs(float(frame.mean()) - 127.5) < 8  # the middle of the ramp, centre-cropped


# ltx-pipelines' conditioning-image preparation, written here from its definition (Lightricks/LTX-2 @ 400fd31,
# packages/ltx-pipelines/src/ltx_pipelines/utils/media_io/decode.py: `load_image_and_preprocess`, `preprocess`,
# `encode_single_frame`, `decode_single_frame`; resize.py: `resize_and_center_crop`; unchanged since 9ce438b).
def _lightricks_round_trip(image: np.ndarray, crf: int) -> np.ndarray:
    if crf == 0 or min(image.shape[:2]) < 2:
        return image
    image = image[: image.shape[0] // 2 * 2, : image.shape[1] // 2 * 2]
    out = BytesIO()
    container = av.open(out, "w", format="mp4")
    stream = container.add_stream("libx264", rate=1, options={"crf": str(crf), "preset": "veryfast"})
    stream.height, stream.width = image.shape[:2]
    container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")))
    container.mux(stream.encode())
    container.close()
    container = av.open(BytesIO(out.getvalue()))
    frame = next(container.decode(next(s for s in container.streams if s.type == "video")))
    container.close()
    return frame.to_ndarray(format="rgb24")


def _lightricks_conditioning(path, width: int, height: int, crf: int) -> np.ndarray:
    image = np.array(Image.open(path).convert("RGB"), dtype=np.uint8)  # decode_image: an RGB file without ICC
    x = torch.tensor(_lightricks_round_trip(image, crf), dtype=torch.float32).permute(2, 0, 1)[None]
    scale = max(height / x.shape[2], width / x.shape[3])
    new_h, new_w = math.ceil(x.shape[2] * scale), math.ceil(x.shape[3] * scale)
    x = torch.nn.functional.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return x[0, :, top : top + height, left : left + width].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("crf", [0, 23])
@pytest.mark.parametrize(
    ("source", "render"),
    [((101, 67), (64, 96)), ((300, 100), (64, 64)), ((96, 64), (96, 64)), ((70, 130), (96, 64))],
)  # odd sides (the even crop), a wide source into a square, the render size itself, portrait into landscape
def test_conditioning_frame_is_ltx_pipelines_preprocessing(tmp_path, source, render, crf):
    """Compressed at the source's own size (evened), then cover-resized bilinearly, kept as float."""
    path = write_image(tmp_path / "p.png", source)
    ours, theirs = conditioning_frame(path, *render, crf), _lightricks_conditioning(path, *render, crf)
    assert np.array_equal(ours, theirs), f"max abs diff {np.abs(ours.astype(np.float32) - theirs).max():.3g}"
    assert ours.dtype == np.float32


def test_load_image_converts_an_icc_profile_to_srgb(tmp_path):
    """As ltx-pipelines' decode_image: the pixels mean what their profile says. The profile here is sRGB with its
    red and blue primaries swapped, so a pure red pixel in it is sRGB blue."""
    icc = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    tags = {bytes(icc[132 + 12 * i : 136 + 12 * i]): 136 + 12 * i for i in range(struct.unpack(">I", icc[128:132])[0])}
    red, blue = tags[b"rXYZ"], tags[b"bXYZ"]
    icc[red : red + 8], icc[blue : blue + 8] = icc[blue : blue + 8], icc[red : red + 8]
    Image.new("RGB", (4, 4), (255, 0, 0)).save(tmp_path / "swapped.png", icc_profile=bytes(icc))
    assert load_image(tmp_path / "swapped.png").getpixel((0, 0)) == (0, 0, 255)


@pytest.mark.parametrize("suffix", [".wav", ".mp3", ".flac", ".ogg", ".m4a"])
def test_decode_audio_resamples_to_16k_stereo(tmp_path, suffix):
    samples, rate = decode_audio(write_audio(tmp_path / f"a{suffix}", 1.0, rate=22050), rate=16000, channels=2)
    assert rate == 16000 and samples.shape[0] == 2 and samples.dtype == np.float32
    assert samples.shape[1] == 16000  # AAC: its priming skipped (the MP4's edit list), its padding cut
    assert np.allclose(samples[0], samples[1])


@pytest.mark.parametrize("rate", [None, 16000])
def test_decode_audio_refuses_nan(tmp_path, rate):
    with pytest.raises(MediaError, match=r"contains NaN or infinite samples \(the first at 0\.(49\d|500) s\)"):
        decode_audio(write_non_finite_wav(tmp_path / "nan.wav", rate=22050, at=0.5), rate=rate, channels=2)


@pytest.mark.parametrize("suffix", [".wav", ".mp3", ".flac", ".ogg", ".m4a"])
def test_decode_audio_keeps_the_length_written(tmp_path, suffix):
    samples, rate = decode_audio(write_audio(tmp_path / f"a{suffix}", 1.0, rate=44100))
    assert samples.shape[1] == rate  # Opus: 48 kHz


def test_fit_length():
    x = np.ones((2, 10), np.float32)
    assert fit_length(x, 4).shape == (2, 4)
    padded = fit_length(x, 15)
    assert padded.shape == (2, 15) and padded[:, 10:].sum() == 0


@pytest.mark.parametrize("fps", [24, 25, 30, 29.97])
@pytest.mark.parametrize("rate", [16000, 24000, 44100, 37000])
def test_write_mp4_exact_frames_and_durations(tmp_path, fps, rate):
    frames = np.random.default_rng(1).integers(0, 255, (37, 64, 96, 3), dtype=np.uint8)
    audio = tone(2.0, rate, channels=2)
    path = write_mp4(tmp_path / "out" / "clip.mp4", frames, fps, audio, rate)
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        decoded = [f.to_ndarray(format="rgb24") for f in c.decode(v)]
        assert (v.codec_context.name, v.codec_context.pix_fmt, a.codec_context.name) == ("h264", "yuv420p", "aac")
        v_seconds, a_seconds = float(v.duration * v.time_base), float(a.duration * a.time_base)
    assert len(decoded) == 37 and decoded[0].shape == (64, 96, 3)
    assert abs(v_seconds - 37 / fps) < 1e-3
    assert abs(a_seconds - v_seconds) <= 1 / fps
    assert not list(path.parent.glob(".*part*"))  # temp file renamed away
    assert b"moov" in path.read_bytes()[:64]  # faststart: index before the media data


def test_mp4_audio_is_the_given_waveform(tmp_path):
    rate = 48000
    t = np.arange(2 * rate) / rate
    voice = (0.3 * np.sin(2 * np.pi * 180 * t) * np.abs(np.sin(2 * np.pi * 3 * t)))[None].astype(np.float32)
    frames = np.zeros((60, 32, 32, 3), np.uint8)
    path = write_mp4(tmp_path / "v.mp4", frames, 30, voice, rate)
    decoded, got_rate = decode_audio(path)
    assert got_rate == rate
    n = min(decoded.shape[1], voice.shape[1])
    err = decoded[:, :n] - voice[:, :n]
    snr = 10 * np.log10((voice[:, :n] ** 2).sum() / (err**2).sum())
    assert snr >= 30, snr


def test_failed_write_leaves_no_file(tmp_path):
    frames = np.zeros((3, 31, 31, 3), np.uint8)  # odd size: yuv420p cannot hold it
    with pytest.raises(Exception):  # noqa: B017 - FFmpeg's own error type
        write_mp4(tmp_path / "bad.mp4", frames, 30)
    assert list(tmp_path.iterdir()) == []
