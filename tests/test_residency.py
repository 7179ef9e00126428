"""Renders following a memory plan (engine/residency.py) on the tiny model: which component is on the "GPU" in
each phase, recorded from the real `.to()` calls; prompts encoded once per batch with Gemma moved in once; tiled
decode against whole; the denoise's out-of-memory retry with chunked feed-forwards; --vram end to end."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from conftest import write_manifest
from media import write_image

from ltx2cli.engine.inputs import prepare_inputs
from ltx2cli.engine.memory import placement
from ltx2cli.engine.memory import residency as res
from ltx2cli.engine.memory.estimate import folder_configs
from ltx2cli.engine.memory.ffn_chunks import ffn_chunks
from ltx2cli.engine.memory.retry import tiled_vae
from ltx2cli.engine.render import Renderer
from ltx2cli.plan.resolve import plan_manifests
from ltx2cli.synthetic.random_models import random_models


@pytest.fixture
def fresh_tiny():
    from ltx2cli.synthetic.tiny import tiny_model_dir

    return random_models(tiny_model_dir(), device="cpu", dtype=torch.float32, seed=7)


def _specs(tmp_path, n: int = 1, **job):
    write_image(tmp_path / "a.png", (64, 96))
    jobs = [
        {"id": f"j{i}", "image": "a.png", "fps": 24, "resolution": "64x96", "preset": "fast", "seed": 3,
         "duration": 8 / 24, "prompt": f"a face {i}"} | job
        for i in range(n)
    ]  # fmt: skip
    specs, problems = plan_manifests([write_manifest(tmp_path / "jobs.yaml", jobs)])
    assert not problems, problems
    return [s.model_copy(update={"loras": []}) for s in specs]


class Recorder:
    """Logs (component, "gpu" | "host") for every real `.to()` a plan makes; on this CPU-only machine the models'
    device object stands for the GPU and residency.HOST for the CPU memory components wait in."""

    def __init__(self, models):
        self.calls: list[tuple[str, str]] = []
        for name, module in placement.modules(models).items():
            module.to = self._wrap(name, module.to, models.device)

    def _wrap(self, name, to, gpu):
        def recorded(*args, **kwargs):
            self.calls.append((name, "gpu" if args and args[0] is gpu else "host"))
            return to(*args, **kwargs)

        return recorded


def test_the_24_gb_plan_moves_each_component_at_each_phase(tmp_path, fresh_tiny, monkeypatch):
    models = fresh_tiny
    plan = res.PLANS[-1]
    placement.apply(models, plan)
    assert models.fp8_blocks and ffn_chunks(models.transformer) == 1
    recorder, seen = Recorder(models), []
    real_place = placement.place

    def place(m, phase):
        real_place(m, phase)
        seen.append((phase, {n for n, w in m.where.items() if w == "gpu"}))

    monkeypatch.setattr("ltx2cli.engine.render.place", place)
    monkeypatch.setattr(placement, "place", place)
    spec = _specs(tmp_path)[0]
    out = Renderer(models, max_sequence_length=64).render(spec, prepare_inputs(spec))
    assert out.frames.shape[0] == spec.output_frames
    phases = dict(seen)
    assert phases["prompt"] == {"text_encoder", "connectors"}
    assert phases["condition"] == {"transformer", "vae", "audio_vae", "vocoder"}
    assert phases["denoise"] == {"transformer", "latent_upsampler"}  # the upsampler runs between two stages
    assert phases["decode"] == {"vae", "audio_vae", "vocoder"}
    # every move is a real .to(), made only when a component changes place, the leaving ones first. Everything
    # loaded on the device: the prompt phase only sends the others out.
    prompt_leavers = {(c, "host") for c in placement.modules(models)} - {
        ("text_encoder", "host"),
        ("connectors", "host"),
    }
    assert set(recorder.calls[: len(prompt_leavers)]) == prompt_leavers
    first_in = next(i for i, (_, where) in enumerate(recorder.calls) if where == "gpu")
    assert set(recorder.calls[len(prompt_leavers) : first_in]) == {("text_encoder", "host"), ("connectors", "host")}
    assert [w for c, w in recorder.calls if c == "transformer"] == ["host", "gpu", "host"]  # prompts, back, decode
    assert [w for c, w in recorder.calls if c == "text_encoder"] == ["host"]  # out after the prompt phase


def test_a_batch_brings_gemma_to_the_gpu_once(tmp_path, fresh_tiny):
    models = fresh_tiny
    placement.apply(models, res.PLANS[1])  # the 48-GB plan: Gemma on the GPU for the prompt phase only
    recorder = Recorder(models)
    forwards = []
    models.text_encoder.register_forward_hook(lambda *_: forwards.append(1))
    specs = _specs(tmp_path, 3)
    renderer = Renderer(models, max_sequence_length=64)
    from ltx2cli.engine.render import prompt_of

    assert renderer.encode_prompts([prompt_of(s) for s in specs]) == 3
    for spec in specs:
        renderer.render(spec, prepare_inputs(spec))
    assert len(forwards) == 3  # one encode per distinct prompt, all in the prompt phase
    assert recorder.calls.count(("text_encoder", "gpu")) == 0  # it loaded there; it leaves once and stays out
    assert recorder.calls.count(("text_encoder", "host")) == 1


def test_tiled_decode_matches_whole_within_tolerance(tmp_path, fresh_tiny):
    """Tiles in space and time blend at their seams: on the tiny VAE (random weights, 5 latent frames of 8x6, tiles
    of 128 px and 16 frames) the frames differ from a whole decode by less than 0.05 mean and 0.5 max ([0, 1])."""
    from ltx2cli.engine import latents as lat

    models = fresh_tiny
    vae = models.vae
    grid = lat.Grid(33, 256, 192, 24, 35)
    tokens = torch.randn(
        1, grid.video_tokens, models.transformer.config.in_channels, generator=torch.Generator().manual_seed(1)
    )
    whole = lat.decode_video(models, tokens, grid)
    vae.tile_sample_min_height = vae.tile_sample_min_width = 128
    vae.tile_sample_stride_height = vae.tile_sample_stride_width = 96
    vae.tile_sample_min_num_frames, vae.tile_sample_stride_num_frames = 16, 8
    with tiled_vae(vae):
        tiled = lat.decode_video(models, tokens, grid)
    diff = (whole - tiled).abs()
    assert whole.shape == tiled.shape and diff.max() > 0  # really tiled
    assert diff.mean() < 0.05 and diff.max() < 0.5, (float(diff.mean()), float(diff.max()))


def test_denoise_out_of_memory_retries_with_chunked_ffns_then_fails_alone(tmp_path, fresh_tiny, monkeypatch):
    """On this CPU Gemma cannot move off a GPU, so the next lever is chunking the feed-forwards; it changes no
    number. A second out-of-memory is the job's E_OOM."""
    from ltx2cli.engine import sampler

    models = fresh_tiny
    spec = _specs(tmp_path)[0]
    clean = Renderer(models, max_sequence_length=64).render(spec, prepare_inputs(spec))
    real, calls = sampler.sample, []

    def sample(*args, **kwargs):
        calls.append(ffn_chunks(models.transformer))
        if len(calls) == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr("ltx2cli.engine.render.sample", sample)
    out = Renderer(models, max_sequence_length=64).render(spec, prepare_inputs(spec))
    assert calls == [1, res.FFN_CHUNKS]
    assert out.memory_fallbacks == [
        f"denoising ran out of GPU memory; retried with the feed-forwards in {res.FFN_CHUNKS} token chunks"
    ]
    assert_same_frames_but_gemm_rounding(out.frames, clean.frames)

    def always(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    monkeypatch.setattr("ltx2cli.engine.render.sample", always)
    with pytest.raises(torch.OutOfMemoryError):
        Renderer(models, max_sequence_length=64).render(spec, prepare_inputs(spec))


def assert_same_frames_but_gemm_rounding(frames: np.ndarray, expected: np.ndarray) -> None:
    """uint8 frames of one render with its FFNs in token chunks and whole. A GEMM over fewer rows may round a last
    bit differently (MKL and oneDNN pick kernels by row count and CPU: bit-equal on an AVX2 EPYC, not on an AVX-512
    Xeon); such a difference reaches the frames only where a value crosses a rounding boundary of the uint8
    conversion: one level, at a few pixels (every FFN output perturbed by 2^-16 relative moved 1 of 147,456 values
    of this render by 1). More than that would be chunking changing the numbers."""
    diff = np.abs(frames.astype(np.int16) - expected.astype(np.int16))
    assert frames.shape == expected.shape and diff.max() <= 1 and np.mean(diff > 0) < 1e-3, (diff.max(), diff.mean())


def test_vram_plans_a_batch_and_records_it(cli, tmp_path):
    write_image(tmp_path / "face.png", (64, 96))
    jobs = [{"id": "a", "image": "face.png", "duration": 0.3}]
    manifest = write_manifest(tmp_path / "jobs.yaml", {"defaults": {"resolution": "64x96"}, "jobs": jobs})
    r = cli("batch", manifest, "-o", "out", "--model", "tiny", "--vram", "80", "--json")
    assert r.code == 0, r.err
    summary = next(j for j in r.json_lines() if j.get("summary"))
    assert summary["memory_plan"]["plan"] == "80 GB" and summary["memory_plan"]["budget_gib"] == 73.6
    sidecar = json.loads((tmp_path / "out" / "a.json").read_text())
    assert sidecar["memory_plan"]["plan"] == "80 GB" and sidecar["memory_plan"]["estimated_peak_gib"] > 0
    assert "memory plan 80 GB" in r.err


def test_a_job_no_plan_fits_is_refused_before_rendering(cli, tmp_path):
    """Full-size configs (a folder without weights is enough to plan; it would fail to load later) and a
    20-s job with CFG (two rows per forward) in one window on a 24-GB card: refused with the job, the field and the length that fits, exit 2."""
    from pathlib import Path

    ref = Path(__file__).resolve().parents[1] / "configs" / "reference" / "LTX-2"
    write_image(tmp_path / "face.png", (768, 512))
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "guided.yaml").write_text(
        "steps: 30\nguidance: {cfg: 3.0}\nresolution: 768x512\nwindow_seconds: 20\n"
    )
    jobs = [{"id": "long", "image": "face.png", "duration": 20, "preset": "guided"}]
    manifest = write_manifest(tmp_path / "jobs.yaml", {"jobs": jobs})
    r = cli("batch", manifest, "-o", "out", "--model", str(ref), "--vram", "24", "--presets-dir", "presets")
    assert r.code == 2 and not (tmp_path / "out" / "long.mp4").exists()
    err = r.err.replace("\n", " ")
    assert "long" in err and "duration" in err and "GiB of GPU memory" in err and "s fits" in err


