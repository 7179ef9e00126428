"""`ltx2 report OUT`: one summary, --json lines and contact sheet for every run under a folder or a gs:// prefix,
built from real batches (tiny model) and their journals and sidecars; a run's journal published beside its gs://
outputs."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from conftest import write_manifest
from media import write_image
from PIL import Image

from ltx2cli.batch.journal import Journal
from ltx2cli.batch.publish import outputs_prefix, publish_journal
from ltx2cli.batch.results import JobResult, result_from_record
from ltx2cli.cli import main
from ltx2cli.errors import Failure
from ltx2cli.output import Output

TINY = ("--model", "tiny", "--json")
FRAMES = 9  # 0.3 s at 30 fps


@dataclass
class Runs:
    out: Path  # the folder both runs wrote to
    lines: dict[str, dict]  # each job's --json line from the run that last had it


def _ltx2(*args) -> tuple[int, list[dict]]:
    """`ltx2 ARGS` in-process (outside a test's own cli fixture: a module's fixture) -> exit code, --json lines."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(io.StringIO()), pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code, [json.loads(line) for line in stdout.getvalue().splitlines() if line.strip()]


def _two_runs(folder: Path, out: Path, jobs: list[dict], fix, extra: tuple = ()) -> dict[str, dict]:
    """Run 1 renders `first` and fails `flaky`; `fix()`; run 2, with its own journal, renders `flaky` and fails
    `bad` (as two shards into one output would). -> each job's --json line, the later run's where both had it."""
    manifest = write_manifest(folder / "jobs.yaml", {"defaults": {"resolution": "64x96"}, "jobs": jobs})
    lines: dict[str, dict] = {}
    for shard, only in ((1, "first,flaky"), (2, "flaky,bad")):
        journal = out / f"ltx2-journal.shard-{shard}-of-2.jsonl"
        code, printed = _ltx2("batch", manifest, "-o", out, "--only", only, "--journal", journal, *extra, *TINY)
        assert code == 1, printed
        lines |= {line["id"]: line for line in printed if "status" in line}
        if shard == 1:
            assert lines["flaky"]["status"] == "failed"
            fix()
    assert {k: v["status"] for k, v in lines.items()} == {"first": "done", "flaky": "done", "bad": "failed"}
    return lines


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Runs:
    """A folder two runs wrote to: `flaky` failed in run 1 (its folder was a file) and was done in run 2, `bad`
    failed (its folder is a file)."""
    folder = tmp_path_factory.mktemp("runs")
    out = folder / "out"
    out.mkdir()
    write_image(folder / "face.png", (64, 96))
    (out / "late").write_text("a file where flaky's folder goes, until run 2")
    (out / "wall").write_text("a file where bad's folder goes")
    jobs = [
        {"id": "first", "image": "face.png", "duration": 0.3, "prompt": "the first shot"},
        {"id": "flaky", "image": "face.png", "duration": 0.3, "output": "out/late/flaky.mp4"},
        {"id": "bad", "image": "face.png", "duration": 0.3, "output": "out/wall/bad.mp4"},
    ]
    return Runs(out, _two_runs(folder, out, jobs, fix=(out / "late").unlink))


def _report(result) -> tuple[dict[str, dict], dict]:
    lines = result.json_lines()
    assert lines[-1].get("summary") is True and all("summary" not in line for line in lines[:-1])
    return {line["id"]: line for line in lines[:-1]}, lines[-1]


def test_a_folder_of_two_runs_reports_each_jobs_newest_result(cli, runs):
    r = cli("report", runs.out, "--json")
    assert r.code == 1, r.err  # bad failed
    jobs, summary = _report(r)
    assert jobs == runs.lines  # exactly the lines `ltx2 batch --json` printed for each job's last run
    assert summary == {"summary": True, "jobs": 3, "done": 2, "skipped": 0, "failed": 1, "unfinished": 0,
                       "journals": 2, "sidecars": 2, "duplicates": 1}  # fmt: skip
    assert "warning: 1 job id(s) found in several journals or for several outputs, the newest of each shown: flaky" in (
        r.err
    )
    human = cli("report", runs.out)
    assert human.code == 1 and human.out == ""
    assert human.err.rstrip().endswith("2 done, 0 skipped, 1 failed")


