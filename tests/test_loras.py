"""LoRAs on the tiny model, on both paths (peft on bf16-style weights; forward hooks on FP8 blocks): every layer of a
LoRA finds its module whatever else was done to the model (feed-forwards chunked before or after the LoRAs load,
blocks compiled), a layer that finds none is refused, and a LoRA on the text connectors is accepted and applied."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_job_spec, write_manifest
from media import write_image
from safetensors.torch import save_file

from ltx2cli.engine.inputs import prepare_inputs
from ltx2cli.engine.memory.ffn_chunks import FFN_CHUNKS, chunk_feed_forwards, ffn_chunks
from ltx2cli.engine.models.compile import compile_blocks
from ltx2cli.engine.render import Renderer, prompt_of
from ltx2cli.errors import ModelError
from ltx2cli.jobs.job import LoraRef
from ltx2cli.synthetic.random_models import random_models
from ltx2cli.synthetic.tiny import lora_tensors, tiny_model_dir
from ltx2cli.weights.inspect import inspect_path

# Relative L2 of the final video latents, FFNs in FFN_CHUNKS token chunks vs whole, the same LoRAs on: a GEMM over
# fewer rows rounds differently (measured 2.5e-8), and FP8 blocks scale each chunk's activations by the chunk's own
# maximum (measured 7.9e-5). A LoRA whose FFN layers are lost moves them by ~1e-2.
CHUNKED_TOLERANCE = {"bf16": 1e-6, "fp8": 1e-3}
DISTILLED = "ltx-2-19b-distilled-lora-384"  # the tiny model's: attention projections and ff / audio_ff Linears


@pytest.fixture(scope="module")
def tiny_dir(_model_cache):
    return tiny_model_dir()


@pytest.fixture(scope="module")
def spec(tmp_path_factory, tiny_dir):
    """A two-step 9-frame fast-preset job with the tiny distilled LoRA at full strength."""
    lora = LoraRef(path=str(tiny_dir / "loras" / f"{DISTILLED}.safetensors"))
    return tiny_job_spec(tmp_path_factory.mktemp("loras-spec")).model_copy(update={"loras": [lora], "steps": 2})


def _fresh(tiny_dir: Path, precision: str):
    """Random tiny weights. "bf16": the blocks in the compute dtype (float32 on this CPU), LoRAs by peft; "fp8":
    float8 block Linears, LoRAs by forward hooks."""
    weights = "fp8" if precision == "fp8" else None
    models = random_models(tiny_dir, device="cpu", dtype=torch.float32, seed=7, weights=weights)
    assert models.fp8_blocks == (precision == "fp8")
    return models


def _latents(renderer: Renderer, spec) -> torch.Tensor:
    return renderer.render(spec, prepare_inputs(spec)).video_latents


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("precision", ["bf16", "fp8"])
def test_a_lora_on_attention_and_ffns_renders_the_same_with_the_ffns_chunked(tiny_dir, spec, precision):
    """Chunking may come after the LoRAs loaded (an out-of-memory retry) or before (a plan chunks at load, the
    LoRAs load with the first job): either way the LoRA's ff / audio_ff layers apply. On bf16 the blocks are
    compiled too, with peft's Linears inside. Unchunking gives back the whole-FFN render bit for bit."""
    whole_first = _fresh(tiny_dir, precision)
    whole = _latents(Renderer(whole_first, max_sequence_length=64), spec)
    chunk_feed_forwards(whole_first.transformer, FFN_CHUNKS)  # after the LoRAs loaded
    chunked_after = _latents(Renderer(whole_first, max_sequence_length=64), spec)

    chunked_first = _fresh(tiny_dir, precision)
    if precision == "bf16":
        compile_blocks(chunked_first, backend="eager")
    chunk_feed_forwards(chunked_first.transformer, FFN_CHUNKS)  # before the LoRAs load
    chunked_before = _latents(Renderer(chunked_first, max_sequence_length=64), spec)
    chunk_feed_forwards(chunked_first.transformer, 1)
    assert ffn_chunks(chunked_first.transformer) == 1
    unchunked = _latents(Renderer(chunked_first, max_sequence_length=64), spec)

    tolerance = CHUNKED_TOLERANCE[precision]
    assert _rel(chunked_after, whole) < tolerance, _rel(chunked_after, whole)
    assert _rel(chunked_before, whole) < tolerance, _rel(chunked_before, whole)
    assert torch.equal(unchunked, whole)


