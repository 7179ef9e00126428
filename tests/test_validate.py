"""`ltx2 validate` as a user meets it: manifests in every format, the original service's payloads, errors."""

import json

import pytest
from conftest import write_manifest
from media import write_audio, write_blank_png, write_non_finite_wav, write_truncated_jpeg

from ltx2cli.errors import EXIT_INVALID


def test_example_manifests_are_valid(cli):
    from pathlib import Path

    examples = Path(__file__).resolve().parent.parent / "examples" / "jobs"
    r = cli("validate", examples, "--json")
    assert r.code == 0, r.err
    jobs = {j["id"]: j for j in r.json_lines()}
    modes = {(j["mode"], len(j["keyframes"]) > 1) for j in jobs.values()}
    assert modes == {("lipsync", False), ("audiogen", False), ("lipsync", True), ("audiogen", True)}
    assert jobs["turn"]["keyframes"][1]["frame"] == 22  # 0.5 of a 45-frame clip: round(22.0)


def test_plan_fields_and_exact_frames(cli, media, tmp_path):
    m = write_manifest(
        tmp_path / "jobs.jsonl",
        [
            {"id": "talk", "image": "media/face.png", "audio": "media/voice.wav"},
            {"id": "gen", "image": "media/face.png", "duration": 10},
            {
                "id": "keys",
                "keyframes": [
                    {"image": "media/face.png"},
                    {"image": "media/end.webp", "position": 0.5},
                    {"image": "media/tall.jpg", "position": "last", "strength": 0.6},
                ],
                "duration": 1.0,
            },
        ],
    )
    r = cli("validate", m, "--json")
    assert r.code == 0, r.err
    talk, gen, keys = r.json_lines()
    for key in (
        "id",
        "mode",
        "duration",
        "fps",
        "output_frames",
        "num_frames",
        "width",
        "height",
        "keyframes",
        "output",
    ):
        assert key in talk
    assert (talk["mode"], talk["duration"], talk["output_frames"], talk["num_frames"]) == ("lipsync", 2.0, 60, 65)
    assert (gen["mode"], gen["output_frames"], gen["num_frames"], gen["audio_latent_frames"]) == (
        "audiogen",
        300,
        305,
        254,
    )
    assert [(k["frame"], k["strength"]) for k in keys["keyframes"]] == [(0, 1.0), (14, 0.8), (29, 0.6)]
    assert talk["output"] == str(tmp_path / "outputs" / "talk.mp4")
    # resolution auto: the image's aspect ratio at the fast preset's 768x512 area, multiples of 32
    assert (gen["width"], gen["height"]) == (768, 512)
    assert (keys["width"] % 32, keys["height"] % 32) == (0, 0)


def test_original_service_requests_run_unchanged(cli, tmp_path):
    requests = [
        {"input": {"image_url": "https://example.com/portrait.jpg", "audio_url": "https://example.com/speech.mp3",
                   "prompt_positive": "A person speaks naturally", "quality_preset": "high", "lora_camera": 0.3}},
        {"input": {"image_url": "https://example.com/portrait.jpg", "duration": 5.0,
                   "prompt_positive": "A person speaking about nature", "quality_preset": "high"}},
        {"input": {"keyframes": [
            {"image_url": "https://example.com/start.jpg", "frame_position": "first", "strength": 1.0},
            {"image_url": "https://example.com/end.jpg", "frame_position": "last", "strength": 0.8}],
            "audio_url": "https://example.com/speech.mp3", "quality_preset": "fast"}},
        {"input": {"keyframes": [
            {"image_url": "https://example.com/start.jpg", "frame_position": "first", "strength": 1.0},
            {"image_url": "https://example.com/middle.jpg", "frame_position": 0.5, "strength": 0.7},
            {"image_url": "https://example.com/end.jpg", "frame_position": "last", "strength": 0.8}],
            "duration": 10.0, "prompt_positive": "Natural motion", "quality_preset": "ultra",
            "width": 1280, "height": 736, "seed": 1769881454461, "img_compression": 23, "img_strength": 1.0,
            "lora_distilled": 0.6, "lora_detailer": 1.0, "buffer_seconds": 1.0, "trim_to_audio": False}},
    ]  # fmt: skip
    r = cli("validate", write_manifest(tmp_path / "requests.jsonl", requests), "--json", "--no-fetch")
    assert r.code == 0, r.err
    lipsync, audiogen, keys_lipsync, keys_audiogen = r.json_lines()
    assert lipsync["mode"] == "lipsync" and lipsync["preset"] == "balanced"
    assert lipsync["num_frames"] is None  # remote audio, not fetched: length known once the renderer fetches it
    assert audiogen["num_frames"] == 153 and audiogen["prompt"] == "A person speaking about nature"
    assert keys_lipsync["keyframes"][1]["position"] == "last"
    assert keys_audiogen["preset"] == "quality" and (keys_audiogen["width"], keys_audiogen["height"]) == (1280, 736)
    assert [k["frame"] for k in keys_audiogen["keyframes"]] == [0, 150, 299]
    assert {lo["name"]: lo["strength"] for lo in keys_audiogen["loras"]} == {"camera-dolly-in": 0.3, "distilled": 0.6}
    assert any("lora_detailer" in w for w in keys_audiogen["warnings"])
    assert "buffer_seconds is ignored" in r.err