def test_a_folders_contact_sheet_shows_every_job_with_thumbnails_cut_from_the_mp4s(cli, runs):
    thumbs = runs.out / "thumbs"
    from_frames = {p.name: np.asarray(Image.open(p), dtype=np.int16) for p in thumbs.iterdir()}  # the batch's
    shutil.rmtree(thumbs)  # as when the runs wrote elsewhere: cut again from the MP4s
    quiet = cli("report", runs.out, "--quiet")
    assert quiet.code == 1 and quiet.out == quiet.err == ""
    text = (runs.out / "index.html").read_text()
    assert "3 jobs: 2 done, 0 skipped, 1 failed · from 2 journals" in text
    assert text.count('<tr class="done"') == 2 and text.count('<tr class="failed"') == 1
    assert "the first shot" in text and 'href="first.mp4"' in text and 'href="late/flaky.mp4"' in text
    assert "E_IO: " in text and "wall" in text  # bad's error, from its journal line
    assert sorted(p.name for p in thumbs.iterdir()) == sorted(from_frames) == [
        "first-f0.jpg", "first-f8.jpg", "flaky-f0.jpg", "flaky-f8.jpg"]  # fmt: skip
    for name, frame in from_frames.items():
        assert f'src="thumbs/{name}"' in text
        decoded = np.asarray(Image.open(thumbs / name), dtype=np.int16)
        assert decoded.shape == frame.shape == (96, 64, 3)
        assert np.abs(decoded - frame).mean() < 12, name  # the same frame, through H.264 and back


def test_a_job_started_and_never_finished_fails_the_report(cli, tmp_path):
    """A run killed mid-job leaves a "started" line as the job's newest event: the report says so and exits 1."""
    with Journal(tmp_path / "out" / "ltx2-journal.jsonl") as journal:  # the batch's own writer
        journal.record("started", "killed", spec_hash="0123456789abcdef", output=str(tmp_path / "out" / "killed.mp4"))
    r = cli("report", tmp_path / "out", "--json")
    assert r.code == 1
    jobs, summary = _report(r)
    assert jobs == {"killed": {"id": "killed", "status": "unfinished", "output": str(tmp_path / "out" / "killed.mp4"),
                               "seconds": 0.0, "timings": {}}}  # fmt: skip
    assert summary["unfinished"] == 1 and summary["failed"] == 0
    assert '<tr class="unfinished"' in (tmp_path / "out" / "index.html").read_text()


def test_a_journal_line_reads_back_as_the_result_the_batch_printed():
    """A failure's line carries its code's hint (E_INTERNAL's): read back, it is not added twice."""
    failed = JobResult(
        "x", "failed", "/o/x.mp4", failure=Failure("E_INTERNAL", "unexpected KeyError: 'k'"), seconds=2.5
    )
    line = {"time": "2026-01-01T00:00:00Z", "event": "failed", "id": "x", "output": "/o/x.mp4", "seconds": 2.5,
            "code": failed.code, "error": failed.error}  # fmt: skip
    assert result_from_record(line).as_dict() == failed.as_dict()
    newer = result_from_record(line | {"code": "E_NEWER", "error": "a code this ltx2 does not know"})
    assert (newer.code, newer.error) == ("E_FAILED", "E_NEWER: a code this ltx2 does not know")


def test_nothing_to_report_is_a_usage_error(cli, tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "notes.json").write_text("{}")  # no MP4 beside it: not a sidecar
    r = cli("report", tmp_path / "empty")
    assert r.code == 2
    assert r.err.splitlines() == [
        "error: nothing to report under empty: no job in a journal (ltx2-journal*.jsonl) and no MP4 with its sidecar "
        "(NAME.mp4 beside NAME.json), in it or below it"
    ]
    r = cli("report", tmp_path / "missing")
    assert r.code == 2 and r.err.splitlines() == ["error: missing: no such folder"]


def test_outputs_prefix_is_the_folder_every_gs_output_shares():
    assert outputs_prefix(["gs://bkt/n/a.mp4", "gs://bkt/n/sub/c.mp4"]) == "gs://bkt/n/"
    assert outputs_prefix(["gs://bkt/nightly/a.mp4", "gs://bkt/nightly2/a.mp4"]) == "gs://bkt/"
    assert outputs_prefix(["gs://bkt/a.mp4", "/here/local.mp4"]) == "gs://bkt/"
    assert outputs_prefix(["/here/local.mp4"]) is None
    assert outputs_prefix(["gs://bkt1/x/a.mp4", "gs://bkt2/x/a.mp4"]) is None  # no one prefix


