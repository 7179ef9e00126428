"""A clip's video decoded in chunks and encoded while the next chunk decodes (engine.memory.decode_spans,
media.video.VideoWriter), on the tiny model: the chunks' frames against the whole decode by value, the encoder at
work before the decode ends, the MP4 as the whole decode's would be, and long clips (windows, resumed) through the
same writer."""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import tiny_job_spec
from test_render_cli import check_mp4, read_clip

from ltx2cli.engine import latents as lat
from ltx2cli.engine.inputs import prepare_inputs
from ltx2cli.engine.memory import decode_spans as ds
from ltx2cli.engine.render import Renderer
from ltx2cli.engine.rendered import to_u8
from ltx2cli.engine.window_render import spec_windows, stream_window
from ltx2cli.jobs.spec import WindowSpec
from ltx2cli.jobs.windows import crossfade, plan_windows
from ltx2cli.media.video import VideoWriter, write_mp4

# Streamed vs whole decode of one tiny-model render, in uint8 levels: measured max 17-24 and mean 0.16 (64x96 and
# random 128x128 latents); the full-size decoder gave max 24, mean 1.0, 41.9 dB (engine.latents).
MAX_LEVELS, MIN_PSNR_DB = 32, 40.0


def _grid(spec) -> lat.Grid:
    return lat.Grid(spec.num_frames, spec.height, spec.width, spec.fps, spec.audio_latent_frames)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


@pytest.fixture(scope="module")
def streamed(tmp_path_factory, tiny_models):
    """A 2.7-s 60-fps clip (21 latent frames: three chunks) rendered into a VideoWriter that keeps every frame,
    each decoder pass's end timed, with the frames encoded so far; and the whole decode of the same latents."""
    d = tmp_path_factory.mktemp("stream")
    spec = tiny_job_spec(d, duration=2.7, fps=60)
    video = VideoWriter(d / "clip.mp4", spec.fps, spec.width, spec.height, keep=range(spec.output_frames))
    ends: list[tuple[float, int]] = []
    hook = tiny_models.vae.decoder.register_forward_hook(lambda *_: ends.append((time.perf_counter(), video.encoded)))
    try:
        out = Renderer(tiny_models, max_sequence_length=64).render(spec, prepare_inputs(spec), video=video)
    finally:
        hook.remove()
    mp4 = video.finish(out.audio, out.sample_rate)
    whole = to_u8(lat.decode_video(tiny_models, out.video_latents, _grid(spec)))[: spec.output_frames]
    frames = np.stack([video.kept[i] for i in range(spec.output_frames)])
    return SimpleNamespace(dir=d, spec=spec, out=out, video=video, ends=ends, mp4=mp4, whole=whole, frames=frames)


def test_decode_spans_tile_the_clip_and_a_short_clip_decodes_whole():
    for latent_frames in range(1, 90):
        spans = ds.decode_spans(latent_frames)
        kept = [len(range(8 * (s.stop - s.start - 1) + 1)[s.keep]) for s in spans]
        assert sum(kept) == 8 * (latent_frames - 1) + 1  # every pixel frame once, in order
        if latent_frames <= ds.DECODE_CHUNK + ds.DECODE_CONTEXT:
            assert spans == [ds.Span(0, latent_frames, slice(0, None))]
        context = 8 * ds.DECODE_CONTEXT  # pixel frames decoded beyond a kept range and cut off
        assert all(s.keep.start >= context - 7 for s in spans[1:])
        assert all(8 * (s.stop - s.start - 1) + 1 - s.keep.stop >= context for s in spans[:-1])
    assert len(ds.decode_spans(38)) == 5  # a 10-s clip at 30 fps: 5 chunks of ~64 frames


