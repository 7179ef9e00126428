"""The world's failures stay with their job: a remote input that cannot be had fails that job alone (tiny model).

A 40-job batch over loopback HTTP in which four inputs cannot be had: one is not there (404), one server never
answers (--fetch-timeout), one URL names a private address that --public-only refuses, and one serves bytes that
are not an image. The private one is how a studio runs manifests whose URLs others wrote: --public-only (the RunPod
worker's policy) with its own media server let through by name (--allow-host); here the media server is the test's
loopback server, allowed as 127.0.0.1, and the refused URL reaches that same server as `localhost`, a name that
resolves to a loopback address (so the test needs no DNS, and shows the server never saw the request).
"""

from __future__ import annotations

import av
from conftest import write_manifest
from media import write_image
from servers import Routes, serve, silent

from ltx2cli.batch.journal import read_journal
from ltx2cli.errors import EXIT_FAILED, EXIT_INVALID

GOOD = 36
DEAD = {  # job id -> what its error line says
    "missing": "HTTP 404",
    "hangs": "timed out (connect 0.5 s, read 0.5 s)",
    "private": "refused: localhost is a private address",
    "garbled": "downloaded, but not an image Pillow can read",
}


def _results(r) -> dict[str, dict]:
    return {j["id"]: j for j in r.json_lines() if "status" in j}


def _summary(r) -> dict:
    (summary,) = [j for j in r.json_lines() if j.get("summary")]
    return summary


