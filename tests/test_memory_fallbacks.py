"""Out of GPU memory mid-render (engine/memory.py): injected on the CPU by making the real call raise torch's own
OutOfMemoryError, as CUDA's allocator would."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import write_manifest
from media import write_image

from ltx2cli.engine.inputs import prepare_inputs
from ltx2cli.engine.memory.retry import decode_with_fallback, denoise_with_fallback
from ltx2cli.engine.render import Renderer
from ltx2cli.plan.resolve import plan_manifests
from ltx2cli.synthetic.random_models import random_models


def _oom_when_untiled(vae, calls: list[str]):
    real = vae.decode

    def decode(*args, **kwargs):
        calls.append("tiled" if vae.use_tiling else "whole")
        if not vae.use_tiling:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 16.00 GiB (injected)")
        return real(*args, **kwargs)

    return decode


@pytest.fixture
def fresh_tiny():
    from ltx2cli.synthetic.tiny import tiny_model_dir

    return random_models(tiny_model_dir(), device="cpu", dtype=torch.float32, seed=7)


def _spec(tmp_path):
    write_image(tmp_path / "a.png", (64, 96))
    job = {"id": "j", "image": "a.png", "fps": 24, "resolution": "64x96", "preset": "fast", "seed": 3,
           "duration": 8 / 24}  # fmt: skip
    specs, problems = plan_manifests([write_manifest(tmp_path / "jobs.yaml", [job])])
    assert not problems, problems
    return specs[0].model_copy(update={"loras": []})


def test_a_decode_out_of_memory_is_decoded_again_in_tiles(tmp_path, fresh_tiny, monkeypatch):
    spec = _spec(tmp_path)
    vae = fresh_tiny.vae
    vae.enable_tiling()
    tiled = Renderer(fresh_tiny, max_sequence_length=64).render(spec, prepare_inputs(spec))
    vae.disable_tiling()
    calls: list[str] = []
    monkeypatch.setattr(vae, "decode", _oom_when_untiled(vae, calls))
    out = Renderer(fresh_tiny, max_sequence_length=64).render(spec, prepare_inputs(spec))
    assert calls == ["whole", "tiled"] and not vae.use_tiling  # tiling only for the retry
    assert out.memory_fallbacks == ["video decode ran out of GPU memory whole; decoded in tiles"]
    assert np.array_equal(out.frames, tiled.frames)


def test_a_second_out_of_memory_fails_that_job_alone(cli, tmp_path, tiny_models, monkeypatch):
    """The tiled retry runs out of memory too: E_OOM for that job; the next job renders; the sidecar of a job that
    needed the tiled retry says so."""
    real = tiny_models.vae.decode

    def decode(latent, *args, **kwargs):
        if latent.shape[2] > 2:  # the long job's latents: out of memory, tiled or not
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        if not tiny_models.vae.use_tiling:  # the short job: only the whole decode runs out
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(latent, *args, **kwargs)

    monkeypatch.setattr(tiny_models.vae, "decode", decode)
    write_image(tmp_path / "face.png", (64, 96))
    jobs = [{"id": "long", "image": "face.png", "duration": 1.2}, {"id": "short", "image": "face.png", "duration": 0.3}]
    manifest = write_manifest(tmp_path / "jobs.yaml", {"defaults": {"resolution": "64x96"}, "jobs": jobs})
    r = cli("batch", manifest, "-o", "out", "--model", "tiny", "--json")
    by_id = {j["id"]: j for j in r.json_lines() if "status" in j}
    assert r.code == 1 and by_id["long"]["status"] == "failed" and by_id["long"]["code"] == "E_OOM"
    assert by_id["short"]["status"] == "done"
    sidecar = json.loads((tmp_path / "out" / "short.json").read_text())
    assert sidecar["memory_fallbacks"] == ["video decode ran out of GPU memory whole; decoded in tiles"]
    assert sidecar["gpu_peak_gib"] is None  # measured on a GPU only


class _Gpu:
    """What denoise_with_fallback asks of the models: can Gemma leave the GPU, and moving it; a transformer whose
    feed-forwards already run in chunks (the last lever, tested on the tiny model in test_residency.py)."""

    def __init__(self, offloadable: bool):
        from types import SimpleNamespace

        from ltx2cli.engine.memory.ffn_chunks import chunk_feed_forwards
        from ltx2cli.engine.memory.residency import FFN_CHUNKS

        self.text_encoder_offloadable, self.moved = offloadable, 0
        block = SimpleNamespace(ff=torch.nn.Identity(), audio_ff=torch.nn.Identity())
        self.transformer = SimpleNamespace(transformer_blocks=[block])
        chunk_feed_forwards(self.transformer, FFN_CHUNKS)

    def offload_text_encoder(self) -> None:
        self.moved += 1
        self.text_encoder_offloadable = False


def test_a_denoise_out_of_memory_retries_once_with_gemma_off_the_gpu():
    attempts: list[int] = []

    def denoise() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise torch.OutOfMemoryError("injected")
        return "latents"

    gpu, notes = _Gpu(offloadable=True), []
    assert denoise_with_fallback(gpu, denoise, notes) == "latents"
    assert len(attempts) == 2 and gpu.moved == 1 and "text encoder moved to the CPU" in notes[0]

    def always() -> str:
        raise torch.OutOfMemoryError("injected")

    with pytest.raises(torch.OutOfMemoryError):
        denoise_with_fallback(_Gpu(offloadable=True), always, [])  # one retry only
    with pytest.raises(torch.OutOfMemoryError):
        denoise_with_fallback(_Gpu(offloadable=False), always, [])  # nothing to give up: no retry
    with pytest.raises(torch.OutOfMemoryError):  # a tiled VAE has no cheaper decode to fall back to
        decode_with_fallback(type("Vae", (), {"use_tiling": True})(), always, [])
