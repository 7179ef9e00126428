"""A batch encodes every distinct prompt once, in one text-encoder phase before its first denoise, and keeps them
on disk: running it again encodes none (counted with forward hooks on the real tiny model)."""

from __future__ import annotations

import uuid

import numpy as np
import torch
from conftest import write_manifest
from media import write_image


def test_prompts_are_encoded_once_per_batch_and_before_any_denoise(cli, tmp_path, tiny_models):
    events: list[str] = []
    hooks = [
        tiny_models.text_encoder.register_forward_hook(lambda *_: events.append("encode")),
        tiny_models.transformer.register_forward_hook(lambda *_: events.append("denoise")),
    ]
    try:
        write_image(tmp_path / "face.png", (64, 96))
        texts = [f"a face, take {uuid.uuid4().hex}" for _ in range(2)]  # new to the prompt store
        jobs = [{"id": f"j{i}", "image": "face.png", "duration": 0.3, "prompt": texts[i % 2]} for i in range(4)]
        manifest = write_manifest(tmp_path / "jobs.yaml", {"defaults": {"resolution": "64x96"}, "jobs": jobs})
        r = cli("batch", manifest, "-o", "out", "--model", "tiny")
        assert r.code == 0, r.err
        assert events.count("encode") == 2 and "prompts: 2 encoded" in r.err
        last_encode = max(i for i, e in enumerate(events) if e == "encode")
        assert last_encode < events.index("denoise")  # both prompts before the first transformer forward
        events.clear()
        again = cli("batch", manifest, "-o", "out", "--model", "tiny", "--force")
        assert again.code == 0 and events.count("encode") == 0 and "prompts: 0 encoded" in again.err
        assert "2 already encoded" in again.err and events.count("denoise") > 0
    finally:
        for h in hooks:
            h.remove()


def test_a_prompt_longer_than_the_encoder_reads_is_said(cli, tmp_path):
    """Gemma reads 1024 tokens: the rest of a longer prompt would be dropped without a word."""
    write_image(tmp_path / "face.png", (64, 96))
    jobs = [{"id": "long", "image": "face.png", "duration": 0.3, "prompt": "a cat walks on the moon, " * 300},
            {"id": "short", "image": "face.png", "duration": 0.3, "prompt": "a cat walks on the moon"}]  # fmt: skip
    manifest = write_manifest(tmp_path / "jobs.yaml", {"defaults": {"resolution": "64x96"}, "jobs": jobs})
    r = cli("batch", manifest, "-o", "out", "--model", "tiny")
    assert r.code == 0, r.err
    warned = [line for line in r.err.splitlines() if "tokens" in line]
    assert warned == ["warning: long: the prompt is 7501 tokens; the text encoder reads the first 1024"], r.err


def test_a_prompt_from_the_store_renders_the_same_numbers_as_a_fresh_one(tmp_path, tiny_models):
    """safetensors maps the stored tensors at whatever offset the file's header leaves them, and an unaligned
    input takes other SIMD paths in the CPU matmuls (last-bit differences that reach the pixels). A prompt read
    back from the store must render exactly what the freshly encoded one rendered: a resumed batch is the same
    batch."""
    from test_windows import _spec

    from ltx2cli.engine.inputs import prepare_inputs
    from ltx2cli.engine.prompts import PromptStore
    from ltx2cli.engine.render import Renderer, prompt_of

    spec = _spec(tmp_path, duration=0.3, prompt=f"a face, take {uuid.uuid4().hex}")
    store = PromptStore("tiny-test", 64, tmp_path / "prompts")
    fresh = Renderer(tiny_models, max_sequence_length=64, store=store).render(spec, prepare_inputs(spec))
    stored = store.get(*prompt_of(spec))
    assert stored is not None and all(t.data_ptr() % 64 == 0 for t in (stored.video, stored.audio, stored.mask))
    again = Renderer(tiny_models, max_sequence_length=64, store=store).render(spec, prepare_inputs(spec))
    assert torch.equal(fresh.video_latents, again.video_latents) and torch.equal(
        fresh.audio_latents, again.audio_latents
    )
    assert np.array_equal(fresh.frames, again.frames)


def test_a_prompt_the_encoder_refuses_fails_its_job_alone(cli, tmp_path, monkeypatch):
    """The prompt phase runs for the whole batch before any render: one bad prompt must not stop the others."""
    from ltx2cli.engine.render import Renderer

    encode = Renderer._encode

    def refusing(self, text, negative):
        if "poison" in text:
            raise ValueError("the tokenizer cannot take this text")
        return encode(self, text, negative)

    monkeypatch.setattr(Renderer, "_encode", refusing)
    write_image(tmp_path / "face.png", (64, 96))
    jobs = [
        {"id": i, "image": "face.png", "duration": 0.3, "prompt": f"{i} {uuid.uuid4().hex}"} for i in ("a", "poison")
    ]
    manifest = write_manifest(tmp_path / "jobs.yaml", {"defaults": {"resolution": "64x96"}, "jobs": jobs})
    r = cli("batch", manifest, "-o", "out", "--model", "tiny", "--json")
    by_id = {j["id"]: j for j in r.json_lines() if "id" in j}
    assert r.code == 1 and by_id["a"]["status"] == "done", r.err
    assert by_id["poison"]["status"] == "failed" and "cannot take this text" in by_id["poison"]["error"]
