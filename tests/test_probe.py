from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest
from media import (
    tone,
    write_audio,
    write_blank_png,
    write_float_wav,
    write_image,
    write_non_finite_wav,
    write_truncated_jpeg,
)

from ltx2cli.errors import MediaError
from ltx2cli.media.audio import without_padding
from ltx2cli.media.probe import audio_duration, image_size


@pytest.mark.parametrize("suffix", [".wav", ".mp3", ".flac", ".ogg", ".m4a"])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [22050, 44100])
def test_audio_duration_is_exact(tmp_path, suffix, channels, rate):
    path = write_audio(tmp_path / f"a{suffix}", 2.5, rate=rate, channels=channels)
    assert audio_duration(path) == pytest.approx(2.5, abs=0.5 / rate)  # AAC's padding after the end does not count


def test_padding_is_cut_only_where_the_container_states_the_length():
    def stream(seconds):
        return SimpleNamespace(duration=None if seconds is None else round(seconds * 1000), time_base=Fraction(1, 1000))

    assert without_padding(stream(1.0), 45056, 1024, 44100) == 44100  # AAC in MP4: 956 samples of padding
    assert without_padding(stream(0.9), 45056, 1024, 44100) == 45056  # a frame or more short: an estimate
    assert without_padding(stream(1.1), 45056, 1024, 44100) == 45056  # longer (Ogg's pre-skip): decoding decides
    assert without_padding(stream(None), 45056, 1024, 44100) == 45056  # not stated (Matroska)


def test_long_audio_is_cut_short_by_metadata(tmp_path):
    path = write_audio(tmp_path / "long.wav", 30.0, rate=8000)
    assert audio_duration(path, max_duration=20.0) == pytest.approx(30.0)


@pytest.mark.parametrize(
    "orientation, expected", [(None, (96, 64)), (1, (96, 64)), (3, (96, 64)), (6, (64, 96)), (8, (64, 96))]
)
def test_image_size_follows_exif_orientation(tmp_path, orientation, expected):
    assert image_size(write_image(tmp_path / "p.jpg", (96, 64), exif_orientation=orientation)) == expected


@pytest.mark.parametrize("name, mode", [("a.png", "RGBA"), ("g.png", "L"), ("c.jpg", "CMYK"), ("w.webp", "RGB")])
def test_image_modes_and_formats(tmp_path, name, mode):
    assert image_size(write_image(tmp_path / name, (40, 30), mode=mode)) == (40, 30)


def test_broken_media(tmp_path):
    (tmp_path / "fake.png").write_text("not a png")
    good = write_image(tmp_path / "good.png", (64, 64))
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    (tmp_path / "noise.mp3").write_bytes(b"\x00\x01garbage" * 50)
    with pytest.raises(MediaError, match="not an image"):
        image_size(tmp_path / "fake.png")
    with pytest.raises(MediaError, match=r"damaged|not an image"):
        image_size(tmp_path / "cut.png")
    with pytest.raises(MediaError, match="not found"):
        image_size(tmp_path / "none.png")
    with pytest.raises(MediaError, match=r"decode|no audio|empty"):
        audio_duration(tmp_path / "noise.mp3")
    with pytest.raises(MediaError, match="no audio stream"):
        audio_duration(good)


@pytest.mark.parametrize("keep", [1 / 3, 0.99])
def test_truncated_jpeg_is_found(tmp_path, keep):
    cut = write_truncated_jpeg(tmp_path / "cut.jpg", (640, 480), keep=keep)  # verify() reads no JPEG data
    with pytest.raises(MediaError, match=r"damaged or truncated .*cut\.jpg"):
        image_size(cut)


def test_image_over_pillows_limit_says_its_size(tmp_path):
    path = write_blank_png(tmp_path / "huge.png", (15000, 13000))
    with pytest.raises(MediaError, match=r"^195 MP is over the 179 MP Pillow decodes safely"):
        image_size(path)


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_image_under_pillows_limit_decodes_without_a_warning(tmp_path):
    assert image_size(write_blank_png(tmp_path / "big.png", (10000, 10000))) == (10000, 10000)  # 100 MP


def test_audio_with_nan_or_inf_samples_is_refused(tmp_path):
    assert audio_duration(write_float_wav(tmp_path / "clean.wav", tone(1.0, 16000, 2), 16000)) == 1.0
    with pytest.raises(MediaError, match=r"^contains NaN or infinite samples \(the first at 0\.250 s\): .*nan\.wav"):
        audio_duration(write_non_finite_wav(tmp_path / "nan.wav", at=0.25))
    inf = tone(1.0, 16000, 1)
    inf[0, -1] = -np.inf
    with pytest.raises(MediaError, match=r"the first at 1\.000 s"):
        audio_duration(write_float_wav(tmp_path / "inf.wav", inf, 16000))