def test_single_request_file_and_unicode_paths(cli, media, tmp_path):
    d = tmp_path / "clients" / "Zoë – 東京"
    d.mkdir(parents=True)
    (d / "portrait ü.png").write_bytes((media / "face.png").read_bytes())
    req = {"id": "zoë-1", "input": {"image_url": "portrait ü.png", "duration": 2.5}}
    r = cli("validate", write_manifest(d / "request.json", req), "--json")
    assert r.code == 0, r.err
    (job,) = r.json_lines()
    assert job["id"] == "zoë-1" and job["output_frames"] == 75 and job["num_frames"] == 81
    assert job["keyframes"][0]["image"] == str(d / "portrait ü.png")


def test_yaml_defaults_and_precedence(cli, media, tmp_path):
    m = write_manifest(
        tmp_path / "jobs.yaml",
        {
            "defaults": {"preset": "balanced", "fps": 24, "steps": 12, "guidance": {"cfg": 2.0, "stg": 0.5}},
            "jobs": [
                {"id": "a", "image": "media/face.png", "duration": 1},
                {"id": "b", "image": "media/face.png", "duration": 1, "fps": 25, "guidance": {"cfg": 4.0}},
            ],
        },
    )
    a, b = cli("validate", m, "--json").json_lines()
    assert (a["preset"], a["fps"], a["steps"], a["sigmas"]) == ("balanced", 24.0, 12, None)
    assert (a["guidance"]["cfg"], a["guidance"]["stg"], a["guidance"]["modality"]) == (2.0, 0.5, 1.0)
    assert (b["fps"], b["guidance"]["cfg"], b["guidance"]["stg"]) == (25.0, 4.0, 0.5)
    # CLI flags beat the job, which beats defaults, which beat the preset
    a, b = cli("validate", m, "--json", "--fps", "30", "--cfg", "5", "--preset", "fast").json_lines()
    assert (a["fps"], b["fps"], a["guidance"]["cfg"], b["guidance"]["cfg"], b["guidance"]["stg"]) == (30, 30, 5, 5, 0.5)
    assert a["preset"] == b["preset"] == "fast" and a["output_frames"] == 30


def test_jsonl_comments_and_blank_lines(cli, media, tmp_path):
    text = '# two jobs\n\n{"id": "a", "image": "media/face.png", "duration": 1}\n   \n# done\n' \
           '{"image": "media/face.png", "duration": 2}\n'  # fmt: skip
    r = cli("validate", write_manifest(tmp_path / "j.jsonl", text), "--json")
    assert r.code == 0, r.err
    assert [j["id"] for j in r.json_lines()] == ["a", "j-2"]


def test_jsonl_problems_name_their_own_line(cli, tmp_path):
    """Past a # comment line a JSONL job's problems point at its line in the file, not at its ordinal."""
    import shutil
    from pathlib import Path

    examples = Path(__file__).resolve().parent.parent / "examples" / "jobs"
    shutil.copytree(examples / "media", tmp_path / "media")
    lines = (examples / "runpod-requests.jsonl").read_text().splitlines()
    assert lines[0].startswith("#")
    lines[2] = lines[2].replace('"img_strength": 0.9', '"img_strength": 1.9')
    lines[4] = lines[4].replace('"prompt_positive"', '"promt"')
    r = cli("validate", write_manifest(tmp_path / "requests.jsonl", "\n".join(lines) + "\n"))
    assert r.code == EXIT_INVALID
    problems = [line for line in r.err.splitlines() if line.startswith("error: requests.jsonl:")]
    assert problems == [
        "error: requests.jsonl:3: job 'rp-audiogen': img_strength: must be less than or equal to 1, got 1.9",
        "error: requests.jsonl:5: job 'rp-keys-audiogen': promt: unknown field; did you mean 'prompt'?",
    ], r.err


def test_human_output_is_a_table(cli, media, tmp_path):
    r = cli("validate", write_manifest(tmp_path / "j.jsonl", [{"id": "a", "image": "media/face.png", "duration": 1}]))
    assert r.code == 0
    assert "Render plan" in r.out and "30/33" in r.out and "outputs/a.mp4" in r.out and "1 job(s) valid" in r.err


