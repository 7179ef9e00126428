"""A job's conditioning media, decoded and resized on the CPU before it renders (so the next job's inputs can be
prepared while another job renders), and the conditions a one-pass render makes of them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..jobs.spec import RenderSpec
from ..media.audio import decode_audio as read_audio
from ..media.audio import fit_length
from ..media.image import conditioning_frame
from ..media.mel import SAMPLE_RATE
from ..storage.sources import Fetch, local_file
from .conditions import Condition, FirstFrame, GuideFrame, Voice


@dataclass(frozen=True)
class Inputs:
    """Decoded, resized conditioning media of one job (CPU arrays)."""

    first: tuple[np.ndarray, float] | None  # frame-0 image (H, W, 3) float32 0..255 and its strength
    guides: list[tuple[int, np.ndarray, float]]  # (exact pixel frame, image, strength)
    voice: np.ndarray | None  # lip-sync: 16 kHz stereo, padded to the rendered length, for the audio VAE
    soundtrack: tuple[np.ndarray, int] | None  # lip-sync: the original waveform and rate, muxed as it is

    def conditions(self) -> list[Condition]:
        """What a one-pass render of these inputs is conditioned on (engine.conditions)."""
        out: list[Condition] = [FirstFrame(*self.first)] if self.first is not None else []
        out += [GuideFrame(frame, image, strength) for frame, image, strength in self.guides]
        return out + ([Voice(self.voice)] if self.voice is not None else [])


def prepare_inputs(spec: RenderSpec, fetch: Fetch = local_file) -> Inputs:
    first, guides = None, []
    for kf in spec.keyframes:
        frame = conditioning_frame(fetch(kf.image, "image"), spec.width, spec.height, spec.img_compression)
        if kf.frame == 0:
            first = (frame, kf.strength)
        else:
            guides.append((kf.frame, frame, kf.strength))
    voice = soundtrack = None
    if spec.mode == "lipsync":
        path = fetch(spec.audio, "audio")
        voice, _ = read_audio(path, rate=SAMPLE_RATE, channels=2)
        voice = fit_length(voice, round(spec.num_frames / spec.fps * SAMPLE_RATE))
        soundtrack = read_audio(path)
    return Inputs(first=first, guides=guides, voice=voice, soundtrack=soundtrack)