def test_plan_fields_are_applied_once(fresh_tiny):
    placement.apply(fresh_tiny, replace(res.PLANS[0], ffn_chunks=res.FFN_CHUNKS))
    assert ffn_chunks(fresh_tiny.transformer) == res.FFN_CHUNKS and not fresh_tiny.fp8_blocks
    assert set(fresh_tiny.where.values()) == {"gpu"}  # loaded on the device: nothing moved yet


def test_streamed_blocks_change_no_number_and_stay_in_host_memory(tmp_path, fresh_tiny):
    """The 24-GB plan streaming the last transformer block: each forward copies it in (counted) and points it back
    at its host tensors after; the frames equal the same plan without streaming; moving the transformer between
    phases never moves the streamed block."""
    spec = _specs(tmp_path)[0]
    plain = random_models(fresh_tiny.path, device="cpu", dtype=torch.float32, seed=7)
    placement.apply(plain, res.PLANS[-1])
    expected = Renderer(plain, max_sequence_length=64).render(spec, prepare_inputs(spec))
    placement.apply(fresh_tiny, replace(res.PLANS[-1], streamed_blocks=1))
    streamed = fresh_tiny.streamed
    block = fresh_tiny.transformer.transformer_blocks[-1]
    moved = []
    block.to = lambda *a, **k: moved.append(a)  # place() must never move it
    out = Renderer(fresh_tiny, max_sequence_length=64).render(spec, prepare_inputs(spec))
    assert np.array_equal(out.frames, expected.frames)
    steps = len([s for s in spec.sigmas if s > 0])
    assert streamed.copies == steps and not moved
    host = dict(streamed.host[id(block)])
    assert all(t.data.data_ptr() == h.data_ptr() for t, h in streamed.host[id(block)]) and host


