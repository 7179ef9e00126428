"""A model's identity is its weights AND the precision each component runs in (issue 22, item 6): a memory plan
that quantises the transformer or Gemma to FP8 makes another model, so prompts Gemma encoded in bf16 are not
reused by an FP8 Gemma (nor the other way), a window checkpoint does not resume across precisions, and the
sidecar says what ran in what."""

from __future__ import annotations

import json

import torch
from conftest import tiny_job_spec
from media import write_image

from ltx2cli.engine.inputs import prepare_inputs
from ltx2cli.engine.memory import residency as res
from ltx2cli.engine.memory.placement import apply
from ltx2cli.engine.prompts import PromptStore
from ltx2cli.engine.render import Renderer
from ltx2cli.engine.window_render import render_key
from ltx2cli.synthetic.random_models import random_models
from ltx2cli.synthetic.tiny import tiny_model_dir

PLAN_24, PLAN_32 = res.PLANS[-1], res.PLANS[-2]  # FP8 blocks and FP8 Gemma; FP8 blocks only


def _fresh():
    from ltx2cli.synthetic.tiny import tiny_model_dir

    return random_models(tiny_model_dir(), device="cpu", dtype=torch.float32, seed=11)


def test_a_plan_that_quantises_gemma_is_another_model_for_prompts_checkpoints_and_the_sidecar(tmp_path):
    models = _fresh()
    spec = tiny_job_spec(tmp_path)
    inputs = prepare_inputs(spec)
    renderer = Renderer(models, max_sequence_length=64)
    before = models.identity, render_key(spec, models, inputs), renderer.prompt("a face", None)
    assert renderer.encoded == 1

    apply(models, PLAN_24)  # what `--vram 24` (or the worker moving to a leaner plan) does to loaded models
    assert models.identity != before[0] and models.identity.endswith("+fp8:transformer,text_encoder")
    assert render_key(spec, models, inputs) != before[1]  # a checkpoint of the bf16 render is not gone on from
    again = renderer.prompt("a face", None)  # the same renderer (a worker's): encoded again by the FP8 Gemma
    assert renderer.encoded == 2 and not torch.equal(again.video, before[2].video)
    assert models.precisions == {
        "transformer": "fp8", "text_encoder": "fp8", "connectors": "float32", "vae": "float32",
        "audio_vae": "float32", "vocoder": "float32",
    }  # fmt: skip


def test_prompts_are_shared_across_transformer_precisions_not_across_gemma_precisions(tmp_path):
    """The prompt store (a batch's, on disk) is keyed by what prompts depend on: FP8 blocks alone (the 32-GB
    plan) reuse the bf16 run's prompts; an FP8 Gemma (the 24-GB plan) does not."""
    bf16, only_blocks, both = _fresh(), _fresh(), _fresh()
    apply(only_blocks, PLAN_32)
    apply(both, PLAN_24)
    assert only_blocks.identity != bf16.identity and only_blocks.prompt_identity == bf16.prompt_identity
    assert both.prompt_identity not in (bf16.prompt_identity, both.weights_identity)
    store = PromptStore(bf16.prompt_identity, 64, tmp_path / "prompts")
    Renderer(bf16, max_sequence_length=64, store=store).prompt("a face", None)
    reused = Renderer(
        only_blocks, max_sequence_length=64, store=PromptStore(only_blocks.prompt_identity, 64, store.folder)
    )
    reused.prompt("a face", None)
    fresh = Renderer(both, max_sequence_length=64, store=PromptStore(both.prompt_identity, 64, store.folder))
    fresh.prompt("a face", None)
    assert (reused.encoded, fresh.encoded) == (0, 1)


def test_the_sidecar_names_the_precision_each_component_ran_in(tmp_path):
    from test_render_cli import invoke

    write_image(tmp_path / "face.png", (64, 96))
    r = invoke(tmp_path, "audiogen", "face.png", "--duration", "0.4", "-r", "64x96", "-o", "c.mp4", "--model", "tiny")
    assert r.code == 0, r.err
    meta = json.loads((tmp_path / "c.json").read_text())
    assert meta["precision"]["transformer"] == meta["precision"]["text_encoder"] == "float32"  # the CPU's dtype
    assert "+fp8" not in meta["model"]
    assert meta["attention"] == "sdpa"  # --attention auto on the CPU


def test_a_plan_that_quantises_despite_precision_bf16_says_so(monkeypatch):
    """`--precision bf16` on a card whose plan needs FP8: the plan wins (bf16 does not fit), and the log says so
    with the identity the renders will carry."""
    from ltx2cli.engine.loader import load_renderer
    from ltx2cli.engine.models import loading as model_loading
    from ltx2cli.weights.source import ModelSource

    monkeypatch.setattr(model_loading, "_cache", {})  # a model of its own: the plan quantises it in place
    logs: list[str] = []
    choice = res.Choice(PLAN_24, dict.fromkeys(("prompt", "condition", "denoise", "decode"), 0), 1)
    renderer = load_renderer(ModelSource(model=str(tiny_model_dir()), precision="bf16"), choice, "off", 1, logs.append)
    said = next(line for line in logs if "FP8 under this plan" in line)
    assert "transformer and text_encoder" in said and "--precision bf16 cannot hold" in said
    assert said.endswith(renderer.models.identity) and "+fp8:transformer,text_encoder" in said


def test_precision_fp8_quantises_a_bf16_folder_at_load(tmp_path, tiny_models):
    """--precision fp8 on a diffusers folder: its block Linears are FP8 from the load (other models than the bf16
    ones loaded for the same folder), the sidecar and the identity say so, and the clip renders."""
    import av
    from test_render_cli import invoke

    write_image(tmp_path / "face.png", (64, 96))
    r = invoke(tmp_path, "audiogen", "face.png", "--duration", "0.4", "-r", "64x96", "-o", "c.mp4", "--model", "tiny",
               "--precision", "fp8")  # fmt: skip
    assert r.code == 0, r.err
    meta = json.loads((tmp_path / "c.json").read_text())
    assert meta["precision"]["transformer"] == "fp8" and meta["precision"]["text_encoder"] == "float32"
    assert meta["model"].endswith("+fp8:transformer") and "transformer blocks in FP8 (--precision fp8)" in r.err
    with av.open(str(tmp_path / "c.mp4")) as f:
        assert f.streams.video[0].frames >= 9
    assert not tiny_models.fp8_blocks  # the session's bf16 models of the same folder are untouched


def test_auto_runs_the_blocks_in_fp8_where_they_compile_on_an_fp8_gpu(monkeypatch):
    from ltx2cli.engine.models.compile import fp8_blocks_wanted

    assert fp8_blocks_wanted("fp8", False, "cpu") and not fp8_blocks_wanted("bf16", True, "cuda")
    assert not fp8_blocks_wanted("auto", True, "cpu")  # no FP8 GEMMs worth having on a CPU
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))  # Hopper
    assert fp8_blocks_wanted("auto", True, "cuda") and not fp8_blocks_wanted("auto", False, "cuda")  # eager: 0.90x
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))  # A100: no FP8 matmuls
    assert not fp8_blocks_wanted("auto", True, "cuda")
