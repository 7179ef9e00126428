import pytest

from ltx2cli.jobs.timeline import (
    default_positions,
    keyframe_frame,
    output_frame_count,
    render_frame_count,
    shortest_duration,
    timeline,
)


@pytest.mark.parametrize(
    "duration, fps, output_frames, num_frames, audio_latents",
    [
        (10.0, 30, 300, 305, 254),  # the original's ceil(10*30)+1 = 301 is not 8k+1
        (5.0, 30, 150, 153, 127),  # 153/30*25 is 127.4999... in floats, as in diffusers
        (1.0, 30, 30, 33, 28),
        (2.0, 24, 48, 49, 51),
        (1.2, 30, 36, 41, 34),
        (0.05, 30, 2, 9, 8),  # 1.5 frames rounds half to even: 2
        (20.0, 25, 500, 505, 505),
        (8 / 30, 30, 8, 9, 8),
        (1 / 30, 30, 1, 1, 1),
    ],
)
def test_frame_counts(duration, fps, output_frames, num_frames, audio_latents):
    tl = timeline(duration, fps)
    assert (tl.output_frames, tl.num_frames, tl.audio_latent_frames) == (output_frames, num_frames, audio_latents)
    assert tl.latent_frames == (num_frames - 1) // 8 + 1


@pytest.mark.parametrize(
    "fps, shortest", [(30, 0.017), (25, 0.021), (24, 0.021), (29.97, 0.017), (120, 0.005), (1, 0.501)]
)
def test_shortest_duration_is_the_first_millisecond_with_a_frame(fps, shortest):
    assert shortest_duration(fps) == shortest
    assert output_frame_count(shortest, fps) == 1 and output_frame_count(shortest - 0.001, fps) == 0


@pytest.mark.parametrize("n", range(1, 400))
def test_render_count_is_smallest_8k_plus_1(n):
    r = render_frame_count(n)
    assert r >= n and (r - 1) % 8 == 0 and r - 8 < n


@pytest.mark.parametrize(
    "position, frames, expected",
    [("first", 300, 0), ("last", 300, 299), (0.5, 300, 150), (0.5, 30, 14), (0.25, 30, 7), (1.0, 30, 29), (0.0, 5, 0)],
)
def test_keyframe_frames(position, frames, expected):
    assert keyframe_frame(position, frames) == expected


def test_default_positions_spread_evenly():
    assert default_positions(1) == [0.0]
    assert default_positions(3) == [0.0, 0.5, 1.0]
    assert default_positions(5)[1] == 0.25