def test_a_worker_moves_to_a_leaner_plan_for_a_request_that_needs_it_and_refuses_one_none_fits(tmp_path, fresh_tiny):
    """The RunPod worker's per-request check (residency.fit_request) against full-size LTX-2 on a 24-GB card,
    applied to the tiny models: a 4-s job keeps the start plan, a 10-s one moves the models to a streaming plan
    (never back), a 20-s CFG job is refused with the length that fits."""
    from pathlib import Path

    room = res.Budget(folder_configs(Path(__file__).resolve().parents[1] / "configs" / "reference" / "LTX-2"), 24)
    write_image(tmp_path / "face.png", (768, 512))
    (tmp_path / "presets").mkdir()
    (tmp_path / "presets" / "plain.yaml").write_text("steps: 8\nresolution: 768x512\n")
    (tmp_path / "presets" / "guided.yaml").write_text(
        "steps: 30\nguidance: {cfg: 3.0}\nresolution: 768x512\nwindow_seconds: 20\n"
    )
    jobs = [
        {"id": "four", "image": "face.png", "duration": 4, "preset": "plain"},  # 5 s streams (FP8's temporaries)
        {"id": "ten", "image": "face.png", "duration": 10, "preset": "plain"},
        {"id": "twenty", "image": "face.png", "duration": 20, "preset": "guided"},
    ]
    from ltx2cli.plan.resolve import plan_manifests

    specs, problems = plan_manifests(
        [write_manifest(tmp_path / "jobs.yaml", jobs)], presets_dirs=[tmp_path / "presets"]
    )
    assert not problems, problems
    placement.apply(fresh_tiny, res.PLANS[-1])
    four, why = res.fit_request(room, fresh_tiny, specs[0])
    assert why is None and four.plan.name == "24" and not four.plan.streamed_blocks and fresh_tiny.streamed is None
    ten, why = res.fit_request(room, fresh_tiny, specs[1])
    assert why is None and ten.plan.streamed_blocks > 0 and fresh_tiny.plan == ten.plan and fresh_tiny.streamed
    again, _ = res.fit_request(room, fresh_tiny, specs[0])
    assert again.plan == ten.plan  # never back to a richer plan: that would mean reloading
    none, why = res.fit_request(room, fresh_tiny, specs[2])
    assert none is None and "24 GiB under any plan" in why and "s fits at 768x512" in why


def test_validate_shows_each_jobs_memory_plan(cli, tmp_path):
    write_image(tmp_path / "face.png", (64, 96))
    jobs = [{"id": "a", "image": "face.png", "duration": 0.3, "resolution": "64x96"}]
    manifest = write_manifest(tmp_path / "jobs.yaml", {"jobs": jobs})
    r = cli("validate", manifest, "--model", "tiny", "--vram", "24", "--json")
    job = next(j for j in r.json_lines() if j.get("id") == "a")
    assert r.code == 0 and job["memory"]["plan"] == "80 GB" and job["memory"]["budget_gib"] == 22.08
    plain = cli("validate", manifest, "--json")  # no model, no GPU: nothing to plan for
    assert "memory" not in next(j for j in plain.json_lines() if j.get("id") == "a")
    table = cli("validate", manifest, "--model", "tiny", "--vram", "24")  # and in the table people read
    row = next(line for line in table.out.splitlines() if line.startswith("│ a "))
    assert r"80 GB, ~" in row and "GiB" in row, table.out
    assert "memory" not in cli("validate", manifest).out
