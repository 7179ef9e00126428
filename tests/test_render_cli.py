"""Real renders through the `ltx2` command with the tiny model, every MP4 decoded and checked.

Small clips (64-96 px, 0.5-1.5 s, the fast preset's 8 steps) keep each render well under a second on a CPU;
renders that several tests look at are made once per module.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
import yaml
from conftest import Result, write_manifest
from media import write_image, write_non_finite_wav, write_truncated_jpeg, write_waveform
from PIL import Image

from ltx2cli.batch.journal import read_journal
from ltx2cli.cli import main
from ltx2cli.commands.render import _job_id, parse_keyframe
from ltx2cli.errors import EXIT_FAILED, EXIT_INVALID
from ltx2cli.media import probe

ROOT = Path(__file__).resolve().parent.parent
TINY = ("--model", "tiny")


def invoke(cwd: Path, *args) -> Result:
    """`ltx2 ARGS` in-process from cwd, like the `cli` fixture, for module-scoped fixtures."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        mp.chdir(cwd)
        mp.setenv("COLUMNS", "200")
        mp.delenv("LTX2_PRESETS_DIR", raising=False)
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            return Result(e.code, out.getvalue(), err.getvalue())
    raise AssertionError("ltx2 did not exit")


# -- media in ------------------------------------------------------------------------------------


def speech(seconds: float, rate: int, channels: int) -> np.ndarray:
    """Speech-like test signal (channels, n): a gliding voiced harmonic series plus formant-band tones,
    syllable envelope; the channels differ, so a swap or a downmix would show."""
    t = np.arange(round(seconds * rate)) / rate
    f0 = 140 * (1 + 0.08 * np.sin(2 * np.pi * 1.3 * t))
    phase = 2 * np.pi * np.cumsum(f0) / rate
    voiced = sum(a * np.sin(k * phase) for k, a in ((1, 0.5), (2, 0.3), (3, 0.2), (5, 0.1)))
    out = []
    for ch in range(channels):
        formants = sum(a * np.sin(2 * np.pi * f * t + ch) for f, a in ((700 + 150 * ch, 0.15), (1900, 0.07)))
        envelope = 0.15 + 0.85 * np.abs(np.sin(2 * np.pi * (3.1 + 0.4 * ch) * t))
        out.append(0.45 * envelope * (voiced + formants) / 1.3)
    fade = np.minimum(1.0, np.minimum(t, t[-1] - t) / 0.02)  # starts and ends in silence, as speech does
    return (np.array(out) * fade).astype(np.float32)


def decoded_seconds(path: Path) -> float:
    """Length of an audio file as FFmpeg decodes it: what `lipsync` sets the clip length from, but for an encoder's
    padding after the end (AAC's), which it leaves out."""
    with av.open(str(path)) as c:
        frames = list(c.decode(audio=0))
    return sum(f.samples for f in frames) / frames[0].sample_rate


def decode_audio(path: Path) -> tuple[np.ndarray, int]:
    """(float samples (channels, n), rate) exactly as stored, through PyAV only."""
    with av.open(str(path)) as c:
        ctx = c.streams.audio[0].codec_context
        rate, planar, channels = ctx.sample_rate, ctx.format.is_planar, ctx.channels
        frames = [f.to_ndarray() for f in c.decode(audio=0)]
    if not planar:  # packed (1, n * channels) -> (channels, n)
        frames = [f.reshape(-1, channels).T for f in frames]
    samples = np.concatenate(frames, axis=1)
    if samples.dtype.kind == "i":
        samples = samples / float(np.iinfo(samples.dtype).max + 1)
    return samples.astype(np.float32), rate


def snr_db(reference: np.ndarray, got: np.ndarray) -> float:
    err = got - reference
    return float(10 * np.log10((reference**2).sum() / max((err**2).sum(), 1e-20)))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- media out -----------------------------------------------------------------------------------


