"""A batch encodes every distinct prompt once, in one text-encoder phase before its first denoise, and keeps them
on disk: running it again encodes none (counted with forward hooks on the real tiny model)."""

from __future__ import annotations

import uuid

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
