"""Clip length arithmetic: seconds and fps -> exact frame counts and keyframe pixel frames.

LTX-2's video VAE compresses time 8x with a causal first frame, so a render has 8k+1 frames.
We render the smallest such count covering the clip and cut the output back to the exact length
(the original service floored instead, so its video and audio drifted apart).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TEMPORAL_COMPRESSION = 8
AUDIO_LATENTS_PER_SECOND = 25.0  # 16 kHz / hop 160 / audio VAE time compression 4


@dataclass(frozen=True)
class Timeline:
    duration: float  # seconds of output
    fps: float
    output_frames: int  # frames in the delivered MP4
    num_frames: int  # frames rendered (8k+1 >= output_frames)
    latent_frames: int  # video latent frames: (num_frames - 1) / 8 + 1
    audio_latent_frames: int  # audio latents for the rendered length, 25 per second

    @property
    def last_frame(self) -> int:
        return self.output_frames - 1


def output_frame_count(duration: float, fps: float) -> int:
    # Python's round (half to even), exactly as specified.
    return round(duration * fps)


def shortest_duration(fps: float) -> float:
    """The shortest clip, in whole milliseconds, that has a frame at fps: a little over half a frame's time."""
    ms = math.ceil(500 / fps)
    while output_frame_count(ms / 1000, fps) < 1:  # exactly half a frame rounds to even: none
        ms += 1
    return ms / 1000


def render_frame_count(output_frames: int) -> int:
    """Smallest 8k+1 that is >= output_frames."""
    if output_frames < 1:
        raise ValueError(f"a clip needs at least one frame, got {output_frames}")
    return TEMPORAL_COMPRESSION * math.ceil((output_frames - 1) / TEMPORAL_COMPRESSION) + 1


def audio_latent_count(num_frames: int, fps: float) -> int:
    # Same formula as diffusers' LTX-2 pipelines, so parity holds.
    return round(num_frames / fps * AUDIO_LATENTS_PER_SECOND)


def timeline(duration: float, fps: float) -> Timeline:
    output_frames = output_frame_count(duration, fps)
    num_frames = render_frame_count(output_frames)
    return Timeline(
        duration=duration,
        fps=fps,
        output_frames=output_frames,
        num_frames=num_frames,
        latent_frames=(num_frames - 1) // TEMPORAL_COMPRESSION + 1,
        audio_latent_frames=audio_latent_count(num_frames, fps),
    )


def keyframe_frame(position: str | float, output_frames: int) -> int:
    """Exact pixel frame of a keyframe: "first" = 0, "last" = final frame, fraction f of the clip."""
    if position == "first":
        return 0
    if position == "last":
        return output_frames - 1
    return round(float(position) * (output_frames - 1))


def default_positions(count: int) -> list[float]:
    """Keyframes without a position are spread evenly, first and last at the ends."""
    if count == 1:
        return [0.0]
    return [i / (count - 1) for i in range(count)]