@dataclass
class Clip:
    codec: str
    pix_fmt: str
    width: int
    height: int
    frames: np.ndarray  # (n, h, w, 3) uint8
    fps: float
    video_seconds: float
    audio_codec: str | None
    audio_rate: int | None
    audio_channels: int | None
    audio_seconds: float | None  # the stream's duration (edit list applied)
    audio: np.ndarray | None  # decoded samples (channels, n)
    atoms: list[str]


def top_level_atoms(path: Path) -> list[str]:
    data, atoms, i = path.read_bytes(), [], 0
    while i + 8 <= len(data):
        size, kind = int.from_bytes(data[i : i + 4], "big"), data[i + 4 : i + 8].decode("latin-1")
        if size == 1:
            size = int.from_bytes(data[i + 8 : i + 16], "big")
        elif size == 0:
            size = len(data) - i
        assert size >= 8, f"bad atom {kind!r} at {i}"
        atoms.append(kind)
        i += size
    assert i == len(data), "atoms do not tile the file"
    return atoms


def read_clip(path: Path) -> Clip:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = np.stack([f.to_ndarray(format="rgb24") for f in c.decode(v)])
        a = c.streams.audio[0] if c.streams.audio else None
        clip = Clip(
            codec=v.codec_context.name,
            pix_fmt=v.codec_context.pix_fmt,
            width=v.codec_context.width,
            height=v.codec_context.height,
            frames=frames,
            fps=float(v.average_rate),
            video_seconds=float(v.duration * v.time_base),
            audio_codec=a.codec_context.name if a else None,
            audio_rate=a.codec_context.sample_rate if a else None,
            audio_channels=a.codec_context.channels if a else None,
            audio_seconds=float(a.duration * a.time_base) if a else None,
            audio=None,
            atoms=top_level_atoms(path),
        )
    if clip.audio_codec:
        clip.audio, _ = decode_audio(path)
    return clip


ENCODER_SLACK = 1.0  # mean |difference| in levels allowed between two MP4s of the same rendered frames


def same_clip(a: Clip, b: Clip) -> bool:
    """The same render, as decoded from two MP4s. libx264 in PyAV's FFmpeg build does not always encode the same
    frames to the same bits: 3 of 60 encodes of one 64x96 test clip differed under CPU load, by 0.14 levels on
    average, while the frames handed to it were byte-identical (checked by saving them). So frames agree to within
    ENCODER_SLACK (another seed differs by about 28 levels); the sound (AAC) must be identical."""
    if a.frames.shape != b.frames.shape or np.shape(a.audio) != np.shape(b.audio):
        return False
    return np.abs(a.frames.astype(np.int16) - b.frames).mean() < ENCODER_SLACK and np.array_equal(a.audio, b.audio)


def check_mp4(path: Path, width: int, height: int, frames: int, fps: float) -> Clip:
    """H.264 yuv420p at the size, exact frame count, AAC as long as the video, index first."""
    clip = read_clip(path)
    assert (clip.codec, clip.pix_fmt) == ("h264", "yuv420p")
    assert (clip.width, clip.height) == (width, height) and clip.frames.shape == (frames, height, width, 3)
    assert abs(clip.fps - fps) < 1e-6 and abs(clip.video_seconds - frames / fps) < 1e-3
    assert clip.audio_codec == "aac"
    assert abs(clip.audio_seconds - clip.video_seconds) <= 1 / fps, (clip.audio_seconds, clip.video_seconds)
    assert clip.audio.shape[1] / clip.audio_rate >= clip.video_seconds - 1 / fps  # the sound really is there
    assert clip.atoms.index("moov") < clip.atoms.index("mdat"), clip.atoms  # faststart
    assert not list(path.parent.glob(".*.part*"))  # temp files renamed or removed
    return clip