def test_a_gs_prefix_of_two_runs_reports_from_sidecars_and_published_journals(cli, tmp_path, gcs):
    """Two runs render to gs:// (the emulator) and publish their journals there; with the local copies gone, the
    report on the prefix has every job: done ones from the sidecars the batches uploaded, failed ones from the
    journals."""
    from google.cloud import storage

    bucket = storage.Client().bucket("ltx2-test")
    write_image(tmp_path / "face.png", (64, 96))
    jobs = [
        {"id": "first", "image": "face.png", "duration": 0.3},
        {"id": "flaky", "image": "gs://ltx2-test/inputs/late.png", "duration": 0.3},  # uploaded after run 1
        {"id": "bad", "image": "gs://ltx2-test/inputs/never.png", "duration": 0.3},
    ]
    for job in jobs:
        job["output"] = f"gs://ltx2-test/nightly/{job['id']}.mp4"
    stage = tmp_path / "stage"
    lines = _two_runs(
        tmp_path,
        stage,
        jobs,
        fix=lambda: bucket.blob("inputs/late.png").upload_from_filename(str(tmp_path / "face.png")),
        extra=("--cache-dir", tmp_path / "cache"),
    )
    for journal in sorted(stage.glob("ltx2-journal*.jsonl")):
        uri = publish_journal(journal, [j["output"] for j in jobs], Output("quiet"))
        assert uri == f"gs://ltx2-test/nightly/{journal.name}"
        assert bucket.blob(f"nightly/{journal.name}").download_as_bytes() == journal.read_bytes()
    shutil.rmtree(stage)  # nothing of the runs left on this machine

    r = cli("report", "gs://ltx2-test/nightly", "--json", "--sheet", "sheet")
    assert r.code == 1, r.err
    reported, summary = _report(r)
    assert reported == {job: {k: v for k, v in line.items() if k != "local"} for job, line in lines.items()}
    assert reported["flaky"]["uploaded"]["uri"] == "gs://ltx2-test/nightly/flaky.mp4"
    assert summary == {"summary": True, "jobs": 3, "done": 2, "skipped": 0, "failed": 1, "unfinished": 0,
                       "journals": 2, "sidecars": 2, "duplicates": 1}  # fmt: skip
    text = (tmp_path / "sheet" / "index.html").read_text()
    for job in ("first", "flaky"):
        assert f'href="https://storage.googleapis.com/ltx2-test/nightly/{job}.mp4"' in text
    assert "<img" not in text and "inputs/never.png" in text  # no thumbnails without --thumbnails; bad's error

    r = cli("report", "gs://ltx2-test/nightly/", "--json", "--sheet", "sheet", "--thumbnails")
    assert r.code == 1, r.err
    reported, _ = _report(r)
    for job in ("first", "flaky"):
        local = tmp_path / "sheet" / "ltx2-test" / "nightly" / f"{job}.mp4"
        assert reported[job]["local"] == str(local.absolute())
        with av.open(str(local)) as container:
            assert sum(1 for _ in container.decode(video=0)) == FRAMES
    copies = {p: p.stat().st_mtime_ns for p in (tmp_path / "sheet" / "ltx2-test").rglob("*.mp4")}
    assert cli("report", "gs://ltx2-test/nightly/", "--sheet", "sheet", "--thumbnails").code == 1
    assert {p: p.stat().st_mtime_ns for p in copies} == copies  # the same bytes are not downloaded again
    text = (tmp_path / "sheet" / "index.html").read_text()
    assert text.count("<img ") == 4 and all(
        (tmp_path / "sheet" / "thumbs" / f"{j}-f0.jpg").is_file() for j in ("first", "flaky")
    )

    for prefix, message in (
        ("gs://ltx2-test/nothing-here/", "nothing to report under gs://ltx2-test/nothing-here/"),
        ("gs://no-such-bucket/x", "gs://no-such-bucket/x: bucket 'no-such-bucket' not found"),
    ):
        r = cli("report", prefix)
        assert r.code == 2 and r.err.startswith(f"error: {message}"), r.err