def test_lipsync_duration_is_the_audio_length(cli, tmp_path, media):
    import sys

    sys.path.insert(0, str(tmp_path))
    from media import write_audio, write_video_with_audio

    for name, seconds in (("a.mp3", 1.5), ("b.flac", 3.2), ("c.ogg", 0.9), ("stereo.wav", 2.7)):
        write_audio(media / name, seconds, rate=22050, channels=2 if name.startswith("stereo") else 1)
    write_audio(media / "d.m4a", 1.0, rate=44100)  # AAC pads its last frame: 1.02 s decoded
    write_video_with_audio(media / "clip.mp4", 2.0)
    jobs = [{"id": n.split(".")[0], "image": "media/face.png", "audio": f"media/{n}"}
            for n in ("a.mp3", "b.flac", "c.ogg", "stereo.wav", "d.m4a", "clip.mp4")]  # fmt: skip
    r = cli("validate", write_manifest(tmp_path / "j.jsonl", jobs), "--json")
    assert r.code == 0, r.err
    frames = {j["id"]: (j["output_frames"], j["num_frames"]) for j in r.json_lines()}
    assert (
        frames["a"] == (45, 49) and frames["b"] == (96, 97) and frames["c"] == (27, 33) and frames["stereo"] == (81, 81)
    )
    assert frames["d"] == (30, 33) and frames["clip"] == (60, 65)


def test_audio_shorter_than_a_frame_is_named(cli, media, tmp_path):
    write_audio(media / "click.wav", 0.01)
    m = write_manifest(tmp_path / "j.jsonl", [{"id": "click", "image": "media/face.png", "audio": "media/click.wav"}])
    r = cli("validate", m)
    assert r.code == EXIT_INVALID
    message = (
        f"{media.resolve() / 'click.wav'} is 0.01 s, which at 30 fps rounds to 0 frames; at least 0.017 s makes one"
    )
    assert f"job 'click': audio: {message}" in r.err, r.err


def test_max_duration_can_be_raised(cli, media, tmp_path):
    m = write_manifest(tmp_path / "j.jsonl", [{"id": "long", "image": "media/face.png", "audio": "media/long.wav"}])
    r = cli("validate", m, "--max-duration", "20")  # the default is 600 s: longer clips render in windows
    assert r.code == EXIT_INVALID and "21.00 s long, over max_duration (20 s)" in r.err
    r = cli("validate", m, "--max-duration", "25", "--json")
    assert r.code == 0 and r.json_lines()[0]["output_frames"] == 630