def check_sidecar(mp4: Path, inputs: list[Path], seed: int | None = None) -> dict:
    meta = json.loads(mp4.with_suffix(".json").read_text())
    assert re.fullmatch(r"[0-9a-f]{16}", meta["spec_hash"])
    assert isinstance(meta["seed"], int) and (seed is None or meta["seed"] == seed)
    assert meta["model"].startswith("tiny-ltx2")
    assert meta["timings"]["render"] > 0 and meta["timings"]["mux"] > 0 and meta["timings"]["denoise"] > 0
    assert meta["inputs"] == {str(p.resolve()): {"sha256": sha256(p)} for p in inputs}
    assert {"ltx2", "python", "torch", "diffusers", "transformers"} <= meta["versions"].keys()
    return meta


# -- 1. every mode, end to end -------------------------------------------------------------------

MODES = {
    "lipsync": dict(
        args=["lipsync", "face.png", "voice.wav", "--fps", "24", "-r", "64x96", "--seed", "11"],
        size=(64, 96), fps=24, audio="voice.wav", inputs=["face.png", "voice.wav"],
    ),
    "audiogen": dict(
        args=["audiogen", "face.png", "--duration", "1.2", "-r", "96x64", "--seed", "12"],
        size=(96, 64), fps=30, seconds=1.2, inputs=["face.png"],
    ),
    "keyframes-lipsync": dict(
        args=["keyframes", "face.png", "smile.jpg@last=0.9", "--audio", "voice16.flac", "--fps", "20", "-r", "64x64"],
        size=(64, 64), fps=20, audio="voice16.flac", inputs=["face.png", "smile.jpg", "voice16.flac"],
    ),
    "keyframes-audiogen": dict(
        args=["keyframes", "face.png", "smile.jpg@0.5=0.8", "turn.webp@last", "--duration", "1.5", "-r", "64x96"],
        size=(64, 96), fps=30, seconds=1.5, inputs=["face.png", "smile.jpg", "turn.webp"],
    ),
}  # fmt: skip


@pytest.fixture(scope="module")
def modes(tmp_path_factory) -> tuple[Path, dict[str, Result]]:
    d = tmp_path_factory.mktemp("modes")
    write_image(d / "face.png", (96, 64))
    write_image(d / "smile.jpg", (64, 96))
    write_image(d / "turn.webp", (96, 64))
    write_waveform(d / "voice.wav", speech(1.3, 44100, 2), 44100)
    write_waveform(d / "voice16.flac", speech(1.1, 16000, 1), 16000)
    return d, {name: invoke(d, *m["args"], "-o", f"{name}.mp4", "--json", *TINY) for name, m in MODES.items()}


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_renders_a_real_mp4(modes, mode):
    d, results = modes
    m, r = MODES[mode], results[mode]
    assert r.code == 0, r.err
    job, summary = r.json_lines()
    mp4 = d / f"{mode}.mp4"
    assert (job["id"], job["status"], Path(job["output"]), Path(job["local"])) == (mode, "done", mp4, mp4)
    assert summary == {
        "summary": True,
        "jobs": 1,
        "done": 1,
        "skipped": 0,
        "failed": 0,
        "interrupted": False,
        "model_loads": 1,
    }

    seconds = decoded_seconds(d / m["audio"]) if "audio" in m else m["seconds"]  # lip-sync: as long as the audio
    clip = check_mp4(mp4, *m["size"], frames=round(seconds * m["fps"]), fps=m["fps"])
    meta = check_sidecar(mp4, [d / name for name in m["inputs"]])
    assert meta["spec"]["mode"] == mode.removeprefix("keyframes-")
    assert abs(meta["spec"]["duration"] - seconds) < 1e-6
    assert meta["spec"]["output_frames"] == len(clip.frames)
    if "audio" in m:  # the soundtrack is the voice track itself: same rate and channels
        _, rate = decode_audio(d / m["audio"])
        assert (clip.audio_rate, clip.audio_channels) == (rate, 1 if m["audio"] == "voice16.flac" else 2)
    if mode.startswith("keyframes"):
        frames = [kf["frame"] for kf in meta["spec"]["keyframes"]]
        last = len(clip.frames) - 1
        assert frames == ([0, last] if mode == "keyframes-lipsync" else [0, round(0.5 * last), last])


