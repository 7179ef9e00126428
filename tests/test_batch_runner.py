"""The batch runner: resume, selection, journal, isolation, interruption (tiny model, CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_manifest
from media import write_image

from ltx2cli.batch.journal import Journal, read_journal

TINY = ("--model", "tiny", "--json")


@pytest.fixture
def manifest(tmp_path):
    write_image(tmp_path / "face.png", (64, 96))
    jobs = [{"id": f"j{i}", "image": "face.png", "duration": 0.3, "prompt": f"shot {i}"} for i in range(4)]
    return write_manifest(tmp_path / "jobs.yaml", {"defaults": {"resolution": "64x96"}, "jobs": jobs})


def _statuses(result) -> dict[str, str]:
    return {j["id"]: j["status"] for j in result.json_lines() if "status" in j}


def test_rerun_skips_done_jobs_and_a_changed_prompt_renders_again(cli, manifest, tmp_path):
    first = cli("batch", manifest, "-o", "out", *TINY)
    assert first.code == 0, first.err
    assert set(_statuses(first).values()) == {"done"}
    mtimes = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.mp4")}

    again = cli("batch", manifest, "-o", "out", *TINY)
    assert again.code == 0 and set(_statuses(again).values()) == {"skipped"}
    assert "model" not in again.err  # nothing to render: no model loaded

    text = manifest.read_text().replace("shot 2", "another shot")
    manifest.write_text(text)
    changed = cli("batch", manifest, "-o", "out", *TINY)
    assert _statuses(changed) == {"j0": "skipped", "j1": "skipped", "j2": "done", "j3": "skipped"}
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.mp4")}
    assert [n for n in after if after[n] != mtimes[n]] == ["j2.mp4"]

    forced = cli("batch", manifest, "-o", "out", "--force", "--only", "j0,j1", *TINY)
    assert _statuses(forced) == {"j0": "done", "j1": "done"}
    events = read_journal(tmp_path / "out" / "ltx2-journal.jsonl")
    assert [e["event"] for e in events].count("skipped") == 4 + 3
    assert all(e["spec_hash"] and e["output"].endswith(".mp4") for e in events)


def test_an_input_replaced_under_the_same_name_renders_again(cli, tmp_path):
    """Resume is by content: a new picture saved over face.png is a new job; the same bytes touched are not."""
    write_image(tmp_path / "face.png", (64, 96))
    write_image(tmp_path / "other.png", (64, 96))
    jobs = [
        {"id": i, "image": img, "duration": 0.3, "resolution": "64x96"}
        for i, img in [("a", "face.png"), ("b", "other.png")]
    ]
    manifest = write_manifest(tmp_path / "jobs.yaml", jobs)
    assert cli("batch", manifest, "-o", "out", *TINY).code == 0
    write_image(tmp_path / "face.png", (64, 96), mode="L")  # other pixels, same size and name
    os.utime(tmp_path / "other.png")
    again = cli("batch", manifest, "-o", "out", *TINY)
    assert _statuses(again) == {"a": "done", "b": "skipped"}, again.err
    side = json.loads((tmp_path / "out" / "a.json").read_text())
    done = [e for e in read_journal(tmp_path / "out" / "ltx2-journal.jsonl") if e["event"] == "done"]
    assert [e["id"] for e in done] == ["a", "b", "a"] and side["spec_hash"] == done[-1]["spec_hash"] != done[0][
        "spec_hash"
    ]


def test_each_render_line_counts_up_once(cli, manifest, tmp_path):
    """The next job starts rendering while the last one is still being delivered: the counter is the job's place,
    not the finished count (which would print [2/4] twice)."""
    assert cli("batch", manifest, "-o", "out", "--only", "j1", *TINY).code == 0  # j1 is skipped next time
    r = cli("batch", manifest, "-o", "out", *TINY)
    lines = [line for line in r.err.splitlines() if line.endswith(": rendering")]
    assert lines == ["[2/4] j0: rendering", "[3/4] j2: rendering", "[4/4] j3: rendering"], r.err


def test_resume_reads_the_journal_first_and_sidecars_when_it_is_gone(cli, manifest, tmp_path):
    out = tmp_path / "out"
    assert cli("batch", manifest, "-o", "out", *TINY).code == 0
    (out / "j0.json").unlink()  # the journal still lists j0 as done from this spec
    manifest.write_text(manifest.read_text().replace("shot 1", "another shot"))  # j1's spec changes
    (out / "j3.mp4").unlink()  # listed, but the file is gone
    r = cli("batch", manifest, "-o", "out", *TINY)
    assert _statuses(r) == {"j0": "skipped", "j1": "done", "j2": "skipped", "j3": "done"}, r.err
    assert not (out / "j0.json").exists()  # skipped on the journal's word, not rendered again

    (out / "ltx2-journal.jsonl").unlink()  # sidecars decide now: j0 has none
    r = cli("batch", manifest, "-o", "out", *TINY)
    assert _statuses(r) == {"j0": "done", "j1": "skipped", "j2": "skipped", "j3": "skipped"}, r.err
    finished = [e["id"] for e in read_journal(out / "ltx2-journal.jsonl") if e["event"] in ("done", "skipped")]
    assert sorted(finished) == ["j0", "j1", "j2", "j3"]  # a new journal, listing all four again


def test_the_journal_index_keeps_the_last_finished_render_of_each_output(tmp_path):
    path = tmp_path / "journal.jsonl"
    lines = [
        {"event": "done", "id": "a", "spec_hash": "h1", "output": "/o/a.mp4"},
        {"event": "done", "id": "b", "spec_hash": "h1", "output": "/o/b.mp4"},
        {"event": "started", "id": "b", "spec_hash": "h2", "output": "/o/b.mp4"},  # may have replaced b.mp4, then
        {"event": "failed", "id": "b", "spec_hash": "h2", "output": "/o/b.mp4"},  # failed: no longer vouched for
        {"event": "skipped", "id": "c", "spec_hash": "h1", "output": "/o/c.mp4"},
        {"event": "done", "id": "d", "spec_hash": "h1", "output": "/o/a.mp4"},  # another job wrote a.mp4 since
    ]
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"event": "done", "id": "e", "spe')  # torn
    with Journal(path) as journal:
        assert journal.index == {"/o/a.mp4": ("d", "h1"), "/o/c.mp4": ("c", "h1")}
        assert journal.finished("d", "h1", "/o/a.mp4") and not journal.finished("a", "h1", "/o/a.mp4")
        assert not journal.finished("c", "h2", "/o/c.mp4") and not journal.finished("c", "h1", "/o/other.mp4")


def test_a_second_batch_into_the_same_folder_is_refused_while_the_first_runs(cli, manifest, tmp_path):
    """Two runs into one output folder would render every job twice and share a long clip's checkpoint."""
    with Journal(tmp_path / "out" / "ltx2-journal.jsonl"):  # as a batch that is running holds it
        r = cli("batch", manifest, "-o", "out", *TINY)
        assert r.code == 2 and "another ltx2 batch is writing" in r.err, r.err
        assert not list((tmp_path / "out").glob("*.mp4"))
    assert cli("batch", manifest, "-o", "out", "--limit", "1", *TINY).code == 0  # released: the next run goes