def test_dead_urls_fail_only_their_jobs_and_a_rerun_retries_only_them(cli, tmp_path):
    png = write_image(tmp_path / "face.png", (64, 96)).read_bytes()

    def image(h):
        h.send_body(png, "image/png")

    Routes.hits = {}
    Routes.routes = {f"/in/j{i:02}.png": image for i in range(GOOD)}
    Routes.routes["/in/private.png"] = image  # served, but only to a URL the policy lets through
    Routes.routes["/in/garbled.png"] = lambda h: h.send_body(b"<html>Service Unavailable</html>", "image/png")
    with serve(Routes) as url, silent() as never:
        port = url.rsplit(":", 1)[1]
        dead = {
            "missing": f"{url}/in/missing.png",
            "hangs": f"{never}/in/hangs.png",
            "private": f"http://localhost:{port}/in/private.png",
            "garbled": f"{url}/in/garbled.png",
        }
        jobs = [{"id": f"j{i:02}", "image": f"{url}/in/j{i:02}.png", "prompt": f"shot {i}"} for i in range(GOOD)]
        for n, (job_id, dead_url) in enumerate(dead.items()):  # spread among the good jobs, not at the end
            jobs.insert(5 + 10 * n, {"id": job_id, "image": dead_url})
        defaults = {"resolution": "64x96", "duration": 0.034}  # one frame: 40 renders take seconds
        manifest = write_manifest(tmp_path / "jobs.yaml", {"defaults": defaults, "jobs": jobs})
        batch = ("batch", manifest, "-o", "out", "--model", "tiny", "--json", "--cache-dir", tmp_path / "cache",
                 "--fetch-timeout", "0.5", "--public-only", "--allow-host", "127.0.0.1")  # fmt: skip

        strict = cli(*batch, "--strict")
        assert strict.code == EXIT_INVALID, strict.err
        assert not (tmp_path / "out").exists() and strict.out == ""  # nothing rendered, no journal either
        for job_id, words in DEAD.items():
            (line,) = [x for x in strict.err.splitlines() if f"job '{job_id}'" in x]
            assert line.startswith("error: jobs.yaml:") and f": job '{job_id}': image: {dead[job_id]}" in line, line
            assert words in line, line
        assert "/in/private.png" not in Routes.hits  # refused before connecting

        first = cli(*batch)
        assert first.code == EXIT_FAILED, first.err
        results = _results(first)
        assert [j for j in results if results[j]["status"] == "done"] == [f"j{i:02}" for i in range(GOOD)]
        for job_id, words in DEAD.items():
            assert (results[job_id]["status"], results[job_id]["code"]) == ("failed", "E_INPUT"), results[job_id]
            assert results[job_id]["error"].startswith(f"image: {dead[job_id]}: ") and words in results[job_id]["error"]
        assert _summary(first) | {"model_loads": 1} == {
            "summary": True, "jobs": 40, "done": GOOD, "skipped": 0, "failed": 4, "interrupted": False,
            "model_loads": 1,
        }  # fmt: skip
        out = tmp_path / "out"
        assert sorted(p.stem for p in out.glob("*.mp4")) == [f"j{i:02}" for i in range(GOOD)]
        for mp4 in out.glob("*.mp4"):
            with av.open(str(mp4)) as c:
                assert (c.streams.video[0].frames, c.streams.video[0].width) == (1, 64), mp4
        events = read_journal(out / "ltx2-journal.jsonl")
        failed = {e["id"]: e for e in events if e["event"] == "failed"}
        assert sorted(failed) == sorted(DEAD) and {e["code"] for e in failed.values()} == {"E_INPUT"}
        assert all(dead[i] in failed[i]["error"] for i in DEAD)
        assert not [e for e in events if e["event"] == "started" and e["id"] in DEAD]  # never sent to render
        sheet = (out / "index.html").read_text()
        assert sheet.count('<tr class="done"') == GOOD and sheet.count('<tr class="failed"') == 4
        assert "40 jobs: 36 done, 0 skipped, 4 failed" in sheet and sheet.count("E_INPUT: image: ") == 4
        mtimes = {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")}

        still = cli(*batch)  # nothing fixed: the done jobs are skipped, the dead ones fail again
        assert still.code == EXIT_FAILED, still.err
        assert {j: r["status"] for j, r in _results(still).items() if j in DEAD} == dict.fromkeys(DEAD, "failed")
        assert _summary(still)["skipped"] == GOOD and _summary(still)["model_loads"] == 0
        assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.mp4")} == mtimes

        # Fixed: the missing file is uploaded and the broken one replaced (same URLs); the manifest points the two
        # unreachable jobs at the media server.
        Routes.routes |= {"/in/missing.png": image, "/in/garbled.png": image, "/in/hangs.png": image}
        jobs = [{**j, "image": f"{url}/in/{j['id']}.png"} if j["id"] in ("hangs", "private") else j for j in jobs]
        write_manifest(manifest, {"defaults": defaults, "jobs": jobs})
        fixed = cli(*batch)
    assert fixed.code == 0, fixed.err
    statuses = {j: r["status"] for j, r in _results(fixed).items()}
    assert {j for j, s in statuses.items() if s == "done"} == set(DEAD)
    assert list(statuses.values()).count("skipped") == GOOD
    assert sorted(p.stem for p in out.glob("*.mp4")) == sorted([f"j{i:02}" for i in range(GOOD)] + list(DEAD))


def _served_face(tmp_path):
    png = write_image(tmp_path / "face.png", (64, 96)).read_bytes()
    Routes.hits = {}
    Routes.routes = {"/face.png": lambda h: h.send_body(png, "image/png")}
    return serve(Routes)


def test_a_dead_url_in_defaults_fails_every_job_that_uses_it(cli, tmp_path):
    with _served_face(tmp_path) as url:
        jobs = [{"id": "a"}, {"id": "b"}, {"id": "own", "image": f"{url}/face.png"}]
        defaults = {"image": f"{url}/gone.png", "duration": 0.034, "resolution": "64x96"}
        manifest = write_manifest(tmp_path / "jobs.yaml", {"defaults": defaults, "jobs": jobs})
        r = cli("validate", manifest, "--json", "--cache-dir", tmp_path / "cache")
    assert r.code == EXIT_FAILED, r.err
    assert [x.split(": image: ")[0] for x in r.err.splitlines() if "HTTP 404" in x] == [
        "error: jobs.yaml:2: job 'a'",  # the line of the default, once per job
        "error: jobs.yaml:2: job 'b'",
    ]
    assert [spec["id"] for spec in r.json_lines()] == ["own"] and "render the other 1 (exit 1" in r.err


def test_fail_fast_stops_at_a_job_whose_input_cannot_be_had(cli, tmp_path):
    with _served_face(tmp_path) as url:
        jobs = [{"id": "ok", "image": f"{url}/face.png"}, {"id": "dead", "image": f"{url}/gone.png"}]
        defaults = {"duration": 0.034, "resolution": "64x96"}
        manifest = write_manifest(tmp_path / "jobs.yaml", {"defaults": defaults, "jobs": jobs})
        r = cli("batch", manifest, "-o", "out", "--model", "tiny", "--json", "--cache-dir", tmp_path / "cache",
                "--fail-fast")  # fmt: skip
    assert r.code == EXIT_FAILED, r.err
    assert _results(r)["dead"]["code"] == "E_INPUT" and "ok" not in _results(r)  # known before any render
    assert _summary(r)["model_loads"] == 0 and not list((tmp_path / "out").glob("*.mp4"))