BROKEN = [
    # (job fields or raw line, expected field in message, expected words)
    ({"image": "media/face.png", "duration": "five"}, "duration", "number"),
    ({"image": "media/face.png", "duration": True}, "duration", "must be a number"),
    ({"image": "media/face.png", "duration": -2}, "duration", "greater than 0"),
    ({"image": "media/face.png", "duration": 700}, "duration", "max_duration"),
    (
        {"image": "media/face.png", "duration": 0.01},
        "duration",
        "0.01 s at 30 fps rounds to 0 frames; at least 0.017 s",
    ),
    ({"image": "media/face.png", "duration": 0.02, "fps": 25}, "duration", "at least 0.021 s makes one"),
    ({"image": "media/face.png", "duration": float("inf")}, "duration", "must be a finite number, got inf"),
    ({"image": "media/face.png", "audio": "media/voice.wav", "max_duration": float("inf")}, "max_duration", "finite"),
    ({"image": "media/face.png", "duration": 2, "guidance": {"cfg": float("inf")}}, "guidance.cfg", "finite"),
    ({"image": "media/face.png", "duration": 2, "audio": "media/voice.wav"}, "duration", "not both"),
    ({"image": "media/face.png"}, "audio", "duration"),
    ({"duration": 2}, "image", "missing"),
    ({"image": "media/nope.png", "duration": 2}, "image", "not found"),
    ({"image": "media/voice.wav", "duration": 2}, "image", "not an image"),
    ({"image": "media/face.png", "audio": "media/face.png"}, "audio", "no audio stream"),
    ({"image": "media/face.png", "audio": "media/missing.mp3"}, "audio", "not found"),
    ({"image": "media/face.png", "durtion": 2}, "durtion", "did you mean 'duration'"),
    ({"image": "media/face.png", "duration": 2, "img_compression": 60}, "img_compression", "50"),
    ({"image": "media/face.png", "duration": 2, "img_strength": 1.5}, "img_strength", "1"),
    ({"image": "media/face.png", "duration": 2, "width": 500, "height": 512}, "width", "multiple of 32"),
    ({"image": "media/face.png", "duration": 2, "resolution": "huge"}, "resolution", "WIDTHxHEIGHT"),
    ({"image": "media/face.png", "duration": 2, "quality_preset": "turbo"}, "quality_preset", "valid: fast"),
    ({"image": "media/face.png", "duration": 2, "mode": "t2v"}, "mode", "lipsync"),
    ({"image": "media/face.png", "duration": 2, "mode": "lipsync"}, "audio", "needs audio"),
    ({"image": "media/face.png", "duration": 2, "seed": -1}, "seed", "greater than or equal to 0"),
    ({"image": "media/face.png", "duration": 2, "seed": 1.5}, "seed", "integer"),
    ({"image": "media/face.png", "duration": 2, "fps": 0}, "fps", "greater than or equal to 1"),
    ({"image": "ftp://host/a.png", "duration": 2}, "image", "unsupported scheme"),
    ({"image": "media/face.png", "duration": 2, "output": "out/{name}.mp4"}, "output", "unknown placeholder {name}"),
    ({"image": "media/face.png", "duration": 2, "output": "out/clip.mov"}, "output", ".mp4"),
    ({"image": "media/face.png", "duration": 2, "output": "gs://Bad_Bucket/x.mp4"}, "output", "bucket"),
    ({"image": "media/face.png", "duration": 2, "loras": [{"name": "detailer"}]}, "loras[0].name", "IC-LoRA"),
    (
        {"image": "media/face.png", "duration": 2, "loras": [{"name": "ltx-video-2b-lora"}]},
        "loras[0].name",
        "unknown LoRA",
    ),
    ({"image": "media/face.png", "duration": 2, "loras": [{"path": "none.safetensors"}]}, "loras[0].path", "not found"),
    (
        {"image": "media/face.png", "duration": 2, "loras": [{"name": "distilled", "path": "x.safetensors"}]},
        "loras[0]",
        "exactly one",
    ),
    ({"image": "media/face.png", "duration": 2, "guidance": {"cgf": 3}}, "guidance.cgf", "did you mean 'cfg'"),
    ({"image": "media/face.png", "image_url": "media/face.png", "duration": 2}, "image", "given twice"),
    ({"keyframes": [], "duration": 2}, "keyframes", "at least 1"),
    ({"keyframes": [{"image": "media/face.png"}] * 10, "duration": 2}, "keyframes", "at most 9"),
    (
        {"image": "media/face.png", "keyframes": [{"image": "media/end.webp"}] * 9, "duration": 2},
        "keyframes",
        "at most 9",
    ),
    ({"keyframes": "media/face.png", "duration": 2}, "keyframes", "list"),
    (
        {"keyframes": ["media/face.png"], "duration": 2},
        "keyframes[0]",
        "must be a mapping such as {image: a.png, position: first, strength: 1.0}, got 'media/face.png'",
    ),
    (
        {"image": "media/face.png", "duration": 2, "loras": ["distilled"]},
        "loras[0]",
        "must be a mapping such as {name:",
    ),
    ({"image": "media/face.png", "duration": 2, "guidance": 3}, "guidance", "must be a mapping such as {cfg: 3.0"),
    ({"image": "", "duration": 2}, "image", "must not be empty"),
    ({"keyframes": [{"image": ""}], "duration": 2}, "keyframes[0].image", "must not be empty"),
    ({"image": "media/face.png", "duration": 2, "prompt": ["a"]}, "prompt", "must be a string, got a list"),
    (
        {"keyframes": [{"image_url": "media/face.png", "frame_position": 1.4}], "duration": 2},
        "keyframes[0].frame_position",
        '"first", "last" or a fraction',
    ),
    (
        {"keyframes": [{"image": "media/face.png", "position": "middle"}], "duration": 2},
        "keyframes[0].position",
        "middle",
    ),
    (
        {"keyframes": [{"image": "media/face.png"}, {"image": "media/end.webp", "position": 0.0}], "duration": 2},
        "keyframes[1]",
        "same frame 0",
    ),
    (
        {"keyframes": [{"image": "media/face.png"}, {"image": "media/end.webp", "position": 0.01}], "duration": 0.5},
        "keyframes[1]",
        "same frame 0",
    ),
    ({"keyframes": [{"image": "media/face.png", "strength": 2}], "duration": 2}, "keyframes[0].strength", "1"),
    ({"keyframes": [{"position": "first"}], "duration": 2}, "keyframes[0].image", "missing"),
    ({"keyframes": [{"image": "media/face.png", "weight": 1}], "duration": 2}, "keyframes[0].weight", "unknown field"),
    ({"id": "bad/id", "image": "media/face.png", "duration": 2}, "id", "letters, digits"),
    ({"image": "media/face.png", "duration": 2, "trim_to_audio": "sometimes"}, "trim_to_audio", "boolean"),
    ({"image": "media/face.png", "duration": 1, "prompt": "a \udcff b"}, "prompt", "half a UTF-16 pair"),
]


@pytest.mark.parametrize("fields, field, words", BROKEN, ids=[f"{b[1]}:{b[2]}" for b in BROKEN])
def test_broken_job_is_reported_precisely(cli, media, tmp_path, fields, field, words):
    good = {"id": "good", "image": "media/face.png", "duration": 1}
    jobs = [good, {"id": "bad", **fields} if "id" not in fields else fields]
    r = cli("validate", write_manifest(tmp_path / "jobs.jsonl", jobs))
    assert r.code == EXIT_INVALID
    jid = jobs[1]["id"]
    lines = [line for line in r.err.splitlines() if line.startswith("error: jobs.jsonl:2:")]
    assert lines, r.err
    assert f"job {jid!r}: {field}:" in lines[0] and words in lines[0], lines[0]
    assert "Traceback" not in r.err + r.out
    assert "good" not in r.err