# -- 2. lip-sync: the MP4's sound is the input waveform -----------------------------------------

VOICE_SECONDS = 1.1
VOICES = [  # (file, rate written, channels)
    *[(f"v44{suffix}", 44100, 2) for suffix in (".wav", ".flac", ".mp3", ".m4a", ".ogg")],
    *[(f"v16{suffix}", 16000, 1) for suffix in (".wav", ".flac", ".mp3", ".m4a", ".ogg")],
]


@pytest.fixture(scope="module")
def voices(tmp_path_factory) -> tuple[Path, Result]:
    """One batch: lip-sync a portrait to each voice file."""
    d = tmp_path_factory.mktemp("voices")
    write_image(d / "face.png", (64, 96))
    jobs = []
    for name, rate, channels in VOICES:
        write_waveform(d / name, speech(VOICE_SECONDS, rate, channels), rate)
        jobs.append({"id": name.replace(".", "-"), "image": "face.png", "audio": name})
    manifest = write_manifest(d / "voices.yaml", {"defaults": {"resolution": "64x96"}, "jobs": jobs})
    return d, invoke(d, "batch", manifest.name, "-o", "out", "--json", *TINY)


@pytest.mark.parametrize("name, rate, channels", VOICES)
def test_lipsync_sound_is_the_voice(voices, name, rate, channels):
    d, r = voices
    assert r.code == 0, r.err
    mp4 = d / "out" / f"{name.replace('.', '-')}.mp4"
    clip = check_mp4(mp4, 64, 96, frames=round(VOICE_SECONDS * 30), fps=30)  # every format: as long as written
    check_sidecar(mp4, [d / "face.png", d / name])

    reference, ref_rate = decode_audio(d / name)  # the input as FFmpeg decodes it: codec losses are not ours
    assert (clip.audio_rate, clip.audio_channels) == (ref_rate, channels)  # carried as it is, not resampled
    n = min(round(clip.video_seconds * ref_rate), reference.shape[1])
    snr = snr_db(reference[:, :n], clip.audio[:, :n])  # sample-aligned: a shift of one sample costs > 10 dB
    assert snr >= 30, f"{name}: {snr:.1f} dB"
    assert (np.abs(clip.audio[:, n : round(clip.video_seconds * ref_rate)]) < 0.05).all()  # padding is silence


# -- 3. determinism ------------------------------------------------------------------------------


def test_same_seed_same_clip_other_seed_other_clip(cli, tmp_path, modes):
    d, results = modes
    assert results["audiogen"].code == 0, results["audiogen"].err
    first = read_clip(d / "audiogen.mp4")
    args = ["audiogen", d / "face.png", "--duration", "1.2", "-r", "96x64", *TINY]
    assert cli(*args, "--seed", "12", "-o", "again.mp4").code == 0
    assert cli(*args, "--seed", "13", "-o", "other.mp4").code == 0
    again, other = read_clip(tmp_path / "again.mp4"), read_clip(tmp_path / "other.mp4")
    assert same_clip(first, again)
    assert first.frames.shape == other.frames.shape and not same_clip(first, other)
    assert not np.array_equal(first.audio, other.audio)
    # spec_hash names the pixels and sound: the same for the same render under another name, not for another seed
    first_hash, again_hash, other_hash = (
        json.loads(p.read_text())["spec_hash"]
        for p in (d / "audiogen.json", tmp_path / "again.json", tmp_path / "other.json")
    )
    assert first_hash == again_hash != other_hash


# -- 4. images as people send them ---------------------------------------------------------------


