"""`ltx2 validate` with URL and gs:// inputs: fetched once into the cache, then probed like local files."""

import threading
import time

import pytest
from conftest import write_manifest
from media import write_non_finite_wav, write_truncated_jpeg
from servers import Routes, serve

from ltx2cli.errors import EXIT_FAILED, EXIT_INVALID
from ltx2cli.storage import fetch as storage

SPEC_SOURCES = ("source", "output", "audio")  # where a remote and a local plan may differ


@pytest.fixture
def http(media):
    """A loopback file server for the `media` folder (plus a few bad answers); Routes.hits counts requests."""
    write_non_finite_wav(media / "nan.wav")
    write_truncated_jpeg(media / "cut.jpg")

    def file(name: str, content_type: str = "application/octet-stream"):
        return lambda h: h.send_body((media / name).read_bytes(), content_type)

    Routes.hits = {}
    Routes.routes = {
        "/face.png": file("face.png", "image/png"),
        "/tall.jpg": file("tall.jpg", "image/jpeg"),
        "/end.webp": file("end.webp", "image/webp"),
        "/voice.wav": file("voice.wav", "audio/wav"),
        "/long.wav": file("long.wav", "audio/wav"),
        "/not-audio.wav": file("face.png", "audio/wav"),  # content decides, not the name or the header
        "/nan.wav": file("nan.wav", "audio/wav"),
        "/cut.jpg": file("cut.jpg", "image/jpeg"),
        "/noise.mp3": lambda h: h.send_body(bytes(range(256)) * 64, "audio/mpeg"),
        "/big.wav": lambda h: h.send_body(b"\0" * (2 * storage.MB), "audio/wav"),
    }
    with serve(Routes) as url:
        yield url


@pytest.fixture
def validate(cli, tmp_path):
    """`ltx2 validate MANIFEST --json` with a cache under tmp_path."""

    def run(manifest, *args: str):
        return cli("validate", manifest, "--json", "--cache-dir", str(tmp_path / "cache"), *args)

    return run


def _strip_sources(spec: dict) -> dict:
    spec = {k: v for k, v in spec.items() if k not in SPEC_SOURCES}
    spec["keyframes"] = [{k: v for k, v in kf.items() if k != "image"} for kf in spec["keyframes"]]
    return spec


def test_remote_inputs_are_planned_like_local_ones(validate, http, media, tmp_path):
    def jobs(at: str) -> list[dict]:
        return [
            {"id": "talk", "image": f"{at}/face.png", "audio": f"{at}/voice.wav"},
            {"id": "tall", "image": f"{at}/tall.jpg", "duration": 1},
            {
                "id": "keys",
                "keyframes": [
                    {"image": f"{at}/face.png"},
                    {"image": f"{at}/end.webp", "position": 0.5},
                    {"image": f"{at}/tall.jpg", "position": "last", "strength": 0.6},
                ],
                "audio": f"{at}/voice.wav",
            },
        ]

    remote = validate(write_manifest(tmp_path / "remote.jsonl", jobs(http)))
    local = validate(write_manifest(tmp_path / "local.jsonl", jobs(str(media))))
    assert remote.code == 0 and local.code == 0, remote.err + local.err
    talk, tall, keys = remote.json_lines()
    assert (talk["duration"], talk["output_frames"], talk["num_frames"]) == (2.0, 60, 65)
    assert (talk["width"], talk["height"]) == (768, 512)  # 96x64 at the fast preset's area
    assert tall["width"] < tall["height"]
    assert [k["frame"] for k in keys["keyframes"]] == [0, 30, 59]
    # The spec keeps the URLs (the renderer fetches them again, from the cache) ...
    assert (talk["keyframes"][0]["image"], talk["audio"]) == (f"{http}/face.png", f"{http}/voice.wav")
    assert [k["image"] for k in keys["keyframes"]] == [f"{http}/{n}" for n in ("face.png", "end.webp", "tall.jpg")]
    # ... and everything else is exactly what the same files give locally.
    assert [_strip_sources(s) for s in remote.json_lines()] == [_strip_sources(s) for s in local.json_lines()]


def test_a_shared_url_is_fetched_once(validate, http, tmp_path):
    shared = [{"id": f"j{i}", "image": f"{http}/face.png", "audio": f"{http}/voice.wav"} for i in range(3)]
    m = write_manifest(tmp_path / "jobs.jsonl", shared)
    r = validate(m)
    assert r.code == 0, r.err
    assert {j["num_frames"] for j in r.json_lines()} == {65}
    assert Routes.hits == {"/face.png": 1, "/voice.wav": 1}
    assert validate(m).code == 0 and Routes.hits == {"/face.png": 1, "/voice.wav": 1}  # the cache outlives a run


def test_distinct_urls_are_fetched_concurrently(validate, media, tmp_path):
    state = {"now": 0, "peak": 0}
    lock = threading.Lock()
    png = (media / "face.png").read_bytes()

    def slow_png(h):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.3)
        with lock:
            state["now"] -= 1
        h.send_body(png, "image/png")

    Routes.hits = {}
    Routes.routes = {f"/{i}.png": slow_png for i in range(6)}
    with serve(Routes) as url:
        jobs = [{"id": f"j{i}", "image": f"{url}/{i}.png", "duration": 1} for i in range(6)]
        r = validate(write_manifest(tmp_path / "jobs.jsonl", jobs))
    assert r.code == 0, r.err
    assert len(Routes.hits) == 6 and state["peak"] > 1


