"""`ltx2 batch --endpoint runpod:ID`: a manifest fanned out over a RunPod endpoint, with ltx2's REAL worker as 2
processes under the runpod SDK's own serverless loop (tests/runpod_plane.py stands in for RunPod's control plane
only), outputs and staged inputs on the GCS emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import av
import pytest
from conftest import write_manifest
from media import write_audio, write_image
from runpod_plane import ControlPlane, start_workers

from ltx2cli.batch import fanout
from ltx2cli.batch.endpoint import Endpoint, EndpointError, Gone, Target
from ltx2cli.batch.journal import read_journal
from ltx2cli.batch.options import RunOptions
from ltx2cli.batch.progress import JobProgress
from ltx2cli.batch.results import Recorder, Run
from ltx2cli.errors import UsageError
from ltx2cli.jobs.presets import load_presets
from ltx2cli.output import Output
from ltx2cli.plan.resolve import manifest_jobs, plan_manifests
from ltx2cli.storage.sinks import sink_for

BUCKET = "ltx2-test"
KEY = "loopback-key"


def _manifest(tmp_path: Path) -> Path:
    """Six jobs with local inputs: four to gs:// outputs, one to a local path (fetched back), and one whose
    output is in a bucket the worker does not write (the worker refuses it: E_INPUT)."""
    write_image(tmp_path / "face.png", (64, 96))
    write_image(tmp_path / "smile.png", (96, 64))
    write_audio(tmp_path / "voice.wav", seconds=0.4)
    gs = f"gs://{BUCKET}/renders"
    jobs = [
        {"id": "a1", "image": "face.png", "duration": 0.3, "output": f"{gs}/a1.mp4"},
        {"id": "a2", "image": "smile.png", "duration": 0.3, "output": f"{gs}/a2.mp4", "seed": 2},
        {"id": "talk", "image": "face.png", "audio": "voice.wav", "output": f"{gs}/talk.mp4"},
        {"id": "kf", "keyframes": [{"image": "face.png"}, {"image": "smile.png", "position": "last"}],
         "duration": 0.3, "output": f"{gs}/kf.mp4"},
        {"id": "here", "image": "smile.png", "duration": 0.3, "output": "local/here.mp4"},
        {"id": "elsewhere", "image": "face.png", "duration": 0.3, "output": "gs://not-the-workers-bucket/x.mp4"},
    ]  # fmt: skip
    defaults = {"resolution": "64x96", "preset": "fast", "fps": 24}
    return write_manifest(tmp_path / "jobs.yaml", {"defaults": defaults, "jobs": jobs})


def _client(plane: ControlPlane, manifest: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "ltx2cli", "batch", str(manifest), "-o", str(manifest.parent / "out"), "--json",
        "--endpoint", f"runpod:{plane.endpoint_id}", "--endpoint-url", plane.url,
        "--stage", f"gs://{BUCKET}/stage/", "--download", *extra,
    ]  # fmt: skip


def _env(gcs: str) -> dict[str, str]:
    return os.environ | {"RUNPOD_API_KEY": KEY, "STORAGE_EMULATOR_HOST": gcs}


def _events(journal: Path, event: str) -> list[str]:
    return [r["id"] for r in read_journal(journal) if r["event"] == event]


def test_a_manifest_fans_out_over_the_endpoint_and_a_killed_client_resumes(cli, tmp_path, gcs):
    manifest = _manifest(tmp_path)
    journal = tmp_path / "out" / "ltx2-journal.jsonl"
    worker_env = {"LTX2_MODEL_DIR": "tiny", "LTX2_GCS_BUCKET": BUCKET, "STORAGE_EMULATOR_HOST": gcs}
    with ControlPlane(api_key=KEY) as plane, start_workers(plane, 2, worker_env, logs=tmp_path / "workers"):
        plane.fail_next("run", 503, 2)  # a spell of refusals, then a dropped connection and 500s while polling
        plane.drop_next("status", 1)
        plane.fail_next("status", 500, 3)
        client = subprocess.Popen(
            _client(plane, manifest), env=_env(gcs), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + 240
        while len(_events(journal, "done")) < 2 and client.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        client.send_signal(signal.SIGKILL)  # mid-batch: jobs in flight, their ids journaled
        client.wait()
        first_done, first_sent = set(_events(journal, "done")), set(_events(journal, "submitted"))
        first_failed = set(_events(journal, "failed"))  # only "elsewhere" can fail, if its answer came before the kill
        sent_first = Counter(s["input"]["id"] for s in plane.submissions)
        assert 2 <= len(first_done) < 6, client.stderr.read().decode()[-3000:]
        assert first_failed <= {"elsewhere"}
        # RunPod's /run takes no idempotency key: a kill between its answer and the journal's line loses that id
        assert len(set(sent_first) - first_sent) <= 1 and set(sent_first) >= first_sent

        again = subprocess.run(_client(plane, manifest), env=_env(gcs), capture_output=True, text=True, timeout=300)
        assert plane.wait_idle(60)

    lines = [json.loads(line) for line in again.stdout.splitlines()]
    results = {r["id"]: r for r in lines if "status" in r and "summary" not in r}
    summary = next(r for r in lines if r.get("summary"))
    assert again.returncode == 1, again.stderr[-3000:]  # one job failed on the worker
    assert results["elsewhere"]["status"] == "failed" and results["elsewhere"]["code"] == "E_INPUT"
    assert "not-the-workers-bucket" in results["elsewhere"]["error"] or BUCKET in results["elsewhere"]["error"]
    done = {i for i, r in results.items() if r["status"] in ("done", "skipped")}
    assert done == {"a1", "a2", "talk", "kf", "here"}
    # skipped: done before the kill, or finished by a worker while the client was down (its output's sidecar has the
    # hash of the spec the worker planned: remote_spec's)
    assert first_done <= {i for i, r in results.items() if r["status"] == "skipped"} <= set(sent_first)
    assert summary["done"] + summary["skipped"] == 5 and summary["failed"] == 1

    # The rerun sent nothing the first run journaled as sent (it polled what was in flight) unless it had seen it
    # fail (a rerun retries failures, as a local batch's does), and nothing twice.
    sent = Counter(s["input"]["id"] for s in plane.submissions)
    sent_again = sent - sent_first
    assert set(sent) == {"a1", "a2", "talk", "kf", "here", "elsewhere"}
    assert not set(sent_again) & (first_sent - first_failed) and set(sent_again.values()) <= {1}, (sent, first_sent)
    assert plane.requests["run"] >= 8 and plane.requests["status"] >= 4  # the injected faults were met, and retried
    assert all("policy" in s and s["policy"]["executionTimeout"] >= 300_000 for s in plane.submissions)

    # Inputs staged once each, by content; outputs where the manifest says; every MP4 fetched back and decodable.
    staged = [s["input"].get("image") or "" for s in plane.submissions]
    assert all(v.startswith(f"gs://{BUCKET}/stage/") for v in staged if v)
    out = tmp_path / "out"
    for job in ("a1", "a2", "talk", "kf"):
        mp4 = out / BUCKET / "renders" / f"{job}.mp4"
        with av.open(str(mp4)) as f:
            assert f.streams.video[0].frames >= 7 and f.streams.audio
        assert json.loads(mp4.with_suffix(".json").read_text())["id"] == job
    with av.open(str(tmp_path / "local" / "here.mp4")) as f:
        assert f.streams.video[0].codec_context.width == 64
    assert set(_events(journal, "submitted")) == set(sent)
    assert set(_events(journal, "done")) | set(_events(journal, "skipped")) == done
    sheet = (out / "index.html").read_text()
    assert all(job in sheet for job in (*done, "elsewhere"))
    report = cli("report", out, "--json")  # the run read back, as `ltx2 report` reads any
    *lines, summary = report.json_lines()
    assert report.code == 1 and summary["failed"] == 1
    assert {r["id"]: r["status"] for r in lines} == {i: r["status"] for i, r in results.items()}


def test_the_endpoint_is_named_with_its_key(monkeypatch):
    with pytest.raises(UsageError, match="runpod:ENDPOINT_ID"):
        Target.parse("abc123", env={"RUNPOD_API_KEY": "k"})
    with pytest.raises(UsageError, match="RUNPOD_API_KEY"):
        Target.parse("runpod:abc123", env={})
    with pytest.raises(UsageError, match="--endpoint-url 'ftp://x'"):
        Target.parse("runpod:abc123", "ftp://x", env={"RUNPOD_API_KEY": "k"})
    t = Target.parse("runpod:abc123", env={"RUNPOD_API_KEY": "k", "RUNPOD_ENDPOINT_BASE_URL": "http://127.0.0.1:9/v2/"})
    assert (t.endpoint_id, t.base_url, t.api_key) == ("abc123", "http://127.0.0.1:9/v2", "k")
    assert Target.parse("runpod:abc123", env={"RUNPOD_API_KEY": "k"}).base_url == "https://api.runpod.ai/v2"


def test_calls_retry_429_and_5xx_and_a_lost_job_is_gone():
    with ControlPlane(api_key=KEY) as plane:
        endpoint = Endpoint(Target(plane.endpoint_id, plane.url, KEY), retries=3, backoff_s=0.01)
        plane.fail_next("run", 429, 2)
        job = endpoint.submit({"image": "gs://b/x.png", "duration": 1}, {"executionTimeout": 600_000, "ttl": 900_000})
        assert plane.requests["run"] == 3 and len(plane.submissions) == 1
        plane.fail_next("status", 502, 2)
        plane.drop_next("status", 1)
        assert endpoint.status(job)["status"] == "IN_QUEUE"
        plane.expire(job)
        with pytest.raises(Gone):
            endpoint.status(job)
        plane.fail_next("run", 500, 4)  # more refusals than retries: the call fails, naming the status
        with pytest.raises(EndpointError, match="HTTP 500"):
            endpoint.submit({"image": "gs://b/x.png", "duration": 1})
        plane.drop_next("run", 1)  # a /run with no answer may have queued the job: not sent again blindly
        with pytest.raises(EndpointError):
            endpoint.submit({"image": "gs://b/x.png", "duration": 1})
        assert len(plane.submissions) == 1
        bad = Endpoint(Target(plane.endpoint_id, plane.url, "wrong-key"), retries=0)
        with pytest.raises(EndpointError):
            bad.health()


def test_jobs_the_workers_cannot_run_are_refused_before_anything_is_sent(tmp_path):
    write_image(tmp_path / "face.png", (64, 96))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "own.yaml").write_text("name: own\nsteps: 2\nresolution: 64x96\n")
    (tmp_path / "l.safetensors").write_bytes(b"")
    jobs = [
        {"id": "local", "image": "face.png", "duration": 0.3},
        {"id": "preset", "image": "https://example.com/a.png", "duration": 0.3, "preset": "own", "resolution": "64x96"},
    ]
    manifest = write_manifest(tmp_path / "jobs.yaml", jobs)
    specs, problems = plan_manifests([manifest], presets_dirs=[tmp_path / "mine"])
    assert [s.id for s in specs] == ["local", "preset"], problems
    presets, _ = load_presets([tmp_path / "mine"])
    fan = fanout.Fanout(endpoint=None)  # type: ignore[arg-type]
    found = fanout.check_fanout(specs, manifest_jobs([manifest]), fan, presets)
    assert [(p.job, p.field) for p in found] == [("local", None), ("preset", "preset")]
    assert "--stage gs://BUCKET/prefix/" in found[0].message and "own" in found[1].message


def test_a_job_whose_status_goes_unread_stays_in_flight_until_patience_runs_out(tmp_path):
    """A poll that fails after its own retries does not fail the job (it renders on regardless): the next round
    asks again, an answer clears the count, and only a status unread for `patience_s` fails it, E_ENDPOINT."""
    spec = plan_manifests([write_manifest(tmp_path / "a.yaml", [_job(tmp_path, 1)])])[0][0]
    out = Output("json")
    run = Run()
    recorder = Recorder(run, JobProgress(out, 1), None, out)
    with ControlPlane(api_key=KEY) as plane:
        endpoint = Endpoint(Target(plane.endpoint_id, plane.url, KEY), retries=0, backoff_s=0.01)
        fan = fanout.Fanout(endpoint, patience_s=0.5)
        job = fanout.Remote(spec, {"image": "gs://b/x.png"}, sink_for(spec.output), fetch_back=False)
        job.rp_id = endpoint.submit(job.request)

        def poll() -> bool:
            return fanout._poll(job, fan, RunOptions(), recorder, recorder.progress, out)

        plane.fail_next("status", 500, 2)
        assert not poll() and not poll() and job.unread_since is not None  # unread twice: still in flight
        assert not poll() and job.unread_since is None and not run.results  # answered: the count starts over
        plane.fail_next("status", 503, 1000)
        assert not poll()
        time.sleep(0.6)
        assert poll()  # unread for longer than patience_s: failed now
    [result] = run.results
    assert result.status == "failed" and result.failure.code == "E_ENDPOINT"
    assert "HTTP 503" in result.failure.message and "unread for 0.5 s" in result.failure.message


def test_the_policy_grows_with_the_clip(tmp_path):
    short = plan_manifests([write_manifest(tmp_path / "a.yaml", [_job(tmp_path, 1)])])[0][0]
    long = plan_manifests([write_manifest(tmp_path / "b.yaml", [_job(tmp_path, 20)])])[0][0]
    a, b = fanout.policy(short), fanout.policy(long)
    assert 300_000 <= a["executionTimeout"] < b["executionTimeout"] and a["ttl"] > a["executionTimeout"]


def _job(tmp_path: Path, seconds: float) -> dict:
    write_image(tmp_path / "face.png", (64, 96))
    return {"id": "j", "image": str(tmp_path / "face.png"), "duration": seconds, "resolution": "768x512"}


def _no_worker_plane_client(tmp_path: Path, plane: ControlPlane, gcs: str, *extra: str) -> list[str]:
    write_image(tmp_path / "face.png", (64, 96))
    jobs = [
        {"id": f"q{i}", "image": "face.png", "duration": 0.3, "output": f"gs://{BUCKET}/q/q{i}.mp4"} for i in range(3)
    ]
    manifest = write_manifest(tmp_path / "jobs.yaml", {"defaults": {"resolution": "64x96"}, "jobs": jobs})
    return _client(plane, manifest, *extra)


def test_ctrl_c_cancels_the_jobs_in_flight(tmp_path, gcs):
    """No worker takes them: the jobs wait in the queue until the client is interrupted, then they are cancelled."""
    with ControlPlane(api_key=KEY) as plane:
        cmd = _no_worker_plane_client(tmp_path, plane, gcs, "--concurrency", "2")
        client = subprocess.Popen(cmd, env=_env(gcs), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while len(plane.submissions) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        client.send_signal(signal.SIGINT)
        _, err = client.communicate(timeout=60)
        statuses = sorted(j["status"] for j in plane.jobs.values())
    assert client.returncode == 130, err
    assert statuses == ["CANCELLED", "CANCELLED"] and len(plane.submissions) == 2  # the third was never sent
    assert "cancelled 2 jobs in flight" in err


def test_a_timed_out_job_goes_again_and_a_forgotten_one_too_unless_its_output_is_there(tmp_path, gcs):
    """The endpoint's verdicts, played by the plane's own bookkeeping: TIMED_OUT is sent again up to --retries, then
    fails E_ENDPOINT; a job RunPod forgot (404) whose output is not there is sent again."""
    with ControlPlane(api_key=KEY) as plane:
        cmd = _no_worker_plane_client(tmp_path, plane, gcs, "--concurrency", "3", "--retries", "1")
        client = subprocess.Popen(cmd, env=_env(gcs), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while len(plane.submissions) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        by_job = {j["input"]["id"]: i for i, j in plane.jobs.items()}
        plane.expire(by_job["q0"])  # forgotten, no output: sent again
        with plane._cond:  # what RunPod's clock would do to a job over its execution timeout
            plane.jobs[by_job["q1"]].update(status="TIMED_OUT", finished=time.monotonic())
        while len(plane.submissions) < 5 and time.monotonic() < deadline:
            time.sleep(0.05)
        again = {j["input"]["id"]: i for i, j in plane.jobs.items() if i not in by_job.values()}
        with plane._cond:  # the second try of q1 times out too: --retries 1 is spent
            plane.jobs[again["q1"]].update(status="TIMED_OUT", finished=time.monotonic())
        time.sleep(2)
        client.send_signal(signal.SIGINT)
        out, err = client.communicate(timeout=60)
    sent = sorted(s["input"]["id"] for s in plane.submissions)
    assert sent == ["q0", "q0", "q1", "q1", "q2"], err
    results = {r["id"]: r for r in map(json.loads, out.splitlines()) if "status" in r}
    assert results["q1"]["code"] == "E_ENDPOINT" and "timed out after 2 tries" in results["q1"]["error"]
