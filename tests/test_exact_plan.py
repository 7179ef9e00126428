"""The plan is exact: a RenderSpec has every frame count and size; what is not known yet is a SpecPreview."""

from __future__ import annotations

import pytest
from conftest import write_manifest
from pydantic import ValidationError
from servers import Routes, serve

from ltx2cli.errors import EXIT_FAILED
from ltx2cli.jobs.spec import RenderSpec, SpecPreview
from ltx2cli.plan.resolve import plan_manifests

EXACT = ("duration", "output_frames", "num_frames", "latent_frames", "audio_latent_frames", "width", "height")


def _local_spec(media, tmp_path) -> RenderSpec:
    m = write_manifest(tmp_path / "jobs.jsonl", [{"id": "a", "image": str(media / "face.png"), "duration": 1}])
    (spec,), problems = plan_manifests([m], output_dir=tmp_path / "out")
    assert not problems and isinstance(spec, RenderSpec)
    return spec


@pytest.mark.parametrize("name", EXACT)
def test_a_render_spec_needs_every_size_and_frame_count(media, tmp_path, name):
    data = _local_spec(media, tmp_path).model_dump()
    with pytest.raises(ValidationError, match=name):
        RenderSpec(**(data | {name: None}))
    assert getattr(SpecPreview(**(data | {name: None})), name) is None  # a preview may leave it open


def test_a_render_spec_needs_every_keyframe_frame(media, tmp_path):
    data = _local_spec(media, tmp_path).model_dump()
    data["keyframes"][0]["frame"] = None
    with pytest.raises(ValidationError, match="frame"):
        RenderSpec(**data)


def test_a_complete_preview_dumps_and_hashes_as_its_render_spec(media, tmp_path):
    spec = _local_spec(media, tmp_path)
    preview = SpecPreview(**spec.model_dump())
    assert preview.model_dump(mode="json") == spec.model_dump(mode="json")
    assert list(preview.model_dump()) == list(spec.model_dump())  # same order: validate --json unchanged
    assert preview.spec_hash() == spec.spec_hash()


def test_no_fetch_previews_a_remote_image_job(cli, tmp_path):
    m = write_manifest(
        tmp_path / "jobs.jsonl", [{"id": "a", "image": "https://example.invalid/face.png", "duration": 1}]
    )
    (plan,), problems = plan_manifests([m], output_dir=tmp_path / "out")  # no cache: nothing fetched
    assert not problems and type(plan) is SpecPreview and (plan.width, plan.height) == (None, None)
    assert plan.num_frames is not None  # what is known is planned
    r = cli("validate", m, "--no-fetch")
    assert r.code == 0, r.err
    (row,) = [line for line in r.out.splitlines() if "from image" in line]  # the plan table's size column
    assert row.lstrip("│┃ ").startswith("a "), row


def test_batch_fails_an_unreachable_input_without_a_render_spec(cli, tmp_path, monkeypatch):
    from ltx2cli.commands import batch

    seen: list = []
    run_jobs = batch.run_jobs
    monkeypatch.setattr(batch, "run_jobs", lambda specs, *a: seen.extend(specs) or run_jobs(specs, *a))
    Routes.hits, Routes.routes = {}, {}
    with serve(Routes) as url:
        m = write_manifest(tmp_path / "jobs.jsonl", [{"id": "dead", "image": f"{url}/missing.png", "duration": 1}])
        r = cli("batch", m, "--json", "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(tmp_path / "out"))
    assert r.code == EXIT_FAILED, r.err
    (result,) = [j for j in r.json_lines() if "status" in j]
    assert (result["id"], result["status"], result["code"]) == ("dead", "failed", "E_INPUT")
    assert "HTTP 404" in result["error"]
    ((summary,),) = [[j for j in r.json_lines() if j.get("summary")]]
    assert summary["model_loads"] == 0
    (plan,) = seen
    assert plan.id == "dead" and not isinstance(plan, RenderSpec)