def _alpha_png(path: Path) -> Path:
    rgba = np.zeros((90, 150, 4), np.uint8)
    rgba[..., 0], rgba[20:70, 30:120] = 200, (10, 120, 250, 255)  # opaque box on a transparent field
    Image.fromarray(rgba, "RGBA").save(path)
    return path


# name -> (writer, size planned from the displayed aspect at the `small` preset's 96x64 area)
AWKWARD = {
    "rotated.jpg": (lambda p: write_image(p, (96, 64), exif_orientation=6), (64, 96)),  # displayed 64x96
    "alpha.png": (_alpha_png, (96, 64)),
    "odd.png": (lambda p: write_image(p, (333, 517)), (64, 96)),
    "grey.jpg": (lambda p: write_image(p, (80, 80), mode="L"), (64, 64)),
    "cmyk.jpg": (lambda p: write_image(p, (200, 100), mode="CMYK"), (96, 64)),
}


@pytest.fixture(scope="module")
def small_preset(tmp_path_factory) -> Path:
    """The fast preset with a 96x64 area, so `--resolution auto` plans small sizes."""
    d = tmp_path_factory.mktemp("presets")
    fast = yaml.safe_load((ROOT / "configs" / "presets" / "fast.yaml").read_text())
    (d / "small.yaml").write_text(yaml.safe_dump(fast | {"resolution": "96x64", "description": "test"}))
    return d


@pytest.mark.parametrize("name", AWKWARD)
def test_awkward_images_render_at_the_planned_size(cli, tmp_path, small_preset, name):
    write, (width, height) = AWKWARD[name]
    image = write(tmp_path / name)
    r = cli("audiogen", image, "--duration", "0.5", "--resolution", "auto", "--preset", "small",
            "--presets-dir", small_preset, "-o", "clip.mp4", *TINY)  # fmt: skip
    assert r.code == 0, r.err
    meta = check_sidecar(tmp_path / "clip.mp4", [image])
    assert (meta["spec"]["width"], meta["spec"]["height"]) == (width, height)
    assert width % 32 == 0 and height % 32 == 0
    check_mp4(tmp_path / "clip.mp4", width, height, frames=15, fps=30)


# -- 5. batch: a broken input fails its job only; an invalid manifest renders nothing ------------


def test_batch_reports_a_broken_input_and_renders_the_rest(cli, tmp_path, monkeypatch):
    write_image(tmp_path / "face.png", (64, 96))
    write_waveform(tmp_path / "voice.wav", speech(0.6, 16000, 1), 16000)
    write_truncated_jpeg(tmp_path / "broken.jpg", keep=2 / 3)
    # As if it broke after validation (overwritten while the batch ran): planning found it whole.
    image_size = probe.image_size
    monkeypatch.setattr(probe, "image_size", lambda p: (64, 96) if p.name == "broken.jpg" else image_size(p))
    jobs = [
        {"id": "gen", "image": "face.png", "duration": 0.5},
        {"id": "broken", "image": "broken.jpg", "duration": 0.5},
        {"id": "talk", "image": "face.png", "audio": "voice.wav"},
    ]
    manifest = write_manifest(tmp_path / "jobs.yaml", {"defaults": {"resolution": "64x96"}, "jobs": jobs})
    r = cli("batch", manifest, "-o", "out", "--json", *TINY)
    assert r.code == EXIT_FAILED, r.err
    *results, summary = r.json_lines()
    assert summary == {
        "summary": True,
        "jobs": 3,
        "done": 2,
        "skipped": 0,
        "failed": 1,
        "interrupted": False,
        "model_loads": 1,
    }
    by_id = {j["id"]: j for j in results}
    assert sorted(j["id"] for j in results) == ["broken", "gen", "talk"]  # one line per job, as each finishes
    broken = by_id["broken"]
    assert (broken["status"], broken["code"]) == ("failed", "E_INPUT")
    assert "broken.jpg" in broken["error"] and "truncated" in broken["error"]
    assert "job 'broken': E_INPUT" in r.err
    check_mp4(tmp_path / "out" / "gen.mp4", 64, 96, frames=15, fps=30)
    check_mp4(tmp_path / "out" / "talk.mp4", 64, 96, frames=18, fps=30)
    assert (by_id["gen"]["status"], by_id["talk"]["status"]) == ("done", "done")
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["gen.json", "gen.mp4", "index.html", "ltx2-journal.jsonl", "talk.json", "talk.mp4", "thumbs"]
    events = read_journal(tmp_path / "out" / "ltx2-journal.jsonl")
    per_job = {j: [e["event"] for e in events if e["id"] == j] for j in ("gen", "broken", "talk")}
    assert per_job == {"gen": ["started", "done"], "broken": ["started", "failed"], "talk": ["started", "done"]}
    assert [e["id"] for e in events if e["event"] == "started"] == ["gen", "broken", "talk"]  # renders in order


