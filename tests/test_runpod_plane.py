"""ltx2's real RunPod worker, two processes under the runpod SDK's own serverless loop, taking jobs from a loopback
stand-in for RunPod's control plane (tests/runpod_plane.py), with inputs and outputs on the GCS emulator. Clients
speak plain HTTP to RunPod's /v2/{endpoint_id}/ API, as any client would."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import pytest
import requests
from runpod_plane import ControlPlane, start_workers
from servers import Routes, gcs_emulator, serve

from ltx2cli.jobs.timeline import output_frame_count
from ltx2cli.media.probe import audio_duration

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples" / "jobs"
BUCKET = "ltx2-test"
FINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT")
SMALL = {"image_url": f"gs://{BUCKET}/media/portrait.png", "duration": 0.3, "width": 64, "height": 64}


class Held(Routes):
    """Loopback media whose /held.png is answered only once a test opens the gate: a job fetching it stays
    IN_PROGRESS, in its fetch stage, for as long as the test needs."""

    routes: dict = {}
    hits: dict = {}
    gate = threading.Event()


def _held(h) -> None:
    Held.gate.wait(30)
    h.send_body((EXAMPLES / "media" / "portrait.png").read_bytes(), "image/png")


@dataclass
class Endpoint:
    """A client's view of the endpoint (plain `requests`), with the plane and the bucket beside it."""

    plane: ControlPlane
    storage: Any  # google.cloud.storage.Client on the emulator
    workers: list
    held: str  # an image URL answered once Held.gate opens

    @property
    def base(self) -> str:
        return f"{self.plane.url}/{self.plane.endpoint_id}"

    def call(self, method: str, route: str, body: Any = None, key: str | None = None) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.plane.api_key if key is None else key}"}
        return requests.request(method, f"{self.base}/{route}", json=body, headers=headers, timeout=10)

    def run(self, request: dict, **extra: Any) -> str:
        r = self.call("POST", "run", {"input": request, **extra})
        assert r.status_code == 200 and r.json()["status"] == "IN_QUEUE", r.text
        return r.json()["id"]

    def status(self, job_id: str) -> dict:
        r = self.call("GET", f"status/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, job_id: str, until: tuple = FINAL, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while (got := self.status(job_id))["status"] not in until:
            assert time.monotonic() < deadline, (got, self.logs())
            time.sleep(0.1)
        return got

    def logs(self) -> str:
        return "\n".join(f"--- {w.id}\n{w.tail(1500)}" for w in self.workers)


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    Held.routes = {"/held.png": _held}
    with gcs_emulator(BUCKET) as gcs, serve(Held) as media, ControlPlane() as plane:
        client = storage.Client(
            project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": gcs}
        )
        for f in (EXAMPLES / "media").iterdir():
            client.bucket(BUCKET).blob(f"media/{f.name}").upload_from_filename(str(f))
        # LTX2_CACHE_DIR (the session's, from conftest) holds the tiny model: built once, shared by both workers
        env = {
            "LTX2_MODEL_DIR": "tiny",
            "LTX2_GCS_BUCKET": BUCKET,
            "STORAGE_EMULATOR_HOST": gcs,
            "LTX2_ALLOW_PRIVATE_URLS": "1",  # the held input is on loopback
            "OMP_NUM_THREADS": "1",  # two workers on a small machine: one core each
        }
        with start_workers(plane, 2, env, logs=tmp_path_factory.mktemp("rp-workers")) as workers:
            yield Endpoint(plane, client, workers, f"{media}/held.png")


@pytest.fixture
def held(endpoint):
    """A held input's URL; the gate opens when the test ends, whatever happened."""
    Held.gate.clear()
    yield endpoint.held
    Held.gate.set()


def _on_bucket(request: dict) -> dict:
    """An example request's relative media paths as gs:// objects in the emulator's bucket."""
    text = json.dumps(request).replace('"media/', f'"gs://{BUCKET}/media/')
    return json.loads(text)


def _examples() -> dict[str, dict]:
    lines = (EXAMPLES / "runpod-requests.jsonl").read_text().splitlines()
    return {e["id"]: _on_bucket(e["input"]) for e in map(json.loads, (x for x in lines if x.startswith("{")))}


def _decoded(endpoint: Endpoint, uri: str, dest: Path) -> tuple[int, int, int]:
    """(frames, width, height) of the MP4 at gs:// `uri`, decoded."""
    bucket, _, name = uri.removeprefix("gs://").partition("/")
    blob = endpoint.storage.bucket(bucket).get_blob(name)
    assert blob is not None, f"{uri} was not uploaded"
    blob.download_to_filename(str(dest))
    with av.open(str(dest)) as c:
        v = c.streams.video[0]
        assert c.streams.audio and c.streams.audio[0].codec_context.name == "aac"
        return sum(1 for _ in c.decode(v)), v.codec_context.width, v.codec_context.height


def test_original_requests_complete_on_both_workers(endpoint, tmp_path):
    examples = _examples()
    wanted = {
        "rp-lipsync": output_frame_count(audio_duration(EXAMPLES / "media" / "voice.ogg"), 30),
        "rp-audiogen": output_frame_count(1.0, 30),
        "rp-keys-audiogen": output_frame_count(1.0, 30),
    }
    ids = {name: endpoint.run(examples[name]) for name in wanted}
    assert endpoint.plane.submissions[-3:] == [{"input": examples[name]} for name in wanted]
    for name, job_id in ids.items():
        got = endpoint.wait(job_id)
        assert got["status"] == "COMPLETED", (got, endpoint.logs())
        out = got["output"]
        assert out["gcs_uri"].startswith(f"gs://{BUCKET}/ugc_media/{job_id}/ltx2_videos/")
        size = (examples[name]["width"], examples[name]["height"])
        assert _decoded(endpoint, out["gcs_uri"], tmp_path / f"{name}.mp4") == (out["num_frames"], *size)
        assert out["num_frames"] == wanted[name]
        assert got["executionTime"] >= out["timings"]["total"] * 1000 * 0.99
    assert {endpoint.status(i)["workerId"] for i in ids.values()} == {"worker-0", "worker-1"}
    assert endpoint.plane.requests["progress"] > 0  # the workers' progress_update went to job-done as IN_PROGRESS


@pytest.mark.parametrize(
    "request_, error",
    [
        (SMALL | {"duration": -1}, "E_INPUT: duration must be greater than 0, got -1"),
        (
            SMALL | {"image_url": f"gs://{BUCKET}/media/voice.ogg"},
            f"E_INPUT: image_url gs://{BUCKET}/media/voice.ogg: downloaded, but not an image",
        ),
    ],
    ids=["planned", "fetched"],
)
def test_a_bad_request_fails_with_its_code(endpoint, request_, error):
    got = endpoint.wait(endpoint.run(request_))
    assert got["status"] == "FAILED" and "output" not in got, got
    assert re.fullmatch(r"E_INPUT: [^\n]+", got["error"]) and got["error"].startswith(error), got["error"]


def test_queue_operations_while_both_workers_render(endpoint, held):
    """Two held jobs keep both workers busy; then one queued job is cancelled, two are purged, a running one
    cancelled."""
    a, b = (endpoint.run(SMALL | {"image_url": held, "seed": s}) for s in (1, 2))
    for job_id in (a, b):
        endpoint.wait(job_id, until=("IN_PROGRESS",))
    queued = [endpoint.run(SMALL | {"seed": s}) for s in (3, 4, 5)]
    health = endpoint.call("GET", "health").json()
    assert (health["jobs"]["inProgress"], health["jobs"]["inQueue"], health["jobs"]["retried"]) == (2, 3, 0)
    assert (health["workers"]["running"], health["workers"]["idle"]) == (2, 0)

    assert endpoint.call("POST", f"cancel/{queued[0]}").json() == {"id": queued[0], "status": "CANCELLED"}
    assert endpoint.call("POST", "purge-queue").json() == {"removed": 2, "status": "completed"}
    assert [endpoint.call("GET", f"status/{i}").status_code for i in queued[1:]] == [404, 404]
    assert endpoint.call("POST", f"cancel/{a}").json() == {"id": a, "status": "CANCELLED"}

    Held.gate.set()
    assert endpoint.plane.wait_idle(60), endpoint.logs()
    assert endpoint.wait(b)["status"] == "COMPLETED"
    assert endpoint.status(a)["status"] == "CANCELLED" and "output" not in endpoint.plane.jobs[a]  # result dropped
    assert all(endpoint.plane.jobs[i]["taken"] is None for i in queued)  # no worker ever saw them
    health = endpoint.call("GET", "health").json()
    assert (health["workers"]["running"], health["workers"]["idle"], health["jobs"]["inQueue"]) == (0, 2, 0)


def test_policy_execution_timeout_and_ttl(endpoint, held):
    timed = endpoint.run(SMALL | {"image_url": held, "seed": 6}, policy={"executionTimeout": 300})
    dropped = endpoint.run(SMALL | {"image_url": held, "seed": 7}, policy={"ttl": 300})
    assert endpoint.wait(timed)["status"] == "TIMED_OUT"
    deadline = time.monotonic() + 10
    while endpoint.call("GET", f"status/{dropped}").status_code != 404:
        assert time.monotonic() < deadline, endpoint.plane.jobs[dropped]
        time.sleep(0.1)
    Held.gate.set()
    assert endpoint.plane.wait_idle(60), endpoint.logs()
    assert endpoint.status(timed)["status"] == "TIMED_OUT" and "output" not in endpoint.plane.jobs[timed]
    assert endpoint.plane.jobs[dropped]["forgotten"] == "ttl"


def test_injected_faults_then_normal_answers(endpoint):
    plane = endpoint.plane
    plane.fail_next("done", 503)  # the worker's result post: the SDK posts it again
    done = plane.requests["done"]
    job_id = endpoint.run(SMALL | {"seed": 8})
    plane.fail_next("status", 500)
    plane.fail_next("status", 429)
    seen = plane.requests["status"]
    assert [endpoint.call("GET", f"status/{job_id}").status_code for _ in range(3)] == [500, 429, 200]
    plane.drop_next("status")
    with pytest.raises(requests.ConnectionError):
        endpoint.call("GET", f"status/{job_id}")
    assert plane.requests["status"] == seen + 4
    plane.drop_next("run")
    with pytest.raises(requests.ConnectionError):
        endpoint.call("POST", "run", {"input": SMALL})
    assert plane.submissions[-1] == {"input": SMALL | {"seed": 8}}  # the dropped /run made no job
    assert endpoint.wait(job_id)["status"] == "COMPLETED"
    assert plane.requests["done"] == done + 2


def test_results_expire(endpoint, monkeypatch):
    job_id = endpoint.run(SMALL | {"seed": 9})
    assert endpoint.wait(job_id)["status"] == "COMPLETED"
    monkeypatch.setattr(endpoint.plane, "result_ttl_s", 0.5)  # RunPod keeps results 30 min
    assert endpoint.status(job_id)["status"] == "COMPLETED"
    time.sleep(0.6)
    assert endpoint.call("GET", f"status/{job_id}").status_code == 404
    assert endpoint.plane.jobs[job_id]["forgotten"] == "result_ttl"


def test_requests_the_api_refuses(endpoint):
    assert endpoint.call("GET", "health", key="wrong").status_code == 401
    r = requests.get(f"{endpoint.base}/health", timeout=10)
    assert r.status_code == 401
    r = requests.get(f"{endpoint.plane.url}/no-such-endpoint/health", headers={"Authorization": "x"}, timeout=10)
    assert r.status_code == 401
    headers = {"Authorization": endpoint.plane.api_key}  # RunPod takes the key with or without "Bearer "
    assert requests.get(f"{endpoint.plane.url}/no-such-endpoint/health", headers=headers, timeout=10).status_code == 404
    assert endpoint.call("GET", "status/no-such-job").status_code == 404
    assert endpoint.call("POST", "run", {"inputs": {}}).status_code == 400
    assert endpoint.call("POST", "run", {"input": {}, "policy": {"ttl": -1}}).status_code == 400
    assert endpoint.call("POST", "health").status_code == 405


def test_the_runpod_sdk_client_talks_to_the_plane(endpoint, monkeypatch):
    import runpod

    monkeypatch.setattr(runpod, "endpoint_url_base", endpoint.plane.url)  # what RUNPOD_ENDPOINT_BASE_URL sets
    client = runpod.Endpoint(endpoint.plane.endpoint_id, api_key=endpoint.plane.api_key)
    job = client.run(SMALL | {"seed": 10})
    out = job.output(timeout=60)
    assert job.status() == "COMPLETED" and out["num_frames"] == output_frame_count(0.3, 30), out
    assert set(client.health()["workers"]) >= {"idle", "running"}
    assert client.purge_queue() == {"removed": 0, "status": "completed"}