def test_a_folder_that_cannot_be_locked_still_takes_a_batch(cli, manifest, tmp_path, monkeypatch):
    """Some NFS and FUSE mounts refuse flock (ENOLCK): the batch runs unguarded rather than not at all."""
    import errno
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    r = cli("batch", manifest, "-o", "nfs", "--limit", "1", *TINY)
    assert r.code == 0 and _statuses(r) == {"j0": "done"}, r.err


def test_shards_split_the_manifest_without_overlap(cli, manifest):
    seen = []
    for i in (1, 2, 3):
        r = cli("batch", manifest, "-o", f"s{i}", "--shard", f"{i}/3", "--limit", "9", *TINY)
        assert r.code == 0, r.err
        seen += list(_statuses(r))
    assert sorted(seen) == ["j0", "j1", "j2", "j3"]
    limited = cli("batch", manifest, "-o", "lim", "--limit", "1", *TINY)
    assert list(_statuses(limited)) == ["j0"]
    bad = cli("batch", manifest, "--shard", "4/3", *TINY)
    assert bad.code == 2 and "--shard" in bad.err
    unknown = cli("batch", manifest, "--only", "nope", *TINY)
    assert unknown.code == 2 and "'nope'" in unknown.err
    for empty in ("", ","):  # a script's list that came out empty: nothing renders, rather than everything
        r = cli("batch", manifest, "-o", "none", "--only", empty, *TINY)
        assert r.code == 2 and "--only: no job ids given" in r.err and not (manifest.parent / "none").exists()