def test_batch_with_an_invalid_manifest_renders_nothing(cli, tmp_path):
    write_image(tmp_path / "face.png", (64, 96))
    (tmp_path / "out").mkdir()
    jobs = [
        {"id": "fine", "image": "face.png", "duration": 0.5},
        {"id": "typo", "image": "face.png", "duration": 0.5, "promt": "hello"},
        {"id": "gone", "image": "face.png", "audio": "missing.wav"},
    ]
    r = cli("batch", write_manifest(tmp_path / "jobs.jsonl", jobs), "-o", "out", "--json", *TINY)
    assert r.code == EXIT_INVALID
    assert "job 'typo': promt: unknown field; did you mean 'prompt'?" in r.err, r.err
    assert "job 'gone': audio: file not found" in r.err and "nothing was rendered" in r.err
    assert r.out == "" and list((tmp_path / "out").iterdir()) == []


# -- 6. no weights -------------------------------------------------------------------------------


@pytest.mark.parametrize("model", [None, "/nonexistent"])
def test_missing_model_is_one_line_saying_how_to_point_at_weights(cli, tmp_path, monkeypatch, model):
    monkeypatch.delenv("LTX2_MODEL_DIR", raising=False)
    write_image(tmp_path / "face.png", (64, 96))
    r = cli("audiogen", "face.png", "--duration", "0.5", "-r", "64x96", *(["--model", model] if model else []))
    assert r.code == EXIT_FAILED
    (line,) = r.err.strip().splitlines()
    assert line.startswith("error: ") and "--model" in line and "LTX2_MODEL_DIR" in line and "tiny" in line
    assert ("no model given" if model is None else "model not found: /nonexistent") in line
    assert "Traceback" not in r.err and not list(tmp_path.glob("*.mp4"))