TWICE = [
    # (fields written in this order, the problem)
    (
        {"image": "media/face.png", "image_url": "media/face.png"},
        "image: given twice (as 'image' and its alias 'image_url'); keep one",
    ),
    (
        {"image_url": "media/face.png", "image": "media/face.png"},
        "image: given twice (as 'image' and its alias 'image_url'); keep one",
    ),
    (
        {"prompt_positive": "a", "prompt": "b", "image": "media/face.png"},
        "prompt: given twice (as 'prompt' and its alias 'prompt_positive'); keep one",
    ),
    (
        {"keyframes": [{"image_url": "media/face.png", "image": "media/face.png"}]},
        "keyframes[0].image: given twice (as 'image' and its alias 'image_url'); keep one",
    ),
    (
        {"keyframes": [{"image": "media/face.png", "frame_position": "last", "position": "first"}]},
        "keyframes[0].position: given twice (as 'position' and its alias 'frame_position'); keep one",
    ),
]


@pytest.mark.parametrize("fields, problem", TWICE, ids=[" ".join(f) for f, _ in TWICE])
def test_a_field_under_both_its_names_is_named_by_both(cli, media, tmp_path, fields, problem):
    r = cli("validate", write_manifest(tmp_path / "j.jsonl", [{"id": "two", **fields, "duration": 1}]))
    assert r.code == EXIT_INVALID
    assert f"error: j.jsonl:1: job 'two': {problem}" in r.err.splitlines(), r.err


@pytest.mark.parametrize(
    "name, text, where, words",
    [
        ("bad.jsonl", '{"id": "a", "image": "x.png",\n', "bad.jsonl:1", "not valid JSON"),
        ("bad.json", '{"jobs": [\n  {"id": "a",}\n]}', "bad.json:2", "not valid JSON"),
        ("bad.yaml", "jobs:\n  - id: a\n    image: [unclosed\n", "bad.yaml:", "not valid YAML"),
        ("bad.yaml", "jobs:\n  - id: a\n\tduration: 2\n", "bad.yaml:3", "not valid YAML"),
        ("empty.yaml", "", "empty.yaml", "no jobs"),
        ("list.jsonl", "[1, 2]\n", "list.jsonl:1", "must be a mapping"),
        ("top.yaml", "jobs: []\nextra: 1\n", "top.yaml:2", "unknown top-level key 'extra'"),
        ("jobs.yaml", "jobs: {a: 1}\n", "jobs.yaml:1", "jobs must be a list"),
        ("req.json", '{"input": {"duration": 2}, "webhok": "x"}', "req.json:1", "webhok"),
        ("jobs.txt", "id: a\n", "jobs.txt", "unknown manifest type"),
        ("scalar.yaml", "just words\n", "scalar.yaml:1", "a manifest must be"),
    ],
)
def test_broken_manifest_files(cli, tmp_path, name, text, where, words):
    r = cli("validate", write_manifest(tmp_path / name, text))
    assert r.code == EXIT_INVALID
    assert f"error: {where}" in r.err and words in r.err, r.err
    assert "Traceback" not in r.err


def test_more_keyframes_than_frames_is_said_once(cli, media, tmp_path):
    jobs = [
        {"id": "nine", "keyframes": [{"image": "media/face.png"}] * 9, "duration": 0.1},  # 3 frames at 30 fps
        {"id": "four", "image": "media/face.png", "keyframes": [{"image": "media/end.webp"}] * 3, "duration": 0.1},
    ]
    r = cli("validate", write_manifest(tmp_path / "j.jsonl", jobs))
    assert r.code == EXIT_INVALID
    assert [line for line in r.err.splitlines() if line.startswith("error: j.jsonl:")] == [
        "error: j.jsonl:1: job 'nine': keyframes: a 3-frame clip holds at most 3 keyframes; got 9",
        "error: j.jsonl:2: job 'four': keyframes: a 3-frame clip holds at most 3 keyframes; got 4 (image counts as one)",
    ], r.err


def test_all_problems_reported_at_once_with_lines(cli, media, tmp_path):
    text = """defaults:
  preset: fast
  durration: 3
jobs:
  - id: one
    image: media/face.png
    duration: 2
  - id: two
    image: media/face.png
    keyframes:
      - image: media/end.webp
        position: 2
    duration: 2
  - id: one
    image: media/face.png
    duration: 1
"""
    r = cli("validate", write_manifest(tmp_path / "jobs.yaml", text))
    assert r.code == EXIT_INVALID
    assert "jobs.yaml:3: defaults.durration: unknown field; did you mean 'duration'?" in r.err
    assert r.err.count("durration") == 1  # a bad default is reported once, not per job
    assert "jobs.yaml:12: job 'two': keyframes[0].position:" in r.err
    assert "jobs.yaml:14: job 'one': id: duplicate id (first used at" in r.err


