"""The batch pipeline: stages overlap, errors land on their own job, LoRA groups, the contact sheet (tiny model)."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import av
import pytest
from conftest import write_manifest
from media import write_audio, write_image, write_truncated_jpeg
from PIL import Image

from ltx2cli.batch import report, stages
from ltx2cli.batch.journal import read_journal
from ltx2cli.media import probe

TINY = ("--model", "tiny", "--json")
WAIT = 60  # seconds a stage waits for its neighbour before the test calls the stages serial


def _jobs(tmp_path: Path, n: int, **extra) -> Path:
    write_image(tmp_path / "face.png", (64, 96))
    jobs = [{"id": f"j{i}", "image": "face.png", "duration": 0.3, "prompt": f"shot {i}", **extra} for i in range(n)]
    return write_manifest(tmp_path / "jobs.yaml", {"defaults": {"resolution": "64x96"}, "jobs": jobs})


def _statuses(result) -> dict[str, str]:
    return {j["id"]: j["status"] for j in result.json_lines() if "status" in j}


def test_next_inputs_and_previous_delivery_overlap_the_render(cli, tmp_path, monkeypatch):
    """Job N's render waits (bounded) until job N+1's inputs are being prepared, and job N-1's delivery waits until
    job N's render has begun: a serial runner would time out both waits and the test says so."""
    manifest = _jobs(tmp_path, 3)
    prepared = {f"j{i}": threading.Event() for i in range(3)}
    rendering = {f"j{i}": threading.Event() for i in range(3)}
    seen: dict[str, bool] = {}
    real_prepare, real_deliver = stages.prepare, stages.deliver
    from ltx2cli.engine.render import Renderer

    real_render = Renderer.render

    def prepare(spec, fetch):
        prepared[spec.id].set()
        return real_prepare(spec, fetch)

    def render(self, spec, inputs, **kw):
        rendering[spec.id].set()
        nxt = f"j{int(spec.id[1:]) + 1}"
        if nxt in prepared:
            seen[f"prefetch {nxt} during render {spec.id}"] = prepared[nxt].wait(WAIT)
        return real_render(self, spec, inputs, **kw)

    def deliver(spec, *args, **kw):
        nxt = f"j{int(spec.id[1:]) + 1}"
        if nxt in rendering:
            seen[f"deliver {spec.id} during render {nxt}"] = rendering[nxt].wait(WAIT)
        return real_deliver(spec, *args, **kw)

    monkeypatch.setattr(stages, "prepare", prepare)
    monkeypatch.setattr(stages, "deliver", deliver)
    monkeypatch.setattr(Renderer, "render", render)
    r = cli("batch", manifest, "-o", "out", *TINY)
    assert r.code == 0, r.err
    assert seen == {
        "prefetch j1 during render j0": True,
        "prefetch j2 during render j1": True,
        "deliver j0 during render j1": True,
        "deliver j1 during render j2": True,
    }
    assert _statuses(r) == {"j0": "done", "j1": "done", "j2": "done"}
    for i in range(3):
        with av.open(str(tmp_path / "out" / f"j{i}.mp4")) as c:
            assert c.streams.video[0].frames == 9


def _only_j1_fails(cli, tmp_path: Path, outputs: list[str]) -> dict[str, dict]:
    """Three jobs writing to `outputs`: the batch exits 1, j1 alone failed; -> each job's result line by id."""
    write_image(tmp_path / "face.png", (64, 96))
    jobs = [{"id": f"j{i}", "image": "face.png", "duration": 0.3, "output": o} for i, o in enumerate(outputs)]
    manifest = write_manifest(tmp_path / "jobs.yaml", {"defaults": {"resolution": "64x96"}, "jobs": jobs})
    r = cli("batch", manifest, "-o", "out", *TINY)
    assert r.code == 1
    by_id = {j["id"]: j for j in r.json_lines() if "status" in j}
    assert {k: v["status"] for k, v in by_id.items()} == {"j0": "done", "j1": "failed", "j2": "done"}
    return by_id


def test_an_upload_failure_lands_on_its_own_job(cli, tmp_path, gcs):
    """j1's upload (to a bucket that does not exist) fails in the deliver thread while j2 renders: only j1 fails,
    with E_STORAGE, and keeps its local MP4."""
    by_id = _only_j1_fails(
        cli, tmp_path, ["out/j0.mp4", "gs://no-such-bucket/clips/j1.mp4", "gs://ltx2-test/clips/j2.mp4"]
    )
    assert by_id["j1"]["code"] == "E_STORAGE" and "no-such-bucket" in by_id["j1"]["error"]
    assert Path(by_id["j1"]["local"]).is_file()  # the render is not lost
    assert by_id["j2"]["uploaded"]["uri"] == "gs://ltx2-test/clips/j2.mp4"
    events = read_journal(tmp_path / "out" / "ltx2-journal.jsonl")
    assert [e["event"] for e in events if e["id"] == "j1"] == ["started", "failed"]