def test_model_dir_from_the_environment(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("LTX2_MODEL_DIR", str(tmp_path / "no-weights-here"))
    write_image(tmp_path / "face.png", (64, 96))
    r = cli("audiogen", "face.png", "--duration", "0.5", "-r", "64x96")
    assert r.code == EXIT_FAILED and "model not found" in r.err and len(r.err.strip().splitlines()) == 1


# -- 7. gs:// outputs ----------------------------------------------------------------------------


def _download(blob_name: str, dest: Path) -> Path:
    from ltx2cli.storage import fetch as storage

    blob = storage.gcs_client().bucket("ltx2-test").get_blob(blob_name)
    assert blob is not None, f"gs://ltx2-test/{blob_name} was not uploaded"
    blob.download_to_filename(str(dest))
    return dest


def test_gs_output_from_the_command_line(cli, gcs, tmp_path):
    write_image(tmp_path / "face.png", (64, 96))
    write_waveform(tmp_path / "voice.wav", speech(0.7, 16000, 1), 16000)
    uri = "gs://ltx2-test/renders/talk.mp4"
    r = cli("lipsync", "face.png", "voice.wav", "-r", "64x96", "-o", uri, "--json", *TINY)
    assert r.code == 0, r.err
    job, _ = r.json_lines()
    staged = tmp_path / "ltx2-test" / "renders" / "talk.mp4"  # staged under ./bucket/object
    assert (job["output"], Path(job["local"]), job["uploaded"]["uri"]) == (uri, staged, uri)
    assert job["uploaded"]["size"] == staged.stat().st_size and "upload" in job["timings"]

    got = _download("renders/talk.mp4", tmp_path / "downloaded.mp4")
    assert got.read_bytes() == staged.read_bytes()  # the staged copy is kept, and is what was uploaded
    check_mp4(got, 64, 96, frames=21, fps=30)
    remote_meta = json.loads(_download("renders/talk.json", tmp_path / "downloaded.json").read_text())
    assert remote_meta == check_sidecar(staged, [tmp_path / "face.png", tmp_path / "voice.wav"])
    assert remote_meta["output"] == uri


def test_gs_outputs_from_a_manifest_never_share_a_staging_file(cli, gcs, tmp_path):
    """Same file name in two gs:// folders, and a local output of that name too: three separate files."""
    from ltx2cli.storage import fetch as storage

    bucket = storage.gcs_client().bucket("ltx2-test")
    write_image(tmp_path / "face.png", (64, 96))
    base = {"image": "face.png", "duration": 0.5, "resolution": "64x96"}
    jobs = [
        base | {"id": "clip"},  # -> staging/clip.mp4, a local output
        base | {"id": "hum", "output": "gs://ltx2-test/a/clip.mp4"},
        base | {"id": "buzz", "output": "gs://ltx2-test/b/clip.mp4"},
    ]
    r = cli("batch", write_manifest(tmp_path / "jobs.jsonl", jobs), "-o", "staging", *TINY)
    assert r.code == 0, r.err
    staging = tmp_path / "staging"
    assert json.loads((staging / "clip.json").read_text())["id"] == "clip"
    check_mp4(staging / "clip.mp4", 64, 96, frames=15, fps=30)
    uploaded = []
    for job_id, folder in (("hum", "a"), ("buzz", "b")):
        got = _download(f"{folder}/clip.mp4", tmp_path / f"{job_id}.mp4")
        check_mp4(got, 64, 96, frames=15, fps=30)
        assert got.read_bytes() == (staging / "ltx2-test" / folder / "clip.mp4").read_bytes()  # kept
        sidecar = bucket.get_blob(f"{folder}/clip.json")
        assert sidecar.content_type == "application/json"
        assert json.loads(sidecar.download_as_bytes())["id"] == job_id
        assert bucket.get_blob(f"{folder}/clip.mp4").content_type == "video/mp4"
        uploaded.append(got.read_bytes())
    assert len({*uploaded, (staging / "clip.mp4").read_bytes()}) == 3


def test_failed_upload_fails_the_job_and_keeps_the_render(cli, gcs, tmp_path):
    write_image(tmp_path / "face.png", (64, 96))
    r = cli("audiogen", "face.png", "-d", "0.5", "-r", "64x96", "-o", "gs://no-such-bucket/x/clip.mp4", "--json", *TINY)
    assert r.code == EXIT_FAILED
    job, summary = r.json_lines()
    assert (job["status"], job["code"], summary["failed"]) == ("failed", "E_STORAGE", 1)
    assert "no-such-bucket" in job["error"] and "job 'clip': E_STORAGE" in r.err
    check_mp4(Path(job["local"]), 64, 96, frames=15, fps=30)
    assert Path(job["local"]) == tmp_path / "no-such-bucket" / "x" / "clip.mp4"


# -- 8. help -------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["", "lipsync", "audiogen", "keyframes", "batch", "validate", "presets"])
def test_help_shows_examples(cli, command):
    r = cli(*command.split(), "--help")
    assert r.code == 0, r.err
    assert "Example" in r.out and f"ltx2 {command}".strip() + " " in r.out.split("Example", 1)[1]


@pytest.mark.parametrize("command", ["keyframes", "lipsync"])
def test_help_keeps_the_keyframe_syntax(cli, command):
    r = cli(command, "--help")  # rich help markup must not take [@POSITION] for a tag and drop it
    assert "IMAGE[@POSITION][=STRENGTH]" in r.out


def test_usage_errors_exit_2_with_usage(cli):
    r = cli("lipsync")
    assert r.code == EXIT_INVALID and "Missing argument" in r.err and "unexpected" not in r.err
    r = cli()
    assert r.code == EXIT_INVALID and "Usage: ltx2" in r.out + r.err and "unexpected" not in r.err


# -- 9. a bad command line is found before anything renders --------------------------------------


@pytest.fixture
def inputs(tmp_path) -> Path:
    write_image(tmp_path / "face.png", (64, 96))
    write_truncated_jpeg(tmp_path / "cut.jpg")
    write_non_finite_wav(tmp_path / "nan.wav", at=0.25)
    return tmp_path


POSITION = 'keyframes[1].position: must be "first", "last" or a fraction 0..1 of the clip, got'


@pytest.mark.parametrize(
    "args, words",
    [
        (["audiogen", "face.png", "--duration", "inf"], "job 'clip': duration: must be a finite number, got inf"),
        (["audiogen", "face.png", "--duration", "0.01"], "job 'clip': duration: 0.01 s at 30 fps rounds to 0 frames; at least 0.017 s makes one"),
        (["audiogen", "cut.jpg", "--duration", "1"], "job 'clip': image: image is damaged or truncated"),
        (["lipsync", "face.png", "nan.wav"], "job 'clip': audio: contains NaN or infinite samples (the first at 0.250 s)"),
        (["keyframes", "face.png", "cut.jpg", "--duration", "1"], "job 'clip': keyframes[1].image: image is damaged"),
        (["keyframes", "face.png", "face.png@-0.1", "--duration", "1"], f"job 'clip': {POSITION} '-0.1'"),
        (["keyframes", "face.png", "face.png@middle", "--duration", "1"], f"job 'clip': {POSITION} 'middle'"),
        (["audiogen", "face.png", "-k", "face.png@last=full"], "job 'clip': keyframes[0].strength: must be a valid number"),
    ],
)  # fmt: skip
def test_command_line_problems_exit_2_before_rendering(cli, inputs, args, words):
    r = cli(*args, "-o", "out/clip.mp4", *TINY)
    assert r.code == EXIT_INVALID, r.err
    assert words in r.err and "nothing was rendered" in r.err, r.err
    assert not (inputs / "out").exists()


def test_keyframe_arguments(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "k@2.png")
    assert parse_keyframe("k@2.png") == {"image": "k@2.png"}  # an existing file is taken whole
    assert parse_keyframe("k@2.png@0.5=0.8") == {"image": "k@2.png", "position": 0.5, "strength": 0.8}
    # An existing file, then a position that is not one: as given, for the job's checks to name.
    assert parse_keyframe("k@2.png@-1=.8") == {"image": "k@2.png", "position": "-1", "strength": ".8"}
    assert parse_keyframe("gone.png@-1") == {"image": "gone.png@-1"}  # no such file either way: "file not found"


@pytest.mark.parametrize(
    "output, image, job_id",
    [(None, "shots/face.png", "face"), ("talk.mp4", "face.png", "talk"), ("out/", "face.png", "face"),
     ("gs://b/v/", "https://x.org/a/cat.jpg?sig=1", "cat"), ("out/take 2.mp4", "face.png", "take-2")],
)  # fmt: skip
def test_a_single_commands_job_is_named_for_its_file(output, image, job_id):
    """-o a file names the job (and the sidecar) after it; -o a folder, or none, after the image."""
    assert _job_id(output, image) == job_id