@pytest.mark.parametrize(
    "job, field, path, words",
    [
        ({"image": "{url}/missing.png?token=SECRET", "duration": 1}, "image", "/missing.png?…", "HTTP 404"),
        ({"image": "{url}/face.png", "audio": "{url}/not-audio.wav"}, "audio", "/not-audio.wav", "no audio stream"),
        ({"image": "{url}/face.png", "audio": "{url}/noise.mp3"}, "audio", "/noise.mp3", "not audio"),
        ({"image": "{url}/face.png", "audio": "{url}/nan.wav"}, "audio", "/nan.wav", "contains NaN or infinite samples"),
        ({"keyframes": [{"image": "{url}/face.png"}, {"image": "{url}/cut.jpg"}], "duration": 1},
         "keyframes[1].image", "/cut.jpg", "damaged or truncated"),
        ({"keyframes": [{"image": "{url}/face.png"}, {"image": "{url}/gone.jpg"}], "duration": 1},
         "keyframes[1].image", "/gone.jpg", "HTTP 404"),
        ({"image": "{url}/face.png", "audio": "{url}/long.wav", "max_duration": 20}, "audio", None,
         "over max_duration (20 s)"),
        ({"image": "{url}/face.png", "audio": "{url}/big.wav"}, "audio", "/big.wav", "over the 1 MB cap"),
    ],
)  # fmt: skip
def test_fetch_failures_are_one_line_problems(validate, http, tmp_path, job, field, path, words):
    """A remote input that cannot be had is the world's problem: a batch would fail that job alone and render the
    other (validate exits 1, as the batch would); with --strict it stops everything (exit 2)."""
    job = {"id": "bad", **{k: _fill(v, http) for k, v in job.items()}}
    ok = {"id": "good", "image": f"{http}/face.png", "duration": 1}
    manifest = write_manifest(tmp_path / "jobs.jsonl", [ok, job])
    for strict in (False, True):
        r = validate(manifest, "--max-input-mb", "1", *(["--strict"] if strict else []))
        assert r.code == (EXIT_INVALID if strict else EXIT_FAILED), r.err
        (line,) = [x for x in r.err.splitlines() if x.startswith("error: jobs.jsonl:2:")]
        assert line.startswith(f"error: jobs.jsonl:2: job 'bad': {field}: "), line
        assert words in line and (path is None or f"{http}{path}" in line), line
        assert line.endswith("(E_INPUT: only this job would fail)") is not strict, line
        assert "SECRET" not in r.err and "Traceback" not in r.err and "good" not in r.err
        assert [spec["id"] for spec in r.json_lines()] == ["good"]
        assert ("nothing was rendered" in r.err) is strict
        assert ("would fail them and render the other 1 (exit 1" in r.err) is not strict


def test_validate_says_which_problems_stop_the_batch(validate, http, tmp_path):
    jobs = [
        {"id": "good", "image": f"{http}/face.png", "duration": 1},
        {"id": "dead", "image": f"{http}/missing.png", "duration": 1},
        {"id": "typo", "image": f"{http}/face.png", "duration": 1, "promt": "hi"},
    ]
    r = validate(write_manifest(tmp_path / "jobs.jsonl", jobs))
    assert r.code == EXIT_INVALID  # the manifest's own problem stops the batch, whatever else
    errors = [x for x in r.err.splitlines() if x.startswith("error: jobs.jsonl:")]
    assert errors == [
        f"error: jobs.jsonl:2: job 'dead': image: {http}/missing.png: HTTP 404 Not Found (E_INPUT: only this job would fail)",
        "error: jobs.jsonl:3: job 'typo': promt: unknown field; did you mean 'prompt'?",
    ]
    assert [spec["id"] for spec in r.json_lines()] == ["good"]


def _fill(value, url: str):
    if isinstance(value, str):
        return value.replace("{url}", url)
    if isinstance(value, list):
        return [{k: _fill(v, url) for k, v in item.items()} for item in value]
    return value


def test_no_fetch_keeps_remote_facts_unknown(validate, http, tmp_path):
    m = write_manifest(tmp_path / "jobs.jsonl", [{"id": "a", "image": f"{http}/face.png", "audio": f"{http}/x.wav"}])
    r = validate(m, "--no-fetch")
    assert r.code == 0, r.err
    (job,) = r.json_lines()
    assert (job["duration"], job["num_frames"], job["width"], job["height"]) == (None, None, None, None)
    assert Routes.hits == {} and not (tmp_path / "cache").exists()


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("LTX2_CACHE_DIR", str(tmp_path / "c"))
    cache = storage.default_input_cache(max_mb=5)
    assert (cache.dir, cache.policy.max_bytes) == (tmp_path / "c" / "inputs", 5 * storage.MB)
    monkeypatch.delenv("LTX2_CACHE_DIR")
    assert storage.default_cache_dir() == storage.Path.home() / ".cache" / "ltx2" / "inputs"


def test_gs_inputs(validate, gcs, media, tmp_path):
    bucket = storage.gcs_client().bucket("ltx2-test")
    for name in ("face.png", "voice.wav"):
        bucket.blob(f"in/{name}").upload_from_filename(str(media / name))
    jobs = [
        {"id": "talk", "image": "gs://ltx2-test/in/face.png", "audio": "gs://ltx2-test/in/voice.wav"},
        {"id": "gone", "image": "gs://ltx2-test/in/nope.png", "duration": 1},
    ]
    r = validate(write_manifest(tmp_path / "jobs.jsonl", jobs))
    assert r.code == EXIT_FAILED  # a missing object fails its own job (E_STORAGE: the bucket's answer)
    assert "jobs.jsonl:2: job 'gone': image: gs://ltx2-test/in/nope.png: not found (E_STORAGE: " in r.err, r.err
    r = validate(write_manifest(tmp_path / "ok.jsonl", jobs[:1]))
    assert r.code == 0, r.err
    (talk,) = r.json_lines()
    assert (talk["output_frames"], talk["width"], talk["audio"]) == (60, 768, "gs://ltx2-test/in/voice.wav")
