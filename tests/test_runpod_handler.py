"""The RunPod worker through the runpod SDK's own local API server: real HTTP on loopback, the tiny model,
gcp-storage-emulator as GCS, and a loopback stand-in for RunPod's job-done webhook (progress updates)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import av
import pytest
import requests
import torch
from media import write_audio, write_image
from servers import Routes, free_port, gcs_emulator, serve

from ltx2cli.errors import Failure
from ltx2cli.jobs.limits import Limits
from ltx2cli.jobs.presets import load_presets
from ltx2cli.jobs.timeline import output_frame_count
from ltx2cli.media.probe import audio_duration
from ltx2cli.storage.fetch import FetchPolicy, InputCache, StorageError, check_public, reset_gcs_client
from ltx2cli.worker import handler as rp
from ltx2cli.worker.config import Config, key_file_from_env
from ltx2cli.worker.schema import failure_result, render_result

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "jobs"
BUCKET = "ltx2-test"
ONE_LINE = re.compile(r"^E_[A-Z]+: [^\n]+$")


# -- loopback services ----------------------------------------------------------------------------


class Media(Routes):
    routes: dict = {}
    hits: dict = {}


class Webhook(BaseHTTPRequestHandler):
    """RunPod's job-done URL, as progress_update posts to it: one JSON body per update."""

    posts: list = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        job = parse_qs(urlsplit(self.path).query).get("job", [""])[0]
        self.posts.append((job, json.loads(body)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()


@dataclass
class Services:
    media: str
    gcs: str
    webhook: str
    media_dir: Path


@dataclass
class Api:
    url: str
    process: subprocess.Popen
    log: Path
    env: dict = field(default_factory=dict)

    def post(self, route: str, payload: dict) -> dict:
        r = requests.post(self.url + route, json=payload, timeout=180)
        assert r.status_code == 200, (r.status_code, r.text, self.tail())
        return r.json()

    def runsync(self, request: dict) -> dict:
        return self.post("/runsync", {"input": request})

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _file(path: Path, content_type: str):
    return lambda h: h.send_body(path.read_bytes(), content_type)


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    d = tmp_path_factory.mktemp("rp-media")
    write_image(d / "small.png", (64, 96))
    write_image(d / "small2.png", (64, 96))
    write_audio(d / "short.wav", 0.3)
    (d / "page.png").write_text("<html>not an image</html>")
    ex = EXAMPLES / "media"
    Media.routes = {
        "/portrait.png": _file(ex / "portrait.png", "image/png"),
        "/smile.jpg": _file(ex / "smile.jpg", "image/jpeg"),
        "/turn.webp": _file(ex / "turn.webp", "image/webp"),
        "/voice.ogg": _file(ex / "voice.ogg", "audio/ogg"),
        "/small.png": _file(d / "small.png", "image/png"),
        "/small2.png": _file(d / "small2.png", "image/png"),
        "/short.wav": _file(d / "short.wav", "audio/wav"),
        "/page.png": _file(d / "page.png", "image/png"),
        "/image.wav": _file(d / "small.png", "audio/wav"),
    }
    Webhook.posts = []
    with serve(Media) as media, gcs_emulator(BUCKET) as gcs, serve(Webhook) as webhook:
        yield Services(media, gcs, webhook, d)


def _start(env: dict, log: Path) -> Api:
    port = free_port()
    cmd = [sys.executable, "-m", "ltx2cli.worker.handler", "--rp_serve_api", "--rp_api_host", "127.0.0.1"]
    with open(log, "wb") as out:
        process = subprocess.Popen([*cmd, "--rp_api_port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    return Api(f"http://127.0.0.1:{port}", process, log, env)


def _wait_up(api: Api, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert api.process.poll() is None, f"worker exited ({api.process.returncode}):\n{api.tail()}"
        try:
            if requests.get(api.url + "/docs", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"worker not up after {timeout} s:\n{api.tail()}")


def _env(services: Services, **extra: str) -> dict:
    env = {
        k: v for k, v in os.environ.items() if k not in ("GOOGLE_APPLICATION_CREDENTIALS", "LTX2_ALLOW_PRIVATE_URLS")
    }
    return env | {
        "LTX2_MODEL_DIR": "tiny",  # LTX2_CACHE_DIR (the session's, from conftest) keeps the tiny model
        "LTX2_GCS_BUCKET": BUCKET,
        "STORAGE_EMULATOR_HOST": services.gcs,
        "UVICORN_LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


@pytest.fixture(scope="module")
def workers(services, tmp_path_factory):
    """Two worker processes started together: a good one, and one whose model folder does not exist."""
    logs = tmp_path_factory.mktemp("rp-logs")
    good_env = _env(
        services, LTX2_ALLOW_PRIVATE_URLS="1", RUNPOD_WEBHOOK_POST_OUTPUT=f"{services.webhook}/done?job=$ID"
    )
    apis = {
        "good": _start(good_env, logs / "good.log"),
        "bad": _start(_env(services, LTX2_MODEL_DIR=str(logs / "no-such-model")), logs / "bad.log"),
    }
    with ExitStack() as stack:
        for api in apis.values():
            stack.callback(_stop, api.process)
        for api in apis.values():
            _wait_up(api)
        yield apis


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def api(workers) -> Api:
    return workers["good"]


# -- checking what came out -------------------------------------------------------------------------


def _download(services: Services, uri: str, dest: Path) -> Path:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(
        project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": services.gcs}
    )
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    blob = client.bucket(bucket).get_blob(name)
    assert blob is not None, f"{uri} was not uploaded"
    blob.download_to_filename(str(dest))
    return dest


def _check_output(out: dict, services: Services, tmp_path: Path, job_id: str, frames: int, size: tuple) -> None:
    keys = {"video_url", "gcs_uri", "duration", "num_frames", "fps", "width", "height", "seed", "timings"}
    assert keys <= set(out), out
    prefix = f"{BUCKET}/ugc_media/{job_id}/ltx2_videos/"
    assert out["gcs_uri"].startswith(f"gs://{prefix}") and out["gcs_uri"].endswith(".mp4")
    assert out["video_url"] == "https://storage.googleapis.com/" + out["gcs_uri"].removeprefix("gs://")
    assert (out["num_frames"], out["fps"], (out["width"], out["height"])) == (frames, 30.0, size)
    assert out["duration"] == pytest.approx(frames / 30.0, abs=1e-3)
    assert isinstance(out["seed"], int) and out["timings"]["denoise"] > 0
    mp4 = _download(services, out["gcs_uri"], tmp_path / "out.mp4")
    with av.open(str(mp4)) as c:
        v = c.streams.video[0]
        decoded = sum(1 for _ in c.decode(v))
        assert (v.codec_context.name, v.codec_context.width, v.codec_context.height) == ("h264", *size)
        assert c.streams.audio and c.streams.audio[0].codec_context.name == "aac"
    assert decoded == out["num_frames"]


def _on_loopback(request: dict, media: str) -> dict:
    """The example's relative input paths pointed at the loopback media server; nothing else changes."""
    out = dict(request)
    for key in ("image_url", "audio_url"):
        if key in out:
            out[key] = f"{media}/{Path(out[key]).name}"
    if "keyframes" in out:
        out["keyframes"] = [kf | {"image_url": f"{media}/{Path(kf['image_url']).name}"} for kf in out["keyframes"]]
    return out


def _example_requests() -> list[dict]:
    lines = (EXAMPLES / "runpod-requests.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip() and not line.startswith("#")]


# -- the four modes: the original service's example requests, unchanged but for the input URLs ---------


@pytest.mark.parametrize("example", _example_requests(), ids=lambda e: e["id"])
def test_original_example_requests_render_through_runsync(api, services, tmp_path, example):
    request = _on_loopback(example["input"], services.media)
    got = api.runsync(request)
    assert got["status"] == "COMPLETED", (got, api.tail())
    if "duration" in request:
        frames = output_frame_count(request["duration"], 30)
    else:
        frames = output_frame_count(audio_duration(EXAMPLES / "media" / "voice.ogg"), 30)
    _check_output(got["output"], services, tmp_path, got["id"], frames, (request["width"], request["height"]))


def test_a_clients_own_fields_are_ignored_with_a_warning(api, services, tmp_path):
    """Metadata the original service let pass (a user id, a trace id) renders, named in `warnings`; a near miss
    of a real field is still refused."""
    request = {"image_url": f"{services.media}/small.png", "duration": 0.3, "width": 64, "height": 96}
    got = api.runsync(request | {"user_id": 42, "trace": {"span": "a1"}})
    assert got["status"] == "COMPLETED", (got, api.tail())
    assert got["output"]["warnings"] == [
        "user_id is not a field of this API and was ignored",
        "trace is not a field of this API and was ignored",
    ]
    _check_output(got["output"], services, tmp_path, got["id"], output_frame_count(0.3, 30), (64, 96))
    got = api.runsync(request | {"promt": "a cat"})
    assert got["status"] == "FAILED" and got["error"] == "E_INPUT: promt unknown field; did you mean 'prompt'?"


def test_run_then_status_and_progress_updates(api, services, tmp_path):
    request = {"image_url": f"{services.media}/small.png", "duration": 0.3, "width": 64, "height": 96, "seed": 5}
    queued = api.post("/run", {"input": request})
    assert queued["status"] == "IN_PROGRESS" and queued["id"]
    for _ in range(100):  # the SDK's local server renders during the status call; RunPod's answers at once
        status = api.post(f"/status/{queued['id']}", {})
        if status["status"] not in ("IN_QUEUE", "IN_PROGRESS"):
            break
        time.sleep(0.5)
    assert status["status"] == "COMPLETED", (status, api.tail())
    _check_output(status["output"], services, tmp_path, queued["id"], 9, (64, 96))
    assert status["output"]["seed"] == 5

    # Each stage reached RunPod's webhook as an IN_PROGRESS update (posted from threads: allow them a moment).
    wanted = ["fetch", "prompt", "denoise", "decode", "encode", "upload"]
    for _ in range(50):
        updates = [body for job, body in Webhook.posts if job == queued["id"]]
        if {u["output"].get("stage") for u in updates} >= set(wanted):
            break
        time.sleep(0.1)
    assert all(u["status"] == "IN_PROGRESS" for u in updates)
    stages = [u["output"]["stage"] for u in updates if "step" not in u["output"]]
    assert sorted(stages) == sorted(wanted), stages  # each stage once (threads may deliver them out of order)
    steps = [u["output"] for u in updates if "step" in u["output"]]
    assert steps and steps[-1]["step"] == steps[-1]["steps"] == 8  # the fast preset's 8 steps; the last always sent


# -- broken requests: each one line with a stable code, nothing rendered --------------------------------

BROKEN = {
    "missing image": ({"duration": 1}, "E_INPUT: image_url missing"),
    "frame_position 1.4": (
        {
            "keyframes": [{"image_url": "{m}/small.png"}, {"image_url": "{m}/small2.png", "frame_position": 1.4}],
            "duration": 1,
        },
        'E_INPUT: keyframes[1].frame_position must be "first", "last" or a fraction 0..1 of the clip, got 1.4',
    ),
    "ten keyframes": (
        {"keyframes": [{"image_url": "{m}/small.png"}] * 10, "duration": 1},
        "E_INPUT: keyframes allows at most 9",
    ),
    "strength 2": (
        {"keyframes": [{"image_url": "{m}/small.png", "strength": 2}], "duration": 1},
        "E_INPUT: keyframes[0].strength must be less than or equal to 1",
    ),
    "negative duration": ({"image_url": "{m}/small.png", "duration": -1}, "E_INPUT: duration must be greater than 0"),
    "unknown preset": (
        {"image_url": "{m}/small.png", "duration": 1, "quality_preset": "turbo"},
        "E_INPUT: quality_preset unknown preset 'turbo'",
    ),
    "local path": (
        {"image_url": "/etc/passwd", "duration": 1},
        "E_INPUT: image_url must be an http(s):// or gs:// URL",
    ),
    "file url": (
        {"image_url": "file:///etc/hostname", "duration": 1},
        "E_INPUT: image_url must be an http(s):// or gs:// URL",
    ),
    "404": ({"image_url": "{m}/missing.png", "duration": 1}, "E_INPUT: image_url http://127.0.0.1"),
    "not an image": ({"image_url": "{m}/page.png", "duration": 1}, "downloaded, but"),
    "audio is an image": (
        {"image_url": "{m}/small.png", "audio_url": "{m}/image.wav"},
        "E_INPUT: audio_url http://127.0.0.1",
    ),
    "duration as text": (
        {"image_url": "{m}/small.png", "duration": "five"},
        "E_INPUT: duration must be a valid number",
    ),
    "keyframes not a list": ({"keyframes": "{m}/small.png", "duration": 1}, "E_INPUT: keyframes must be a valid list"),
    "image_url then image": (
        {"image_url": "{m}/small.png", "image": "{m}/small.png", "duration": 1},
        "E_INPUT: image given twice (as 'image' and its alias 'image_url'); keep one",
    ),
    "typo": ({"image_url": "{m}/small.png", "duration": 1, "prompt_postive": "hi"}, "did you mean 'prompt_positive'?"),
    "audio and duration": ({"image_url": "{m}/small.png", "audio_url": "{m}/short.wav", "duration": 1}, "not both"),
    "output": (
        {"image_url": "{m}/small.png", "duration": 1, "output": "/tmp/x.mp4"},
        "E_INPUT: output must be a gs://",
    ),
    "lora by path": (
        {"image_url": "{m}/small.png", "duration": 1, "loras": [{"path": "/etc/x.safetensors"}]},
        "E_INPUT: loras[0].path",
    ),
    "a local path and more": (  # the local path does not hide the rest
        {"image_url": "{m}/small.png", "duration": -1, "seed": "abc", "keyframes": [{"image_url": "x.png"}]},
        "E_INPUT: keyframes[0].image_url must be an http(s):// or gs:// URL (no local files), got 'x.png'; "
        "duration must be greater than 0, got -1; seed must be a valid integer",
    ),
}


def _fill(value, media: str):
    if isinstance(value, str):
        return value.replace("{m}", media)
    if isinstance(value, list):
        return [_fill(v, media) for v in value]
    if isinstance(value, dict):
        return {k: _fill(v, media) for k, v in value.items()}
    return value


@pytest.mark.parametrize("name", BROKEN)
def test_broken_request_fails_with_one_coded_line(api, services, name):
    request, expected = BROKEN[name]
    got = api.runsync(_fill(request, services.media))
    assert got["status"] == "FAILED" and "output" not in got, got
    error = got["error"]
    assert isinstance(error, str) and ONE_LINE.match(error) and "Traceback" not in error, error
    assert expected in error, error


def test_worker_without_models_fails_every_request_and_stays_up(workers, services):
    bad = workers["bad"]
    request = {"image_url": f"{services.media}/small.png", "duration": 0.3}
    for _ in range(2):
        got = bad.runsync(request)
        assert got["status"] == "FAILED" and got["error"].startswith("E_MODEL: model not found"), got
        assert ONE_LINE.match(got["error"])
    assert bad.process.poll() is None
    assert requests.get(bad.url + "/docs", timeout=5).status_code == 200


# -- the URL policy: direct handler calls and the fetcher itself -------------------------------------


def _strict_worker(**env: str) -> rp.Worker:
    """A worker as configured from this environment (no LTX2_ALLOW_PRIVATE_URLS), without models: every request
    here must fail in planning, before any model work."""
    config = Config.from_env({"LTX2_GCS_BUCKET": BUCKET, **env})
    return rp.Worker(config, renderer=None, presets=load_presets()[0])


@pytest.fixture(autouse=True)
def _emulated_storage(services, monkeypatch):
    """In-process workers upload to the emulator (a request is planned only where its output can be delivered)."""
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", services.gcs)
    reset_gcs_client()
    yield
    reset_gcs_client()


def test_a_missing_bucket_is_answered_before_any_render(services):
    """Every request would render and then fail its upload: the worker asks the bucket first (until it answers)."""
    worker = _strict_worker(LTX2_ALLOW_PRIVATE_URLS="1", LTX2_GCS_BUCKET="no-such-bucket")
    request = {"image_url": f"{services.media}/small.png", "duration": 0.3}
    for _ in range(2):  # asked again: the bucket may have been made since
        got = worker.handle({"id": "nb", "input": request})
        assert got == {"error": "E_STORAGE: gs://no-such-bucket: bucket not found (create it, or check "
                       "'no-such-bucket' is spelled right)"}, got  # fmt: skip
        assert not worker.bucket_seen


def test_loopback_inputs_refused_without_allow_private(services):
    Media.hits = {}
    worker = _strict_worker()
    got = worker.handle({"id": "strict", "input": {"image_url": f"{services.media}/small.png", "duration": 1}})
    assert set(got) == {"error"} and ONE_LINE.match(got["error"]), got
    assert got["error"].startswith("E_INPUT: image_url http://127.0.0.1:") and "refused" in got["error"]
    assert Media.hits == {}  # refused before connecting
    host = urlsplit(services.media).hostname
    allowed = _strict_worker(LTX2_ALLOWED_HOSTS=f"example.org, {host}")
    assert allowed.config.policy.allowed_hosts == {"example.org", host}


# -- what one request may cost: refused before model work, and before fetching when the request says -----------

OVER_LIMITS = {  # name: (request, worker environment, error, whether an input is fetched first)
    "duration": (
        {"duration": 90},
        {},
        "E_INPUT: duration 90 s is over this worker's limit of 20 s (LTX2_MAX_DURATION)",
        False,
    ),
    "duration under a raised max_duration": (
        {"duration": 30, "max_duration": 60},
        {"LTX2_MAX_DURATION": "25"},
        "E_INPUT: duration 30 s is over this worker's limit of 25 s (LTX2_MAX_DURATION)",
        False,
    ),
    "width and height": (
        {"duration": 1, "width": 2048, "height": 2048},
        {},
        "E_INPUT: size 2048x2048 (4194304 pixels) is over this worker's limit of 2088960 pixels (LTX2_MAX_PIXELS)",
        False,
    ),
    "resolution": (
        {"duration": 1, "resolution": "1024x1024"},
        {"LTX2_MAX_PIXELS": "500000"},
        "E_INPUT: size 1024x1024 (1048576 pixels) is over this worker's limit of 500000 pixels (LTX2_MAX_PIXELS)",
        False,
    ),
    "steps": (
        {"duration": 1, "steps": 150},
        {},
        "E_INPUT: steps 150 is over this worker's limit of 100 (LTX2_MAX_STEPS)",
        False,
    ),
    "the audio's length": (
        {"audio_url": "{m}/short.wav"},
        {"LTX2_MAX_DURATION": "0.2"},
        "E_INPUT: audio_url is 0.30 s long, over this worker's limit of 0.2 s (LTX2_MAX_DURATION)",
        True,
    ),
    "a size from the image": (
        {"duration": 1},
        {"LTX2_MAX_PIXELS": "100000"},
        "E_INPUT: size 512x768 (393216 pixels) is over this worker's limit of 100000 pixels (LTX2_MAX_PIXELS)",
        True,
    ),
    "the preset's steps": (
        {"duration": 1, "quality_preset": "quality"},
        {"LTX2_MAX_STEPS": "30"},
        "E_INPUT: steps 40 is over this worker's limit of 30 (LTX2_MAX_STEPS)",
        True,
    ),
}


@pytest.mark.parametrize("name", OVER_LIMITS)
def test_a_request_over_a_limit_is_refused_before_any_model_work(services, monkeypatch, name):
    from ltx2cli.batch import stages

    request, env, expected, fetched = OVER_LIMITS[name]
    rendered = []
    monkeypatch.setattr(stages, "render_job", lambda *args, **kwargs: rendered.append(args))
    Media.hits = {}
    worker = _strict_worker(LTX2_ALLOW_PRIVATE_URLS="1", **env)
    got = worker.handle({"id": "big", "input": _fill({"image_url": "{m}/small.png", **request}, services.media)})
    assert set(got) == {"error"} and ONE_LINE.match(got["error"]), got
    assert expected in got["error"], got["error"]
    assert rendered == [] and bool(Media.hits) is fetched  # the request's own fields: refused before fetching


def test_limits_come_from_the_environment():
    config = Config.from_env({"LTX2_MAX_DURATION": "60", "LTX2_MAX_PIXELS": "2000000", "LTX2_MAX_STEPS": " 50 "})
    assert config.limits == Limits(duration=60.0, pixels=2_000_000, steps=50) and config.unreadable is None
    assert Config.from_env({}).limits == Limits(duration=20.0, pixels=1920 * 1088, steps=100)
    for var, value, words in [
        ("LTX2_MAX_STEPS", "abc", "positive whole number"),
        ("LTX2_MAX_PIXELS", "1.5e6", "positive whole number"),
        ("LTX2_MAX_DURATION", "nan", "positive number"),
        ("LTX2_MAX_DURATION", "-5", "positive number"),
        ("LTX2_PLAN_SECONDS", "ten", "positive number"),
    ]:
        worker = rp.Worker.start(Config.from_env({"LTX2_GCS_BUCKET": BUCKET, "LTX2_MODEL_DIR": "tiny", var: value}))
        assert worker.renderer is None, "models were loaded for a worker that cannot take requests"
        assert worker.broken == f"E_INTERNAL: {var}={value!r} must be a {words}"
    worker = rp.Worker.start(Config.from_env({"LTX2_GCS_BUCKET": BUCKET, "LTX2_MODEL_DIR": "tiny", "LTX2_VRAM": "4"}))
    assert worker.renderer is None and worker.broken.startswith("E_INTERNAL: LTX2_VRAM must be auto or a GPU size")
    assert Config.from_env({"LTX2_VRAM": "24GB", "LTX2_PLAN_SECONDS": "20"}).unreadable is None


def test_input_must_be_an_object():
    got = _strict_worker().handle({"id": "x", "input": "a cat"})
    assert got == {"error": "E_INPUT: input must be a JSON object of job fields, got str"}


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/a.png",
        "http://127.1:8080/a.png",
        "http://10.1.2.3/a.png",
        "http://192.168.0.10/a.png",
        "http://172.16.5.4/a.png",
        "http://100.64.0.1/a.png",  # carrier-grade NAT
        "http://169.254.169.254/computeMetadata/v1/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://0.0.0.0/a.png",
        "http://[::1]/a.png",
        "http://[::ffff:127.0.0.1]/a.png",
        "http://[fe80::1]/a.png",
        "http://[fd00::1]/a.png",
        "http://224.0.0.1/a.png",
        "https://localhost/a.png",  # a name that resolves to loopback
    ],
)
def test_private_hosts_are_refused(url):
    with pytest.raises(StorageError, match="refused"):
        check_public(url)


@pytest.mark.parametrize("url", ["https://8.8.8.8/a.png", "http://[2606:4700:4700::1111]/a.png"])
def test_public_addresses_pass(url):
    check_public(url)  # literal addresses: no DNS lookup, no connection


@pytest.fixture
def redirects(services):
    port = urlsplit(services.media).port
    Media.routes = Media.routes | {
        "/to-localhost.png": _redirect(f"http://localhost:{port}/small.png"),
        "/to-metadata": _redirect("http://169.254.169.254/computeMetadata/v1/"),
        "/to-self.png": _redirect("/small.png"),
    }
    return services.media


def _redirect(location: str):
    def route(h):
        h.send_response(302)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return route


def test_every_redirect_hop_is_checked(redirects, tmp_path):
    """127.0.0.1 is exempted by name, so the first hop is fetched; a redirect to another private host is not."""
    strict = InputCache(tmp_path / "c", FetchPolicy(allow_private=False, allowed_hosts=frozenset({"127.0.0.1"})))
    assert strict.get(f"{redirects}/to-self.png", "image").stat().st_size > 0
    for route, target in (("/to-localhost.png", "localhost"), ("/to-metadata", "169.254.169.254")):
        Media.hits = {}
        with pytest.raises(StorageError, match=f"refused: {re.escape(target)} is a private address"):
            strict.get(f"{redirects}{route}", "image")
        assert Media.hits == {route: 1}  # the redirect was read, its target never requested
    permissive = InputCache(tmp_path / "p", FetchPolicy())  # the CLI's default: follows it
    assert permissive.get(f"{redirects}/to-localhost.png", "image").stat().st_size > 0


# -- small pieces -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "refresh"),
    [
        ("E_INTERNAL", "unexpected AcceleratorError: CUDA error: an illegal memory access was encountered", True),
        ("E_INTERNAL", "unexpected RuntimeError: CUDA error: device-side assert triggered\nCompile with ...", True),
        ("E_INTERNAL", "unexpected RuntimeError: cudaErrorIllegalAddress", True),
        ("E_OOM", "out of GPU memory; try a smaller resolution or duration, or the fast preset", False),
        ("E_INTERNAL", "unexpected RuntimeError: CUDA error: out of memory", False),
        ("E_STORAGE", "gs://b/x.mp4: upload failed (ServiceUnavailable)", False),
    ],
)
def test_cuda_errors_that_poison_the_context_refresh_the_worker(code, message, refresh):
    got = failure_result(Failure(code, message))  # as a job's failure arrives: the CLI's --debug hint is not in it
    assert ONE_LINE.match(got["error"]) and got["error"].startswith(code + ": ") and "--debug" not in got["error"]
    assert got.get("refresh_worker", False) is refresh


def test_configuration_problems_are_reported_without_loading_models():
    assert rp.Worker.start(Config.from_env({"LTX2_MODEL_DIR": "tiny"})).broken.startswith(
        "E_STORAGE: LTX2_GCS_BUCKET is not set"
    )
    bad_bucket = Config.from_env({"LTX2_GCS_BUCKET": "b"})  # too short for a bucket name
    assert rp.Worker.start(bad_bucket).broken.startswith("E_STORAGE: LTX2_GCS_BUCKET='b': invalid bucket name")
    bad_prefix = Config.from_env({"LTX2_GCS_BUCKET": BUCKET, "LTX2_GCS_PREFIX": "v/{user}/"})
    assert "E_STORAGE: LTX2_GCS_PREFIX" in rp.Worker.start(bad_prefix).broken
    config = Config.from_env({"LTX2_GCS_BUCKET": BUCKET})
    assert (config.model_dir, config.policy.allow_private, config.allow_cpu) == ("/runpod-volume/ltx2", False, False)
    assert config.output("abc") == f"gs://{BUCKET}/ugc_media/abc/ltx2_videos/"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the worker on a machine without a GPU")
def test_real_weights_without_a_gpu_are_refused_before_loading():
    from ltx2cli.synthetic.tiny import tiny_model_dir

    folder = str(tiny_model_dir())  # a real model folder given by path, as the volume's would be
    worker = rp.Worker.start(Config.from_env({"LTX2_GCS_BUCKET": BUCKET, "LTX2_MODEL_DIR": folder}))
    assert worker.renderer is None and worker.broken.startswith("E_MODEL: no CUDA GPU visible to torch")
    got = worker.handle({"id": "x", "input": {"image_url": "https://example.org/a.png", "duration": 1}})
    assert got == {"error": worker.broken}


def test_service_account_key_from_a_secret_variable():
    env = {"GOOGLE_APPLICATION_CREDENTIALS_JSON": '{"type": "service_account"}'}
    assert key_file_from_env(env) is None
    key = Path(env["GOOGLE_APPLICATION_CREDENTIALS"])
    assert json.loads(key.read_text()) == {"type": "service_account"} and key.stat().st_mode & 0o777 == 0o600
    key.unlink()
    assert key_file_from_env({"GOOGLE_APPLICATION_CREDENTIALS_JSON": "{oops"}).startswith("E_STORAGE: ")
    given = {"GOOGLE_APPLICATION_CREDENTIALS_JSON": "{}", "GOOGLE_APPLICATION_CREDENTIALS": "/keys/k.json"}
    assert key_file_from_env(given) is None and given["GOOGLE_APPLICATION_CREDENTIALS"] == "/keys/k.json"


def test_a_volume_lora_made_for_another_model_is_refused_before_rendering(services, tmp_path):
    """The original service shipped an LTX-Video 2B LoRA beside LTX-2: a request naming it fails at once."""
    import shutil

    from single_file_names import write_sparse_safetensors

    from ltx2cli.synthetic.tiny import tiny_model_dir

    model = tmp_path / "volume"
    shutil.copytree(tiny_model_dir(), model)
    camera = model / "loras" / "ltx-2-19b-lora-camera-control-dolly-in.safetensors"
    tensors = {}
    for b in range(28):  # LTX-Video 0.9.x 2B: 28 blocks, 2048 wide
        tensors[f"diffusion_model.transformer_blocks.{b}.attn1.to_q.lora_A.weight"] = ("BF16", (16, 2048))
        tensors[f"diffusion_model.transformer_blocks.{b}.attn1.to_q.lora_B.weight"] = ("BF16", (2048, 16))
    write_sparse_safetensors(camera, tensors, {})
    env = {"LTX2_GCS_BUCKET": BUCKET, "LTX2_MODEL_DIR": str(model), "LTX2_ALLOW_PRIVATE_URLS": "1"}
    worker = rp.Worker(Config.from_env(env), renderer=None, presets=load_presets()[0])
    request = {"image_url": f"{services.media}/small.png", "duration": 0.3, "lora_camera": 0.8}
    got = worker.handle({"id": "camera", "input": request})
    assert set(got) == {"error"} and ONE_LINE.match(got["error"]), got
    assert got["error"].startswith("E_MODEL: LoRA ltx-2-19b-lora-camera-control-dolly-in.safetensors was made for")
    assert "LTX-Video 0.9.x 2B (28 blocks, 2048 wide)" in got["error"]


def test_a_request_longer_than_a_window_is_planned_in_windows(services, tmp_path):
    """With LTX2_MAX_DURATION raised, a 25-s request renders as 3 windows and its answer says so."""
    from ltx2cli.storage.fetch import InputCache

    worker = _strict_worker(LTX2_ALLOW_PRIVATE_URLS="1", LTX2_MAX_DURATION="30")
    request = {"image_url": f"{services.media}/small.png", "duration": 25}
    spec, error = worker.plan({"id": "long", "input": request}, InputCache(tmp_path / "in", worker.config.policy))
    assert error == "" and spec.window is not None and spec.window.count == 3
    assert render_result(spec, {"uri": f"gs://{BUCKET}/long.mp4", "url": "https://x"}, {})["windows"] == 3


def test_the_first_answer_reports_the_workers_cold_start(services):
    """A RunPod cold start is the worker's own start (models loaded, attention kernel chosen) plus its first
    request, whose first steps compile where compiling is on: the first answer carries the former."""
    env = {"LTX2_GCS_BUCKET": BUCKET, "LTX2_MODEL_DIR": "tiny", "LTX2_ALLOW_PRIVATE_URLS": "1", "LTX2_COMPILE": "off"}
    worker = rp.Worker.start(Config.from_env(env))
    assert worker.broken is None and worker.cold_start_s > 0
    request = {"image_url": f"{services.media}/small.png", "duration": 0.3, "width": 64, "height": 96}
    first = worker.handle({"id": "c1", "input": request})
    second = worker.handle({"id": "c2", "input": request})
    assert first["timings"]["cold_start"] > 0 and "cold_start" not in second["timings"], (first, second)
    assert first["timings"]["total"] > 0 and second["timings"]["total"] > 0