def test_a_bad_default_is_its_own_problem_and_hides_no_other(cli, media, tmp_path):
    text = """defaults: {presett: fast, fps: fast, prompt_negative: a, negative_prompt: b, image_url: media/end.webp}
jobs:
  - id: one
    image: media/face.png
    duration: 1
    output: "out/{name}.mp4"
  - id: two
    image: media/nope.png
    duration: 1
  - id: three
    image: media/face.png
    audio: media/voice.wav
    duration: 1
"""
    r = cli("validate", write_manifest(tmp_path / "jobs.yaml", text))
    assert r.code == EXIT_INVALID
    problems = [line.removeprefix("error: ") for line in r.err.splitlines() if line.startswith("error: jobs.yaml:")]
    assert sorted(problems) == sorted([
        "jobs.yaml:1: defaults.presett: unknown field; did you mean 'preset'?",
        "jobs.yaml:1: defaults.fps: must be a valid number, unable to parse string as a number, got 'fast'",
        "jobs.yaml:1: defaults.negative_prompt: given twice (as 'negative_prompt' and its alias 'prompt_negative'); keep one",
        "jobs.yaml:6: job 'one': output: unknown placeholder {name}; valid placeholders: {id}, {job_id}, {mode}, {preset}, {seed}",
        "jobs.yaml:8: job 'two': image: file not found: " + str(media / "nope.png"),  # named as the job wrote it
        "jobs.yaml:13: job 'three': duration: give audio (lipsync: the clip is as long as the audio) or duration (audiogen), not both",
    ]), r.err  # fmt: skip


def test_a_bad_preset_in_defaults_is_named_there(cli, media, tmp_path):
    text = "defaults:\n  fps: 24\n  preset: turbo\njobs:\n  - {id: a, image: media/face.png, duration: 1}\n" \
           "  - {id: b, image: media/face.png, duration: 1}\n"  # fmt: skip
    r = cli("validate", write_manifest(tmp_path / "jobs.yaml", text))
    assert r.code == EXIT_INVALID
    assert r.err.count("unknown preset 'turbo'") == 1
    assert "error: jobs.yaml:3: defaults.preset: unknown preset 'turbo'" in r.err, r.err


REPEATED = [
    # (file, text, the one problem)
    ("j.yaml", "- {id: dk, image: media/face.png, duration: 0.3, duration: 0.5}\n",
     "j.yaml:1: job 'dk': duration: given twice in the same job; keep one"),
    ("j.yaml", "- id: dk\n  duration: 0.3\n  keyframes:\n    - image: media/face.png\n      image: media/end.webp\n",
     "j.yaml:5: job 'dk': keyframes[0].image: given twice in the same job; keep one"),
    ("j.yaml", "defaults:\n  fps: 24\n  fps: 25\njobs:\n  - {id: dk, image: media/face.png, duration: 1}\n",
     "j.yaml:3: defaults.fps: given twice; keep one"),
    ("j.json", '[{"id": "dk", "image": "media/face.png",\n  "duration": 0.3,\n  "duration": 0.5}]\n',
     "j.json:3: job 'dk': duration: given twice in the same job; keep one"),
    ("j.jsonl", '# a request\n{"id": "dk", "input": {"image_url": "media/face.png", "duration": 0.3, "duration": 0.5}}\n',
     "j.jsonl:2: job 'dk': duration: given twice in the same job; keep one"),
]  # fmt: skip


@pytest.mark.parametrize("name, text, problem", REPEATED, ids=[p for _, _, p in REPEATED])
def test_a_key_written_twice_is_a_problem(cli, media, tmp_path, name, text, problem):
    r = cli("validate", write_manifest(tmp_path / name, text))
    assert r.code == EXIT_INVALID
    assert [line for line in r.err.splitlines() if line.startswith("error: j.")] == [f"error: {problem}"], r.err


def test_a_yaml_merge_key_set_again_is_not_written_twice(cli, media, tmp_path):
    text = "- &base {id: a, image: media/face.png, duration: 1}\n- <<: *base\n  id: b\n  duration: 2\n"
    r = cli("validate", write_manifest(tmp_path / "j.yaml", text), "--json")
    assert r.code == 0, r.err
    assert [(j["id"], j["duration"]) for j in r.json_lines()] == [("a", 1.0), ("b", 2.0)]


def test_audio_with_nan_samples_is_found_at_validation(cli, media, tmp_path):
    write_non_finite_wav(media / "nan.wav", at=0.5)  # FFmpeg's AAC encoder would refuse it at the end of the render
    jobs = [{"id": "nan", "image": "media/face.png", "audio": "media/nan.wav"},
            {"id": "ok", "image": "media/face.png", "audio": "media/voice.wav"}]  # fmt: skip
    r = cli("validate", write_manifest(tmp_path / "jobs.jsonl", jobs))
    assert r.code == EXIT_INVALID, r.err
    nan = str(media.resolve() / "nan.wav")
    assert f"jobs.jsonl:1: job 'nan': audio: contains NaN or infinite samples (the first at 0.500 s): {nan}" in r.err
    assert "'ok'" not in r.err