def test_streamed_frames_equal_the_whole_decode_within_tolerance(streamed):
    s = streamed
    assert len(ds.decode_spans(_grid(s.spec).frames)) == 3
    assert s.out.frames is None  # they went to the MP4 only
    assert s.frames.shape == s.whole.shape == (s.spec.output_frames, s.spec.height, s.spec.width, 3)
    diff = np.abs(s.frames.astype(int) - s.whole.astype(int))
    assert diff.max() <= MAX_LEVELS and psnr(s.frames, s.whole) >= MIN_PSNR_DB, (diff.max(), diff.mean())
    first = ds.decode_spans(_grid(s.spec).frames)[0]
    # the first chunk's frames far from its cut (more than its context away) are the whole decode's, exactly
    exact = 8 * (first.stop - ds.DECODE_CONTEXT - 1) - 8 * ds.DECODE_CONTEXT
    assert exact > 0 and diff[:exact].max() <= 1


def test_the_encoder_takes_the_first_chunk_before_the_last_one_is_decoded(streamed):
    s = streamed
    assert len(s.ends) == 3  # one decoder pass a chunk
    last_end, encoded_by_then = s.ends[-1]
    assert s.video.first_encoded is not None and s.video.first_encoded < last_end
    assert encoded_by_then > 0  # frames went through x264 while the decoder was still at work
    assert s.video.encoded == s.spec.output_frames


def test_the_streamed_mp4_is_the_whole_decodes_mp4_within_the_decode_tolerance(streamed):
    """Today's path (whole decode, then write_mp4 of the frames and sound) vs the streamed MP4: the same frame count,
    size, rate and sound, bit for bit where the sound is concerned; each picture as close to its own frames (x264's
    loss on the tiny model's noise-like frames: two encodes of frames this close differ by more than the frames)."""
    s = streamed
    today = write_mp4(s.dir / "today.mp4", s.whole, s.spec.fps, s.out.audio, s.out.sample_rate)
    a = check_mp4(s.mp4, s.spec.width, s.spec.height, s.spec.output_frames, s.spec.fps)
    b = check_mp4(today, s.spec.width, s.spec.height, s.spec.output_frames, s.spec.fps)
    assert (a.fps, a.video_seconds, a.audio_rate, a.audio_channels) == (b.fps, b.video_seconds, b.audio_rate, 2)
    assert a.audio.shape == b.audio.shape and np.array_equal(a.audio, b.audio)
    print("mp4 psnr", psnr(a.frames, s.frames), psnr(b.frames, s.whole), psnr(a.frames, b.frames))
    assert abs(psnr(a.frames, s.frames) - psnr(b.frames, s.whole)) < 0.5


@pytest.mark.parametrize("fade, hold", [(0, 0), (9, 0), (0, 9), (9, 9), (25, 25)])
def test_a_windows_chunks_stream_as_the_whole_window_would(fade, hold):
    """stream_window against a whole window decoded at once: the first `fade` frames cross-faded with the held
    tail, the last `hold` held back; any chunking, the same numbers."""
    rng = np.random.default_rng(fade + hold)
    length = 97
    window = rng.random((length, 4, 6, 3), dtype=np.float32)
    pending = rng.random((fade, 4, 6, 3), dtype=np.float32) if fade else None
    expected = window.copy()
    if pending is not None:
        expected[:fade] = crossfade(pending, expected[:fade])
    for cuts in ([length], [1, 5, 91], [30, 30, 37], [8] * 12 + [1]):
        chunks = np.split(window, np.cumsum(cuts)[:-1])
        got: list[np.ndarray] = []
        tail = stream_window((torch.from_numpy(c) for c in chunks), pending, length, hold, got.append)
        assert np.array_equal(np.concatenate(got), to_u8(expected[: length - hold]))
        assert (tail is None) if not hold else np.array_equal(tail, expected[length - hold :])