def test_jobs_sharing_a_lora_set_render_together(cli, tmp_path, monkeypatch):
    write_image(tmp_path / "face.png", (64, 96))
    dolly = [{"name": "camera-dolly-in", "strength": 0.5}]
    jobs = [
        {"id": "a0", "image": "face.png", "duration": 0.3, "loras": dolly},
        {"id": "b0", "image": "face.png", "duration": 0.3},
        {"id": "a1", "image": "face.png", "duration": 0.3, "loras": dolly},
        {"id": "b1", "image": "face.png", "duration": 0.3},
    ]
    manifest = write_manifest(tmp_path / "jobs.yaml", {"defaults": {"resolution": "64x96"}, "jobs": jobs})
    from ltx2cli.engine.models.loaded import Models

    switches: list[tuple] = []
    real_set = Models.set_loras

    def set_loras(self, loras):
        switches.append(tuple((lo.key, lo.strength) for lo in loras))
        return real_set(self, loras)

    monkeypatch.setattr(Models, "set_loras", set_loras)
    r = cli("batch", manifest, "-o", "out", *TINY)
    assert r.code == 0, r.err
    started = [e["id"] for e in read_journal(tmp_path / "out" / "ltx2-journal.jsonl") if e["event"] == "started"]
    assert started == ["a0", "a1", "b0", "b1"]
    distinct = [s for i, s in enumerate(switches) if i == 0 or s != switches[i - 1]]
    assert len(distinct) == 2, distinct  # dolly-in at 0.5, then at the fast preset's 0.3: one switch
    assert [j["id"] for j in r.json_lines() if "status" in j] == ["a0", "a1", "b0", "b1"]


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


@pytest.mark.skipif(_chromium() is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_contact_sheet_loads_every_thumbnail_in_chromium(cli, tmp_path, monkeypatch):
    write_image(tmp_path / "face.png", (64, 96))
    write_image(tmp_path / "smile.jpg", (64, 96))
    write_audio(tmp_path / "voice.wav", 0.5)
    jobs = [
        {"id": "talk", "image": "face.png", "audio": "voice.wav", "prompt": 'A <b>bold</b> & quoted "talk"'},
        {
            "id": "keys",
            "keyframes": [{"image": "face.png"}, {"image": "smile.jpg", "position": 0.5}, {"image": "face.png"}],
            "duration": 0.6,
        },
        {"id": "gen", "image": "face.png", "duration": 0.3},
    ]
    manifest = write_manifest(tmp_path / "jobs.yaml", {"defaults": {"resolution": "64x96"}, "jobs": jobs})
    monkeypatch.setattr(report, "_frames", None)  # fresh renders are cut from frames in memory, never decoded back
    assert cli("batch", manifest, "-o", "out", *TINY).code == 0
    monkeypatch.undo()
    index = tmp_path / "out" / "index.html"
    text = index.read_text()
    assert "A &lt;b&gt;bold&lt;/b&gt; &amp; quoted &quot;talk&quot;" in text  # prompts are escaped
    for job_id, frames in {"talk": [0, 14], "keys": [0, 8, 17], "gen": [0, 8]}.items():
        for f in frames:
            assert (tmp_path / "out" / "thumbs" / f"{job_id}-f{f}.jpg").is_file(), (job_id, f)
        assert f'href="{job_id}.mp4"' in text

    chromium = _chromium()
    profile = tmp_path / "profile"
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom",
         index.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert 'data-thumbs-total="7"' in dom and 'data-thumbs-broken="0"' in dom, dom[-2000:]
    shot = tmp_path / "sheet.png"
    subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1200,800", f"--screenshot={shot}",
         index.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    with Image.open(shot) as img:
        assert (
            img.size == (1200, 800) and len(img.convert("L").getcolors(1 << 16) or ()) > 50
        )  # thumbnails drawn, not blank

    # Remove one thumbnail: the page marks it broken and says so in its count.
    (tmp_path / "out" / "thumbs" / "gen-f8.jpg").unlink()
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom",
         index.as_uri()],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert 'data-thumbs-broken="1"' in dom


def test_contact_sheet_lists_failed_and_skipped_jobs(cli, tmp_path, monkeypatch):
    manifest = _jobs(tmp_path, 2)
    assert cli("batch", manifest, "-o", "out", *TINY).code == 0
    shutil.rmtree(tmp_path / "out" / "thumbs")  # as after a run by an older ltx2: made again from the MP4s
    write_truncated_jpeg(tmp_path / "cut.jpg", keep=2 / 3)
    # As if it broke after validation (overwritten while the batch ran): planning found it whole.
    image_size = probe.image_size
    monkeypatch.setattr(probe, "image_size", lambda p: (64, 96) if p.name == "cut.jpg" else image_size(p))
    jobs = [{"id": f"j{i}", "image": "face.png", "duration": 0.3, "prompt": f"shot {i}"} for i in range(2)]
    jobs.append({"id": "bad", "image": "cut.jpg", "duration": 0.3, "prompt": "never rendered"})
    write_manifest(tmp_path / "jobs.yaml", {"defaults": {"resolution": "64x96"}, "jobs": jobs})
    r = cli("batch", manifest, "-o", "out", *TINY)
    assert r.code == 1, r.err
    text = (tmp_path / "out" / "index.html").read_text()
    assert text.count('<tr class="skipped"') == 2 and text.count('<tr class="failed"') == 1
    assert "3 jobs: 0 done, 2 skipped, 1 failed" in text
    assert "E_INPUT: " in text and "never rendered" in text
    assert sorted(p.name for p in (tmp_path / "out" / "thumbs").iterdir()) == [
        "j0-f0.jpg",
        "j0-f8.jpg",
        "j1-f0.jpg",
        "j1-f8.jpg",
    ]


def test_an_unwritable_output_fails_its_job_with_e_io(cli, tmp_path):
    (tmp_path / "blocker").write_text("a file where a folder should be")
    by_id = _only_j1_fails(cli, tmp_path, ["out/j0.mp4", "blocker/j1.mp4", "out/j2.mp4"])
    assert by_id["j1"]["code"] == "E_IO" and "blocker" in by_id["j1"]["error"], by_id["j1"]


def test_a_journal_that_cannot_be_written_is_a_usage_error(cli, tmp_path):
    manifest = _jobs(tmp_path, 1)
    (tmp_path / "blocker").write_text("")
    r = cli("batch", manifest, "-o", "out", "--journal", "blocker/journal.jsonl", *TINY)
    assert r.code == 2 and "cannot write the journal" in r.err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.mp4"))