@pytest.mark.filterwarnings("error::PIL.Image.DecompressionBombWarning")
def test_images_decode_whole_at_validation(cli, media, tmp_path):
    write_truncated_jpeg(media / "cut.jpg")
    write_blank_png(media / "huge.png", (15000, 13000))  # 195 MP: Pillow refuses it
    write_blank_png(media / "big.png", (10000, 10000))  # 100 MP: Pillow warns, and decodes it
    jobs = [
        {"id": "cut", "image": "media/cut.jpg", "duration": 1},
        {"id": "huge", "image": "media/huge.png", "duration": 1},
        {"id": "keys", "keyframes": [{"image": "media/face.png"}, {"image": "media/cut.jpg"}], "duration": 1},
        {"id": "big", "image": "media/big.png", "duration": 1},
        {"id": "gone", "image": "media/gone.png", "duration": 1},
    ]
    r = cli("validate", write_manifest(tmp_path / "jobs.jsonl", jobs))
    assert r.code == EXIT_INVALID, r.err
    assert "jobs.jsonl:1: job 'cut': image: image is damaged or truncated" in r.err
    assert "jobs.jsonl:2: job 'huge': image: 195 MP is over the 179 MP Pillow decodes safely" in r.err
    assert "jobs.jsonl:3: job 'keys': keyframes[1].image: image is damaged or truncated" in r.err
    assert "jobs.jsonl:5: job 'gone': image: file not found" in r.err  # the jobs after a huge image are checked too
    assert "'big'" not in r.err and "unexpected" not in r.err


def test_infinity_in_yaml_and_json_is_a_problem_not_a_crash(cli, media, tmp_path):
    yaml_jobs = "- id: y\n  image: media/face.png\n  duration: .inf\n- id: ok\n  image: media/face.png\n  duration: 1\n"
    json_jobs = '[{"id": "j", "image": "media/face.png", "duration": 1, "fps": 30, "guidance": {"stg": Infinity}}]'
    r = cli("validate", write_manifest(tmp_path / "a.yaml", yaml_jobs), write_manifest(tmp_path / "b.json", json_jobs))
    assert r.code == EXIT_INVALID, r.err
    assert "a.yaml:3: job 'y': duration: must be a finite number, got inf" in r.err
    assert "b.json:1: job 'j': guidance.stg: must be a finite number, got inf" in r.err
    assert "unexpected" not in r.err and "'ok'" not in r.err


def test_json_field_lines(cli, media, tmp_path):
    text = '{\n  "jobs": [\n    {"id": "x",\n     "image": "media/face.png",\n     "duration": "long"}\n  ]\n}\n'
    r = cli("validate", write_manifest(tmp_path / "j.json", text))
    assert "j.json:5: job 'x': duration:" in r.err


def test_duplicates_across_manifests_and_shared_outputs(cli, media, tmp_path):
    a = write_manifest(tmp_path / "a.jsonl", [{"id": "x", "image": "media/face.png", "duration": 1, "output": "o.mp4"}])
    b = write_manifest(tmp_path / "b.jsonl", [{"id": "x", "image": "media/face.png", "duration": 1},
                                              {"id": "y", "image": "media/face.png", "duration": 1, "output": "o.mp4"}])  # fmt: skip
    r = cli("validate", a, b)
    assert r.code == EXIT_INVALID
    assert "b.jsonl:1: job 'x': id: duplicate id (first used at" in r.err
    assert "b.jsonl:2: job 'y': output: writes" in r.err and "as job 'x' does" in r.err


@pytest.mark.parametrize(
    "output, clash",
    [(None, False), ("renders/{job_id}.mp4", False), ("renders/", False), ("renders/same.mp4", True)],
)
def test_a_duplicate_id_alone_does_not_also_clash_outputs(cli, media, tmp_path, output, clash):
    job = {"id": "dup", "image": "media/face.png", "duration": 1} | ({"output": output} if output else {})
    r = cli("validate", write_manifest(tmp_path / "j.jsonl", [job, job]))
    assert r.code == EXIT_INVALID
    problems = [line for line in r.err.splitlines() if line.startswith("error: j.jsonl:")]
    assert problems[0] == "error: j.jsonl:2: job 'dup': id: duplicate id (first used at j.jsonl:1)", r.err
    # an output that does not name the id clashes whatever the ids: that is a problem of its own
    assert problems[1:] == (["error: j.jsonl:2: job 'dup': output: writes " + str(tmp_path / "renders" / "same.mp4")
                             + ", as job 'dup' does; add {id} to the template"] if clash else []), r.err  # fmt: skip


def test_missing_manifest(cli, tmp_path):
    r = cli("validate", tmp_path / "nope.yaml")
    assert r.code == EXIT_INVALID and "manifest not found" in r.err


def test_a_folder_is_read_one_level_deep(cli, media, tmp_path):
    from ltx2cli.jobs.manifest import SUFFIXES

    (tmp_path / "jobs" / "more").mkdir(parents=True)
    write_manifest(
        tmp_path / "jobs" / "more" / "deep.jsonl", [{"id": "deep", "image": "../../media/face.png", "duration": 1}]
    )
    r = cli("validate", tmp_path / "jobs")
    assert r.code == EXIT_INVALID
    assert "error: jobs: no manifests found (" in r.err and "a folder's subfolders are not read" in r.err, r.err
    assert all(suffix in r.err for suffix in SUFFIXES), r.err  # every suffix read, .ndjson too
    write_manifest(
        tmp_path / "jobs" / "top.ndjson", json.dumps({"id": "top", "image": "../media/face.png", "duration": 1})
    )
    r = cli("validate", tmp_path / "jobs", "--json")
    assert r.code == 0 and [j["id"] for j in r.json_lines()] == ["top"], r.err
    for command in ("validate", "batch"):
        help_text = " ".join(cli(command, "--help").out.replace("│", " ").split())
        assert all(suffix in help_text for suffix in SUFFIXES) and "subfolders are not read" in help_text