def test_out_of_memory_fails_one_job_and_the_next_renders(cli, manifest, monkeypatch):
    import torch

    from ltx2cli.engine.render import Renderer

    real = Renderer.render

    def flaky(self, spec, inputs, **kw):
        if spec.id == "j1":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return real(self, spec, inputs, **kw)

    monkeypatch.setattr(Renderer, "render", flaky)
    r = cli("batch", manifest, "-o", "out", *TINY)
    assert r.code == 1
    results = {j["id"]: j for j in r.json_lines() if "status" in j}
    assert results["j1"]["code"] == "E_OOM" and results["j2"]["status"] == "done"

    stop = cli("batch", manifest, "-o", "out2", "--fail-fast", *TINY)
    assert stop.code == 1 and sorted(_statuses(stop)) == ["j0", "j1"]  # j2 never starts


def _batch_process(manifest: Path, out: Path, env_cache: str) -> subprocess.Popen:
    env = {**os.environ, "LTX2_CACHE_DIR": env_cache, "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "ltx2cli", "batch", str(manifest), "-o", str(out), "--model", "tiny", "--json"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _wait_for(path: Path, event: str, count: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(e["event"] == event for e in read_journal(path)) >= count:
            return
        time.sleep(0.02)
    raise AssertionError(f"no {count} x {event} in {path}")


def _check_outputs(out: Path, ids: list[str]) -> None:
    assert sorted(p.stem for p in out.glob("*.mp4")) == ids
    assert not [p for p in out.iterdir() if ".part" in p.name], "temp files left behind"
    for mp4 in out.glob("*.mp4"):
        assert json.loads(mp4.with_suffix(".json").read_text())["spec_hash"]


def test_kill_9_mid_batch_then_rerun_finishes_everything_once(manifest, tmp_path):
    out = tmp_path / "out"
    proc = _batch_process(manifest, out, os.environ["LTX2_CACHE_DIR"])
    _wait_for(out / "ltx2-journal.jsonl", "started", 2)
    proc.kill()
    proc.wait()
    journal = read_journal(out / "ltx2-journal.jsonl")  # parses after the crash
    assert journal and journal[-1]["event"] in ("started", "done")
    rerun = _batch_process(manifest, out, os.environ["LTX2_CACHE_DIR"])
    _, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    _check_outputs(out, ["j0", "j1", "j2", "j3"])
    done = [e["id"] for e in read_journal(out / "ltx2-journal.jsonl") if e["event"] == "done"]
    assert sorted(set(done)) == ["j0", "j1", "j2", "j3"]


def test_ctrl_c_stops_after_the_current_job_with_exit_130(manifest, tmp_path):
    out = tmp_path / "out"
    proc = _batch_process(manifest, out, os.environ["LTX2_CACHE_DIR"])
    _wait_for(out / "ltx2-journal.jsonl", "started", 1)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    events = read_journal(out / "ltx2-journal.jsonl")
    started = [e["id"] for e in events if e["event"] == "started"]
    finished = [e["id"] for e in events if e["event"] in ("done", "failed")]
    assert started == finished and len(started) < 4  # the current job finished; nothing half-recorded
    _check_outputs(out, sorted(finished))
    summary = json.loads(stdout.splitlines()[-1])
    assert summary["interrupted"] is True