def _write_lora(path: Path, models, layers: dict[str, str]) -> Path:
    """A LoRA file: {key stem in the file: the `<component>.<name>` of a Linear of `models` with its shape}."""
    roots = {"transformer": models.transformer, "connectors": models.connectors}
    linears = {stem: roots[m.split(".", 1)[0]].get_submodule(m.split(".", 1)[1]) for stem, m in layers.items()}
    save_file(lora_tensors(linears, 4, torch.Generator().manual_seed(5)), path)
    return path


CONNECTOR_LAYERS = {  # ltx-core's names in a LoRA file -> the tiny model's module
    "text_embedding_projection.aggregate_embed": "connectors.text_proj_in",
    "diffusion_model.video_embeddings_connector.transformer_1d_blocks.0.attn1.to_q": (
        "connectors.video_connector.transformer_blocks.0.attn1.to_q"
    ),
    "diffusion_model.audio_embeddings_connector.transformer_1d_blocks.1.ff.net.2": (
        "connectors.audio_connector.transformer_blocks.1.ff.net.2"
    ),
}


@pytest.mark.parametrize("precision", ["bf16", "fp8"])
def test_a_lora_on_the_text_connectors_changes_the_render(tmp_path, tiny_dir, spec, precision):
    """Its layers adapt the connectors (not the transformer), which run when a prompt is encoded: the prompt is
    encoded again with the LoRA on, and without it for a job without it (the same renderer, the same text)."""
    models = _fresh(tiny_dir, precision)
    lora = _write_lora(tmp_path / "connector-style.safetensors", models, CONNECTOR_LAYERS)
    plain, styled = spec.model_copy(update={"loras": []}), spec.model_copy(update={"loras": [LoraRef(path=str(lora))]})
    renderer = Renderer(models, max_sequence_length=64)
    before = _latents(renderer, plain)
    with_lora = _latents(renderer, styled)
    after = _latents(renderer, plain)
    assert renderer.encoded == 2  # the text once plain, once through the LoRA's connectors
    video_embeds = {s is styled: renderer.prompt(*prompt_of(s), s.loras).video for s in (plain, styled)}  # kept
    assert _rel(video_embeds[True], video_embeds[False]) > 0.05, _rel(video_embeds[True], video_embeds[False])
    assert not torch.equal(with_lora, before)  # a small change: the random tiny transformer barely reads its prompt
    assert torch.equal(after, before)
    assert renderer.encode_prompts([(*prompt_of(s), tuple(s.loras)) for s in (plain, styled)]) == 0  # both kept


def test_a_lora_on_the_text_connectors_passes_inspect_and_validation(cli, tmp_path, tiny_dir):
    models = random_models(tiny_dir, device="cpu", dtype=torch.float32, seed=7)
    _write_lora(tmp_path / "connector-style.safetensors", models, CONNECTOR_LAYERS)
    report = inspect_path(tmp_path / "connector-style.safetensors")
    assert report["kind"] == "LoRA" and report["problems"] == [], report
    manifest = _lora_manifest(tmp_path, "connector-style.safetensors")
    r = cli("validate", manifest, "--model", "tiny")
    assert r.code == 0, r.err


def _lora_manifest(tmp_path: Path, lora: str) -> Path:
    write_image(tmp_path / "face.png", (64, 96))
    job = {"id": "styled", "image": "face.png", "duration": 0.3, "resolution": "64x96", "loras": [{"path": lora}]}
    return write_manifest(tmp_path / "jobs.yaml", [job])


