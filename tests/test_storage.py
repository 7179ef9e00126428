"""Inputs from URLs and gs://, outputs to gs://, against real servers on loopback."""

import os

import pytest
from media import write_audio, write_image
from servers import Routes, flaky_proxy, serve, slow

from ltx2cli.errors import MediaError
from ltx2cli.storage import fetch as storage
from ltx2cli.storage.fetch import FetchPolicy, InputCache, StorageError, redact
from ltx2cli.storage.sinks import upload


@pytest.fixture
def files(tmp_path):
    return {
        "png": write_image(tmp_path / "face.png", (64, 48)).read_bytes(),
        "wav": write_audio(tmp_path / "voice.wav", 0.5).read_bytes(),
    }


@pytest.fixture
def http(files):
    def redirect(h):
        h.send_response(302)
        h.send_header("Location", "/face.png")
        h.end_headers()

    def flaky(h):
        if Routes.hits["/flaky.png"] <= 2:
            h.send_error(503, "Busy")
        else:
            h.send_body(files["png"], "image/png")

    Routes.hits = {}
    Routes.routes = {
        "/face.png": lambda h: h.send_body(files["png"], "image/png"),
        "/voice.wav": lambda h: h.send_body(files["wav"], "audio/wav"),
        "/renamed.jpg": lambda h: h.send_body(files["png"], "image/jpeg"),  # content decides, not the name
        "/page.png": lambda h: h.send_body(b"<html>sorry</html>", "text/html"),
        "/huge.png": lambda h: h.send_body(b"x" * 2048, "image/png"),
        "/unsized.png": lambda h: h.send_body(b"x" * 4096, "image/png", length=-1),
        "/slow.png": slow(2.0),
        "/moved.png": redirect,
        "/flaky.png": flaky,
        "/down.png": lambda h: h.send_error(503, "Down"),
    }
    with serve(Routes) as url:
        yield url


def cache(tmp_path, name="cache", **policy) -> InputCache:
    return InputCache(tmp_path / name, FetchPolicy(**{"read_timeout": 5, "backoff": 0.01, **policy}))


def test_fetch_success_redirect_and_once_per_url(http, tmp_path, files):
    c = cache(tmp_path)
    a = c.get(f"{http}/face.png", "image")
    assert a.read_bytes() == files["png"]
    assert c.get(f"{http}/face.png", "image") == a and Routes.hits["/face.png"] == 1
    assert c.get(f"{http}/moved.png", "image").read_bytes() == files["png"]
    assert c.get(f"{http}/renamed.jpg", "image").read_bytes() == files["png"]
    assert c.get(f"{http}/voice.wav", "audio").read_bytes() == files["wav"]
    assert not list((tmp_path / "cache").glob("*.part"))


@pytest.mark.parametrize(
    "path, kind, policy, error, words",
    [
        ("/missing.png", "image", {}, StorageError, "HTTP 404"),
        ("/slow.png", "image", {"read_timeout": 0.5}, StorageError, "timed out"),
        ("/huge.png", "image", {"max_bytes": 1024}, StorageError, "cap"),
        ("/unsized.png", "image", {"max_bytes": 1024}, StorageError, "cap"),
        ("/page.png", "image", {}, MediaError, "not an image"),
        ("/face.png", "audio", {}, MediaError, "audio"),
        ("/down.png", "image", {"retries": 2}, StorageError, "after 2 retries"),
    ],
)
def test_fetch_errors_are_clear(http, tmp_path, path, kind, policy, error, words):
    with pytest.raises(error, match=words) as exc:
        cache(tmp_path, **policy).get(f"{http}{path}?token=SECRET", kind)
    assert "SECRET" not in str(exc.value)  # query strings (signatures) never reach a message
    assert not list((tmp_path / "cache").glob("*")) if (tmp_path / "cache").exists() else True


def test_fetch_retries_5xx(http, tmp_path, files):
    assert cache(tmp_path, retries=3).get(f"{http}/flaky.png", "image").read_bytes() == files["png"]
    assert Routes.hits["/flaky.png"] == 3


def test_unreachable_host(tmp_path):
    with pytest.raises(StorageError, match="cannot connect"):
        cache(tmp_path, retries=0, connect_timeout=1).get("http://127.0.0.1:9/x.png", "image")


def test_redact():
    assert redact("https://user:pw@host:8443/a/b.png?X-Goog-Signature=abc") == "https://host:8443/a/b.png?…"


@pytest.mark.parametrize("size", [1024, 9 * 1024 * 1024 + 7])  # one request, and chunked (resumable)
def test_upload_and_read_back(gcs, tmp_path, size):
    local = tmp_path / "clip.mp4"
    local.write_bytes(os.urandom(size))
    done = upload(local, "gs://ltx2-test/ugc_media/job-1/ltx2_videos/clip.mp4", public=False)
    assert (done.size, done.url) == (size, None) and done.md5 and done.crc32c
    blob = storage.gcs_client().bucket("ltx2-test").get_blob("ugc_media/job-1/ltx2_videos/clip.mp4")
    assert blob.content_type == "video/mp4"
    assert blob.download_as_bytes() == local.read_bytes()
    assert local.exists()  # the local copy is kept


def test_upload_public_url(gcs, tmp_path):
    local = tmp_path / "a b.mp4"
    local.write_bytes(b"x")
    done = upload(local, "gs://ltx2-test/out/a b.mp4", public=True)
    assert done.url == "https://storage.googleapis.com/ltx2-test/out/a%20b.mp4"


def test_upload_to_missing_bucket(gcs, tmp_path):
    local = tmp_path / "clip.mp4"
    local.write_bytes(b"x")
    with pytest.raises(StorageError, match="does bucket 'no-such-bucket' exist"):
        upload(local, "gs://no-such-bucket/clip.mp4", public=False)


def test_upload_retries_transient_errors(gcs, tmp_path, monkeypatch):
    local = tmp_path / "clip.mp4"
    local.write_bytes(os.urandom(4096))
    with flaky_proxy(gcs, fail_first=2) as (proxy, state):
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy)
        storage.reset_gcs_client()
        done = upload(local, "gs://ltx2-test/retry/clip.mp4", public=False)
    assert state["seen"] >= 3 and done.size == 4096


def test_fetch_from_gcs(gcs, tmp_path, files):
    bucket = storage.gcs_client().bucket("ltx2-test")
    bucket.blob("in/face.png").upload_from_string(files["png"])
    bucket.blob("in/notes.txt").upload_from_string(b"hello")
    c = cache(tmp_path)
    assert c.get("gs://ltx2-test/in/face.png", "image").read_bytes() == files["png"]
    with pytest.raises(StorageError, match="not found"):
        c.get("gs://ltx2-test/in/nope.png", "image")
    with pytest.raises(MediaError, match="not an image"):
        c.get("gs://ltx2-test/in/notes.txt", "image")
    with pytest.raises(StorageError, match="cap"):
        cache(tmp_path, "small", max_bytes=10).get("gs://ltx2-test/in/face.png", "image")