def test_a_long_clip_streams_to_the_writer_and_a_resumed_one_replays_its_windows(tmp_path, tiny_models):
    """Three windows (chunked decode inside each): written through the VideoWriter, with the window checkpoint the
    batch gives, the frames are those of a render without a writer; stopped after window 2 and resumed, the MP4
    holds every frame, the finished windows' read back from the checkpoint."""
    spec = tiny_job_spec(tmp_path, duration=4.0, fps=60)
    windows = plan_windows(spec.num_frames, spec.fps, 2.0, 1)
    spec = spec.model_copy(update={"window": WindowSpec(seconds=2.0, overlap=1, strength=1.0, count=len(windows))})
    assert len(spec_windows(spec)) == 3 and len(ds.decode_spans((windows[0].frames - 1) // 8 + 1)) == 2
    renderer = Renderer(tiny_models, max_sequence_length=64)
    plain = renderer.render(spec, prepare_inputs(spec))  # frames to a FrameStore, as before
    expected = plain.frames[0 : len(plain.frames)]

    class Stop(Exception):
        pass

    def stop_at_window_3(name: str) -> None:
        if name.startswith("window 3/"):
            raise Stop

    folder, n = tmp_path / ".clip.windows", spec.output_frames
    first = VideoWriter(tmp_path / "clip.mp4", spec.fps, spec.width, spec.height)
    with pytest.raises(Stop), first:
        renderer.render(spec, prepare_inputs(spec), on_stage=stop_at_window_3, resume=folder, video=first)
    assert not list(tmp_path.glob(".clip.*part*"))  # the stopped render's MP4 is dropped
    video = VideoWriter(tmp_path / "clip.mp4", spec.fps, spec.width, spec.height, keep=range(n))
    again = renderer.render(spec, prepare_inputs(spec), resume=folder, video=video)
    assert [w.get("resumed", False) for w in again.windows] == [True, True, False]
    mp4 = video.finish(again.audio, again.sample_rate)
    assert np.array_equal(np.stack([video.kept[i] for i in range(n)]), expected)
    assert np.array_equal(again.audio, plain.audio)
    clip = read_clip(mp4)
    assert clip.frames.shape == (n, spec.height, spec.width, 3) and abs(clip.fps - spec.fps) < 1e-6
    assert abs(clip.audio_seconds - clip.video_seconds) <= 1 / spec.fps


def test_a_full_queue_waits_for_the_encoder_but_never_for_a_sound_still_unnamed(tmp_path):
    """With room for one chunk: appends before the sound's format is named queue (the encoder cannot start; waiting
    would hang); after it, each append waits for the encoder; every frame lands in the MP4 in order."""
    frames = np.random.default_rng(0).integers(0, 255, (40, 32, 48, 3), dtype=np.uint8)
    video = VideoWriter(tmp_path / "q.mp4", 24, 48, 32, queue_bytes=frames[:4].nbytes, keep=[0, 39])
    for chunk in np.split(frames[:20], 5):
        video.append(chunk)
    assert video.encoded == 0  # nothing encoded before the MP4's streams are known
    video.sound_format(16000, 1)
    for chunk in np.split(frames[20:], 5):
        video.append(chunk)
    mp4 = video.finish(np.zeros((1, 16000), np.float32), 16000)
    clip = read_clip(mp4)
    assert clip.frames.shape == frames.shape and (clip.audio_rate, clip.audio_channels) == (16000, 1)
    assert np.array_equal(video.kept[0], frames[0]) and np.array_equal(video.kept[39], frames[39])
    assert psnr(clip.frames, frames) > 10 and psnr(clip.frames[1:], frames[:-1]) < psnr(clip.frames, frames)


def test_the_stream_encode_bench_runs(tmp_path):
    import json
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parent.parent / "bench" / "stream_encode.py"
    out = tmp_path / "runs.json"
    r = subprocess.run(
        [sys.executable, str(bench), "--resolution", "64x96", "--seconds", "1", "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    for path in ("today", "streamed"):
        assert f"\n{path:<9} render " in r.stdout, r.stdout
    assert "streamed saves" in r.stdout
    assert [run["path"] for run in json.loads(out.read_text())] == ["today", "streamed"]
