"""The sink seam (sinks.py): where an output goes is one class per URI scheme and one line in SINKS. A made-up
scheme, registered here, takes a whole job through the planner, the runner's delivery and resume."""

from __future__ import annotations

import doctest
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import write_manifest
from media import write_image

from ltx2cli.storage import sinks
from ltx2cli.storage.sinks import sidecar_path

TINY = ("--model", "tiny", "--json")


class Shelf(sinks.RemoteSink):
    """mem://shelf/object: files "uploaded" into a dict."""

    example = "mem://shelf/path"
    stored: dict[str, bytes] = {}

    def put(self) -> dict[str, Any]:
        self.stored[self.name] = self.local.read_bytes()
        self.stored[self.sidecar_name] = sidecar_path(self.local).read_bytes()
        return {"uri": self.name, "size": len(self.stored[self.name])}

    def stored_hash(self) -> str | None:
        side = self.stored.get(self.sidecar_name)
        return json.loads(side)["spec_hash"] if side and self.name in self.stored else None


@pytest.fixture
def shelf(monkeypatch):
    monkeypatch.setitem(sinks.SINKS, "mem", Shelf)
    monkeypatch.setattr(Shelf, "stored", {})
    return Shelf.stored


def test_the_module_docstring_registers_a_scheme():
    assert doctest.testmod(sinks).failed == 0


def test_a_registered_scheme_delivers_and_resumes_a_job(cli, tmp_path, shelf):
    write_image(tmp_path / "face.png", (64, 96))
    job = {"id": "a", "image": "face.png", "duration": 0.3, "resolution": "64x96", "output": "mem://shelf/c/{id}.mp4"}
    manifest = write_manifest(tmp_path / "jobs.yaml", [job])
    r = cli("batch", manifest, "-o", "out", *TINY)
    assert r.code == 0, r.err
    (result,) = [j for j in r.json_lines() if "status" in j]
    assert result["uploaded"] == {"uri": "mem://shelf/c/a.mp4", "size": len(shelf["mem://shelf/c/a.mp4"])}
    assert result["local"] == str(tmp_path / "out" / "shelf" / "c" / "a.mp4")  # staged under the output dir
    assert set(shelf) == {"mem://shelf/c/a.mp4", "mem://shelf/c/a.json"}
    assert "upload" in result["timings"]

    again = cli("batch", manifest, "-o", "out", *TINY)  # the journal's word: nothing is looked up
    assert [j["status"] for j in again.json_lines() if "status" in j] == ["skipped"]
    (tmp_path / "out" / "ltx2-journal.jsonl").unlink()
    once_more = cli("batch", manifest, "-o", "out", *TINY)  # no journal: the stored sidecar's hash decides
    assert [j["status"] for j in once_more.json_lines() if "status" in j] == ["skipped"]
    shelf.clear()
    (tmp_path / "out" / "ltx2-journal.jsonl").unlink()
    gone = cli("batch", manifest, "-o", "out", *TINY)
    assert [j["status"] for j in gone.json_lines() if "status" in j] == ["done"]


def test_an_unknown_scheme_names_every_kind_of_output(tmp_path, shelf):
    with pytest.raises(ValueError, match=r"^must be a local path or gs://bucket/path or mem://shelf/path, got 'x://a'"):
        sinks.output_name("x://a", tmp_path)
    with pytest.raises(ValueError, match="must look like mem://shelf/path"):
        sinks.output_name("mem://shelf", tmp_path)


@pytest.mark.parametrize(
    ("name", "local"),
    [
        ("/abs/clip.mp4", "/abs/clip.mp4"),
        ("gs://b/x/clip.mp4", "STAGING/b/x/clip.mp4"),
        ("gs://b/../../etc/clip.mp4", "STAGING/b/etc/clip.mp4"),  # stays inside the staging folder
    ],
)
def test_where_each_sink_writes_on_this_machine(tmp_path, name, local):
    assert sinks.sink_for(name, tmp_path).local == Path(local.replace("STAGING", str(tmp_path)))


def test_an_output_that_cannot_be_written_fails_before_its_render(cli, tmp_path):
    """A folder where the MP4 should be, or a file where a folder should be: the job fails in planning (E_IO,
    naming the path); the other job renders."""
    write_image(tmp_path / "face.png", (96, 64))
    (tmp_path / "taken.mp4").mkdir()
    (tmp_path / "blocker").write_text("a file")
    jobs = [{"id": i, "image": "face.png", "duration": 0.3, "resolution": "64x96", "output": out} for i, out in
            [("dir", "taken.mp4"), ("file", "blocker/x.mp4"), ("ok", "out/ok.mp4")]]  # fmt: skip
    manifest = write_manifest(tmp_path / "jobs.yaml", jobs)
    r = cli("validate", manifest)
    assert r.code == 1 and r.err.count("(E_IO: only this job would fail)") == 2, r.err
    r = cli("batch", manifest, *TINY)
    by_id = {j["id"]: j for j in r.json_lines() if "id" in j}
    assert r.code == 1 and by_id["ok"]["status"] == "done"
    assert "taken.mp4 is a folder" in by_id["dir"]["error"] and "blocker is a file" in by_id["file"]["error"]
    journal = [json.loads(line) for line in (tmp_path / "outputs" / "ltx2-journal.jsonl").read_text().splitlines()]
    assert {e["id"] for e in journal if e.get("event") == "started"} == {"ok"}, journal  # never rendered
