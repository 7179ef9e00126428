"""Regenerate the tiny example inputs in this folder (a few KB each, deterministic).

python examples/jobs/media/make_media.py
"""

from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent


def face(path: Path, skin: tuple, mouth_open: float, size=(96, 128)) -> None:
    w, h = size
    im = Image.new("RGB", size, (40, 60, 90))
    d = ImageDraw.Draw(im)
    d.ellipse((w * 0.2, h * 0.15, w * 0.8, h * 0.8), fill=skin)
    for ex in (0.38, 0.62):
        d.ellipse((w * ex - 5, h * 0.38, w * ex + 5, h * 0.44), fill=(20, 20, 20))
    mh = 2 + 14 * mouth_open
    d.ellipse((w * 0.4, h * 0.6 - mh / 2, w * 0.6, h * 0.6 + mh / 2), fill=(120, 30, 40))
    im.save(path, optimize=True, **({"quality": 80} if path.suffix != ".png" else {}))


def voice(path: Path, seconds: float = 1.2, rate: int = 16000) -> None:
    """A voice-like buzz: 140 Hz harmonics under a 4 Hz syllable envelope."""
    t = np.arange(int(seconds * rate)) / rate
    tone = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 0.5
    samples = (0.25 * tone * envelope).astype(np.float32)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libopus", rate=48000, layout="mono")
        stream.bit_rate = 16000
        frame = av.AudioFrame.from_ndarray(samples[None, :], format="flt", layout="mono")
        frame.sample_rate = rate
        resampler = av.AudioResampler(format="flt", layout="mono", rate=48000)
        for f in [*resampler.resample(frame), *resampler.resample(None)]:
            out.mux(stream.encode(f))
        out.mux(stream.encode(None))


if __name__ == "__main__":
    face(HERE / "portrait.png", (224, 180, 150), 0.1)
    face(HERE / "smile.jpg", (230, 190, 160), 0.6)
    face(HERE / "turn.webp", (200, 160, 130), 1.0)
    voice(HERE / "voice.ogg")
    for f in sorted(HERE.iterdir()):
        print(f"{f.name}: {f.stat().st_size} bytes")