ABSENT = [  # a layer of a LoRA file whose module the tiny LTX-2 lacks -> that module as the message names it
    ("diffusion_model.video_embeddings_connector.transformer_1d_blocks.7.attn1.to_q",
     "video_connector.transformer_blocks.7.attn1.to_q in the text connectors"),  # the tiny connectors have 2 blocks
    ("diffusion_model.transformer_blocks.0.attn1.to_gate_logits",
     "transformer_blocks.0.attn1.to_gate_logits in the transformer"),  # LTX-2.3's gated attention
]  # fmt: skip


def _absent_lora(path: Path, models, stem: str) -> Path:
    """A LoRA adapting attn1.to_q of block 0 and the absent layer `stem` (shaped as that to_q)."""
    to_q = models.transformer.transformer_blocks[0].attn1.to_q
    tensors = lora_tensors({"diffusion_model.transformer_blocks.0.attn1.to_q": to_q, stem: to_q}, 4, torch.Generator())
    save_file(tensors, path)
    return path


def test_a_connector_layer_the_model_lacks_is_refused_in_one_line(cli, tmp_path, tiny_dir):
    models = random_models(tiny_dir, device="cpu", dtype=torch.float32, seed=7)
    _absent_lora(tmp_path / "connector-style.safetensors", models, ABSENT[0][0])
    r = cli("validate", _lora_manifest(tmp_path, "connector-style.safetensors"), "--model", "tiny")
    lines = [line for line in r.err.splitlines() if "connector-style" in line]
    assert r.code == 2 and len(lines) == 1, r.err
    assert f"adapts 1 modules the loaded model does not have, e.g. {ABSENT[0][1]}" in lines[0]


@pytest.mark.parametrize("precision", ["bf16", "fp8"])
@pytest.mark.parametrize(("stem", "named"), ABSENT, ids=["connector-block", "transformer-layer"])
def test_a_lora_layer_that_matches_no_module_is_an_error_not_a_skip(tmp_path, tiny_dir, precision, stem, named):
    """Past validation (a file changed since, or a LoRA given to the worker): loading refuses it, naming the file
    and the module, and leaves the model as it was."""
    models = _fresh(tiny_dir, precision)
    path = _absent_lora(tmp_path / "half-fits.safetensors", models, stem)
    with pytest.raises(ModelError) as e:
        models.set_loras([LoraRef(path=str(path))])
    assert "half-fits.safetensors" in str(e.value) and f"match no module of the model, e.g. {named}" in str(e.value)
    assert not models.loaded_loras and not models._fp8_adapters and not models._lora_hooks
    adapted = [n for n, m in models.transformer.named_modules() if len(getattr(m, "lora_A", ()))]
    assert not adapted, adapted


@pytest.mark.parametrize("precision", ["bf16", "fp8"])
def test_a_worker_forgets_the_loras_a_request_does_not_use(tiny_dir, spec, precision):
    """A worker plans each request with that request's LoRAs only (residency.fit_request), so the adapters of an
    earlier request leave (Models.forget_loras); loading the LoRA again later renders as the first time."""
    models = _fresh(tiny_dir, precision)
    renderer = Renderer(models, max_sequence_length=64)
    bare = spec.model_copy(update={"loras": []})
    first, without = _latents(renderer, spec), _latents(renderer, bare)
    models.forget_loras([])
    assert (
        not models.loaded_loras and not models._fp8_adapters and not models.pipe.get_list_adapters().get("transformer")
    )
    assert torch.equal(_latents(renderer, bare), without)
    assert torch.equal(_latents(renderer, spec), first)  # read again, under a new adapter name
    models.forget_loras(spec.loras)  # what the request uses stays
    assert len(models.loaded_loras or models._fp8_adapters) == 1