def test_output_templates(cli, media, tmp_path):
    jobs = [
        {"id": "a", "image": "media/face.png", "duration": 1, "output": "renders/{mode}/{id}-{seed}.mp4", "seed": 5},
        {
            "id": "b",
            "image": "media/face.png",
            "duration": 1,
            "output": "gs://my-bucket/ugc_media/{job_id}/ltx2_videos/",
        },
    ]
    manifest = write_manifest(tmp_path / "j.jsonl", jobs)
    a, b = cli("validate", manifest, "--json", "--no-fetch").json_lines()
    assert a["output"] == str(tmp_path / "renders" / "audiogen" / "a-5.mp4")
    assert b["output"] == "gs://my-bucket/ugc_media/b/ltx2_videos/b.mp4"


def test_a_bucket_output_without_credentials_would_fail_only_its_job(cli, media, tmp_path, monkeypatch):
    """No Google Cloud credentials: the gs:// job would fail before its render (E_STORAGE), the local one render."""
    for var in ("GOOGLE_APPLICATION_CREDENTIALS", "STORAGE_EMULATOR_HOST", "CLOUDSDK_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "no-gcloud"))  # no `gcloud auth` login to fall back on
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # nor a metadata server
    jobs = [
        {"id": "here", "image": "media/face.png", "duration": 1},
        {"id": "there", "image": "media/face.png", "duration": 1, "output": "gs://my-bucket/v/"},
    ]
    r = cli("validate", write_manifest(tmp_path / "j.yaml", jobs))
    lines = [line for line in r.err.splitlines() if "E_STORAGE" in line]
    assert r.code == 1 and len(lines) == 1, r.err
    assert "job 'there': output: gs://my-bucket: no Google Cloud credentials" in lines[0]
    assert "(E_STORAGE: only this job would fail)" in lines[0]


def test_json_mode_prints_only_json_on_stdout(cli, media, tmp_path):
    r = cli("validate", write_manifest(tmp_path / "j.jsonl", [{"id": "a", "image": "media/face.png", "duration": 1}]),
            "--json")  # fmt: skip
    assert [json.loads(line)["id"] for line in r.out.splitlines()] == ["a"]


def test_numeric_yaml_id(cli, media, tmp_path):
    r = cli(
        "validate", write_manifest(tmp_path / "j.yaml", "- id: 42\n  image: media/face.png\n  duration: 1\n"), "--json"
    )
    assert r.code == 0 and r.json_lines()[0]["id"] == "42"


def test_yaml_values_that_are_not_text_say_to_quote_them(cli, media, tmp_path):
    text = """- {id: 2024-01-01, image: media/face.png, duration: 1}
- {id: no, image: media/face.png, duration: 1}
- {id: 1.5, image: media/face.png, duration: 1}
- {id: d, image: media/face.png, duration: 1, prompt: yes}
"""
    r = cli("validate", write_manifest(tmp_path / "j.yaml", text))
    assert r.code == EXIT_INVALID
    assert [line for line in r.err.splitlines() if line.startswith("error: j.yaml:")] == [
        "error: j.yaml:1: job '2024-01-01': id: must be a string; YAML read 2024-01-01 as a date, quote it",
        "error: j.yaml:2: job 'False': id: must be a string; YAML read a bare no/off/false as the boolean false, quote it",
        "error: j.yaml:3: job '1.5': id: must be a string; YAML read 1.5 as a number, quote it",
        "error: j.yaml:4: job 'd': prompt: must be a string; YAML read a bare yes/on/true as the boolean true, quote it",
    ], r.err


def test_lenient_spellings(cli, media, tmp_path):
    jobs = [
        {"id": "a", "mode": "audio_gen", "keyframes": [{"image": "media/face.png", "position": "First"},
                                                         {"image": "media/end.webp", "position": " LAST"}], "duration": 1},
        {"id": "b", "mode": "Lip-Sync", "image": "media/face.png", "audio": "media/voice.wav"},
        {"id": "c", "image": "media/face.png", "duration": "2.5", "keyframes": [{"image": "media/end.webp", "position": "0.5"}]},
    ]  # fmt: skip
    a, b, c = cli("validate", write_manifest(tmp_path / "j.jsonl", jobs), "--json").json_lines()
    assert a["mode"] == "audiogen" and [k["frame"] for k in a["keyframes"]] == [0, 29]
    assert b["mode"] == "lipsync"
    assert c["output_frames"] == 75 and [k["frame"] for k in c["keyframes"]] == [0, 37]
