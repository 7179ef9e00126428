"""A long clip stopped in window k goes on from window k (engine/window_checkpoint.py): the joined render is
bit-identical to an uninterrupted one, only the missing windows are denoised, and a checkpoint of any other render
is thrown away. Tiny model, 25-s clips of three windows at 24 fps."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from media import write_image, write_waveform
from test_render_cli import invoke, read_clip, same_clip, speech
from test_windows import _spec

from ltx2cli.engine.inputs import prepare_inputs
from ltx2cli.engine.render import Renderer
from ltx2cli.engine.window_checkpoint import FRAMES, STATE


class Stop(Exception):
    """Stands for the process dying in the middle of a window."""


def _stop_at(window: str):
    def on_stage(name: str) -> None:
        if name == window:
            raise Stop(name)

    return on_stage


@pytest.fixture(scope="module")
def clips(tmp_path_factory, tiny_models):
    """A 25-s lip-sync and a 25-s audio-gen with a keyframe in the last window, each rendered in one go."""
    d = tmp_path_factory.mktemp("resume")
    write_waveform(d / "voice.wav", speech(25.0, 44100, 2), 44100)
    write_image(d / "kf.png", (64, 96))
    lip = _spec(d, audio=str(d / "voice.wav"))
    gen = _spec(d, duration=25, keyframes=[{"image": "kf.png", "position": 0.9}], seed=5)
    renderer = Renderer(tiny_models, max_sequence_length=64)
    return d, {name: (spec, renderer.render(spec, prepare_inputs(spec))) for name, spec in (("lip", lip), ("gen", gen))}


@pytest.mark.parametrize("name", ["lip", "gen"])
def test_a_render_stopped_in_window_3_goes_on_from_window_3_with_the_same_numbers(clips, tiny_models, tmp_path, name):
    _, done = clips
    spec, whole = done[name]
    assert len(whole.windows) == 3
    folder = tmp_path / ".clip.windows"
    renderer = Renderer(tiny_models, max_sequence_length=64)
    with pytest.raises(Stop):
        renderer.render(spec, prepare_inputs(spec), on_stage=_stop_at("window 3/3"), resume=folder)
    assert (folder / STATE).is_file()
    with open(folder / FRAMES, "ab") as f:  # frames a run killed after the append but before the checkpoint
        f.write(os.urandom(64 * 96 * 3 * 5))

    forwards: list[int] = []
    hook = tiny_models.transformer.register_forward_hook(lambda *_: forwards.append(1))
    try:
        again = renderer.render(spec, prepare_inputs(spec), resume=folder)
    finally:
        hook.remove()
    assert [w.get("resumed", False) for w in again.windows] == [True, True, False]
    assert len(forwards) == 8  # the fast preset's 8 steps of window 3 only (one guidance row a step)
    assert again.frames.shape == whole.frames.shape
    assert all(np.array_equal(again.frames[i], whole.frames[i]) for i in range(len(whole.frames)))
    assert np.array_equal(again.audio, whole.audio)
    again.checkpoint.discard()
    assert not folder.exists()


def test_a_checkpoint_of_another_render_is_thrown_away(tiny_models, tmp_path):
    """The same job with the voice file replaced under the same name: nothing is resumed."""
    voice = tmp_path / "voice.wav"
    write_waveform(voice, speech(25.0, 44100, 2), 44100)
    spec = _spec(tmp_path, audio=str(voice))
    folder = tmp_path / ".clip.windows"
    renderer = Renderer(tiny_models, max_sequence_length=64)
    with pytest.raises(Stop):
        renderer.render(spec, prepare_inputs(spec), on_stage=_stop_at("window 3/3"), resume=folder)
    write_waveform(voice, speech(25.0, 44100, 2)[:, ::-1].copy(), 44100)
    rendered = renderer.render(spec, prepare_inputs(spec), resume=folder)
    assert not any(w.get("resumed") for w in rendered.windows)
    assert (folder / STATE).is_file()  # this render's own checkpoint now


def _run_batch(cwd: Path, *args: str) -> subprocess.Popen:
    env = os.environ | {"COLUMNS": "200"}
    return subprocess.Popen(
        [sys.executable, "-m", "ltx2cli", "batch", "jobs.yaml", "-o", "out", "--model", "tiny", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _start_long_batch(clips, tmp_path) -> tuple[Path, subprocess.Popen]:
    """`ltx2 batch` of one 25-s lip-sync (three windows) started in tmp_path; (its checkpoint folder, the process)."""
    d, _ = clips
    (tmp_path / "voice.wav").write_bytes((d / "voice.wav").read_bytes())
    write_image(tmp_path / "face.png", (64, 96))
    job = {"id": "long", "image": "face.png", "audio": "voice.wav", "fps": 24, "resolution": "64x96", "seed": 3}
    (tmp_path / "jobs.yaml").write_text(json.dumps({"jobs": [job]}))
    return tmp_path / "out" / ".long.windows", _run_batch(tmp_path)


def test_a_killed_batch_goes_on_from_the_last_finished_window(clips, tmp_path):
    """SIGKILL while window 2 or 3 renders; the rerun renders only what is missing, the MP4 equals an uninterrupted
    run's, and the checkpoint is gone once the clip is delivered."""
    folder, proc = _start_long_batch(clips, tmp_path)
    deadline = time.monotonic() + 300
    while not (folder / STATE).is_file():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no window finished"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert not (tmp_path / "out" / "long.mp4").exists()

    again = _run_batch(tmp_path)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err
    assert "came from the run that was stopped" in err
    meta = json.loads((tmp_path / "out" / "long.json").read_text())
    assert meta["windows"][0].get("resumed") is True and not meta["windows"][-1].get("resumed")
    assert not folder.exists()

    whole = invoke(tmp_path, "batch", "jobs.yaml", "-o", "fresh", "--model", "tiny")
    assert whole.code == 0, whole.err
    a, b = read_clip(tmp_path / "out" / "long.mp4"), read_clip(tmp_path / "fresh" / "long.mp4")
    assert same_clip(a, b)  # the rendered frames are bit-identical (tested above); x264 may not be


def test_the_first_ctrl_c_stops_a_long_clip_after_its_current_window(clips, tmp_path):
    """A studio stopping a 5-minute clip does not wait for all of it: the batch ends after the window it is in
    (exit 130, the checkpoint kept), and the rerun goes on from the next window."""
    folder, proc = _start_long_batch(clips, tmp_path)
    deadline = time.monotonic() + 300
    while not (folder / FRAMES).is_file():  # the clip's frames file: its first window is rendering
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the long clip never started"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "interrupted: long stopped after window" in err and "of 3" in err
    assert (folder / STATE).is_file() and not (tmp_path / "out" / "long.mp4").exists()
    shutil.copytree(folder, tmp_path / "kept")

    again = _run_batch(tmp_path)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0 and "came from the run that was stopped" in err, err
    assert not folder.exists()

    shutil.copytree(tmp_path / "kept", folder)  # --force redoes everything: no window of a stopped run is kept
    forced = _run_batch(tmp_path, "--force")
    _, err = forced.communicate(timeout=600)
    assert forced.returncode == 0 and "came from the run that was stopped" not in err, err
    assert not folder.exists()
