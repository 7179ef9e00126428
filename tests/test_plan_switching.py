"""Switching memory plans on loaded models (engine/placement.py apply, residency.fit_request), the lessons of the
denoise's out-of-memory retries (engine/memory.py), and FP8 LoRA adapters moving with their component, on the tiny
model on the CPU.

Here the models' device stands for the GPU and placement.HOST for host memory: on this machine both are the CPU,
so "freed from the GPU" is seen as a bf16 weight's storage leaving its Linear, and a fake GPU (the device
`cpu:0`, a name other than the CPU's) lets Gemma be moved off it as on a real one."""

from __future__ import annotations

import json
import weakref
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_manifest
from media import write_audio, write_image

from ltx2cli.engine import sampler
from ltx2cli.engine.inputs import prepare_inputs
from ltx2cli.engine.memory import placement
from ltx2cli.engine.memory import residency as res
from ltx2cli.engine.memory.estimate import folder_configs
from ltx2cli.engine.memory.ffn_chunks import FFN_CHUNKS, ffn_chunks
from ltx2cli.engine.render import Renderer
from ltx2cli.errors import failure
from ltx2cli.jobs.job import LoraRef
from ltx2cli.plan.resolve import plan_manifests
from ltx2cli.synthetic.random_models import random_models
from ltx2cli.weights.fp8 import Fp8Linear, block_linears, quantize_linears, text_layer_linears

REFERENCE = Path(__file__).resolve().parents[1] / "configs" / "reference" / "LTX-2"
GEMMA_OUT = placement.Lessons(text_encoder_out=True).notes[0]


@pytest.fixture
def fresh_tiny():
    from ltx2cli.synthetic.tiny import tiny_model_dir

    return random_models(tiny_model_dir(), device="cpu", dtype=torch.float32, seed=7)


def _specs(tmp_path, jobs: list[dict], presets: dict[str, str] | None = None):
    """RenderSpecs of `jobs` (a 64x96 8-frame fast clip unless they say else), without LoRAs."""
    write_image(tmp_path / "a.png", (64, 96))
    write_image(tmp_path / "face.png", (768, 512))
    (tmp_path / "presets").mkdir(exist_ok=True)
    for name, text in (presets or {}).items():
        (tmp_path / "presets" / f"{name}.yaml").write_text(text)
    base = {"image": "a.png", "fps": 24, "resolution": "64x96", "preset": "fast", "seed": 3, "duration": 8 / 24}
    manifest = write_manifest(tmp_path / "jobs.yaml", [base | {"id": f"j{i}"} | job for i, job in enumerate(jobs)])
    specs, problems = plan_manifests([manifest], presets_dirs=[tmp_path / "presets"])
    assert not problems, problems
    return [s.model_copy(update={"loras": []}) for s in specs]


def _render(models, spec):
    return Renderer(models, max_sequence_length=64).render(spec, prepare_inputs(spec))


def _fp8_layers(models) -> int:
    return sum(isinstance(m, Fp8Linear) for part in placement.modules(models).values() for m in part.modules())


def _state(models) -> dict:
    """What a plan switch may change, as plain values."""
    streamed = models.streamed
    return {
        "plan": models.plan,
        "where": dict(models.where),
        "fp8 layers": _fp8_layers(models),
        "ffn chunks": ffn_chunks(models.transformer),
        "streamed": None if streamed is None else [id(b) for b in streamed.blocks],
    }


def _fail_quantising_at(monkeypatch, n: int) -> list[int]:
    """Fp8Linear.quantize_ runs out of GPU memory on its n-th call (1-based), as CUDA's allocator would."""
    real, calls = Fp8Linear.quantize_, []

    def quantize_(self, weight):
        calls.append(1)
        if len(calls) == n:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 MiB (injected)")
        return real(self, weight)

    monkeypatch.setattr(Fp8Linear, "quantize_", quantize_)
    return calls


# -- item 4: quantising frees as it goes ------------------------------------------------------------------------


def test_quantising_frees_each_bf16_linear_as_its_fp8_copy_is_made(fresh_tiny, monkeypatch):
    """When each layer is quantised, the Linears already replaced are gone: only the one being quantised and those
    not reached yet are alive (the old loop held every original until it returned: both copies at the peak)."""
    found = block_linears(fresh_tiny.transformer)
    refs = [weakref.ref(linear) for _, _, linear in found]
    real, alive = Fp8Linear.quantize_, []

    def quantize_(self, weight):
        alive.append(sum(r() is not None for r in refs))
        return real(self, weight)

    monkeypatch.setattr(Fp8Linear, "quantize_", quantize_)
    quantize_linears(found)
    n = len(refs)
    assert n > 10 and alive == list(range(n, 0, -1)), alive
    assert not found and all(r() is None for r in refs)


def test_a_switch_to_fp8_makes_room_first_and_frees_the_gpus_bf16_as_it_goes(fresh_tiny, monkeypatch):
    """After a render (the decode phase) the 80-GB plan holds everything on the GPU; switching to the 32-GB plan
    (FP8 blocks, Gemma there for prompts only) sends Gemma out before quantising, and each block Linear's bf16
    weight leaves the GPU as its FP8 copy is made (kept in host memory until the switch is done)."""
    models = fresh_tiny
    placement.apply(models, res.PLANS[0])
    placement.place(models, "decode")
    linears = [linear for _, _, linear in block_linears(models.transformer)]
    on_gpu = [linear.weight.data_ptr() for linear in linears]
    real, seen = Fp8Linear.quantize_, []

    def quantize_(self, weight):
        still = sum(lin.weight.data_ptr() == ptr for lin, ptr in zip(linears, on_gpu, strict=True))
        seen.append((still, models.where["text_encoder"]))
        return real(self, weight)

    monkeypatch.setattr(Fp8Linear, "quantize_", quantize_)
    placement.apply(models, res.PLANS[2])
    n = len(linears)
    assert [w for _, w in seen] == ["host"] * n  # Gemma went out before the first layer
    assert [still for still, _ in seen] == list(range(n, 0, -1))  # the GPU held one layer in both precisions
    assert models.fp8_blocks and models.plan == res.PLANS[2]
    assert models.where["text_encoder"] == "host" and models.where["transformer"] == "gpu"


# -- item 4: a switch that fails halfway leaves the models as they were -----------------------------------------


@pytest.mark.parametrize("fails_at", ["transformer", "text encoder"])
def test_a_switch_that_runs_out_of_memory_halfway_leaves_the_models_as_they_were(
    tmp_path, fresh_tiny, monkeypatch, fails_at
):
    """From a bf16 plan streaming one block to one with FP8 blocks and Gemma, two streamed blocks and chunked FFNs:
    out of memory halfway through the transformer (or in Gemma, the transformer all done): the plan, places,
    Linears, FFN chunks and streamed blocks are as before, and the render is the same, bit for bit."""
    models = fresh_tiny
    spec = _specs(tmp_path, [{}])[0]
    before_plan = replace(res.PLANS[0], streamed_blocks=1)
    placement.apply(models, before_plan)
    expected = _render(models, spec)
    before = _state(models)
    blocks = len(block_linears(models.transformer))
    assert blocks and text_layer_linears(models.text_encoder)
    calls = _fail_quantising_at(monkeypatch, blocks // 2 if fails_at == "transformer" else blocks + 2)
    target = replace(res.PLANS[-1], streamed_blocks=2, ffn_chunks=FFN_CHUNKS)
    with pytest.raises(torch.OutOfMemoryError):
        placement.apply(models, target)
    assert len(calls) == (blocks // 2 if fails_at == "transformer" else blocks + 2)  # it did fail halfway
    assert _state(models) == before and not models.fp8_blocks
    out = _render(models, spec)
    assert np.array_equal(out.frames, expected.frames) and np.array_equal(out.audio, expected.audio)
    monkeypatch.undo()  # the same switch, memory permitting, goes through
    placement.apply(models, target)
    assert models.plan == target and models.fp8_blocks and ffn_chunks(models.transformer) == FFN_CHUNKS
    assert len(models.streamed.blocks) == 2 and not text_layer_linears(models.text_encoder)


def _card_between(configs: dict, small, heavy) -> float:
    """A card size (GiB) on which the estimator, whatever its numbers, fits `small` in the 48-GB plan and `heavy`
    in no bf16 plan but in the 32-GB one (FP8 blocks)."""
    huge = 10_000
    leanest_bf16 = replace(res.PLANS[1], tiled_decode=True, ffn_chunks=FFN_CHUNKS)
    bf16 = res.choose(configs, [res.Clip.of(heavy)], huge, start=leanest_bf16).peak
    fp8 = res.choose(configs, [res.Clip.of(heavy)], huge, start=res.PLANS[2]).peak
    small_bf16 = res.choose(configs, [res.Clip.of(small)], huge, start=res.PLANS[1]).peak
    assert max(fp8, small_bf16) < bf16, (fp8, small_bf16, bf16)
    return (max(fp8, small_bf16) + bf16) / 2 / res.budget(1)


def test_the_worker_keeps_serving_after_a_plan_switch_runs_out_of_memory(tmp_path, fresh_tiny, monkeypatch):
    """residency.fit_request as the RunPod worker calls it, against full-size LTX-2 on a card where a 768x512 2-s
    request with CFG and STG needs the FP8 plan: switching to it runs out of GPU memory halfway; that request
    fails with E_OOM, the models stay on their bf16 plan, the next request renders as before, and a later switch
    goes through."""
    guided = "steps: 30\nguidance: {cfg: 3.0, stg: 1.0}\n"
    small, heavy = _specs(
        tmp_path, [{}, {"image": "face.png", "duration": 2, "preset": "guided", "resolution": "768x512"}],
        {"guided": guided},
    )  # fmt: skip
    configs = folder_configs(REFERENCE)
    room = res.Budget(configs, _card_between(configs, small, heavy))
    models = fresh_tiny
    placement.apply(models, res.PLANS[1])  # what the worker would start with on this card
    first, why = res.fit_request(room, models, small)
    assert why is None and first.plan == res.PLANS[1]
    expected = _render(models, small)
    before = _state(models)
    assert before["where"]["transformer"] == "gpu" and models.phase == "decode"
    _fail_quantising_at(monkeypatch, len(block_linears(models.transformer)) // 2)
    with pytest.raises(torch.OutOfMemoryError) as oom:
        res.fit_request(room, models, heavy)
    assert failure(oom.value).code == "E_OOM"  # how Worker.handle answers it
    assert _state(models) == before
    again, why = res.fit_request(room, models, small)
    assert why is None and again.plan == first.plan
    assert np.array_equal(_render(models, small).frames, expected.frames)
    monkeypatch.undo()
    switched, why = res.fit_request(room, models, heavy)
    assert why is None and switched.plan.name == "32" and models.fp8_blocks and models.plan == switched.plan


# -- item 5: a retry's lesson holds for the rest of the batch ---------------------------------------------------


def test_gemma_moved_out_by_a_retry_stays_out_for_the_rest_of_the_batch(cli, tmp_path, fresh_tiny, monkeypatch):
    """The 80-GB plan keeps Gemma on the GPU; on this fake GPU the denoise runs out of memory whenever Gemma is on
    it. The first job retries with Gemma moved out; the second renders at the first try with Gemma still out,
    and the summary and its sidecar say why."""
    from ltx2cli.engine.models import loading as model_loading

    models = fresh_tiny
    models.device = torch.device("cpu", 0)  # not "cpu": Gemma can leave it (Models.text_encoder_offloadable)
    monkeypatch.setattr(model_loading, "load_models", lambda *a, **k: models)
    real, attempts = sampler.sample, []

    def sample(*args, **kwargs):
        attempts.append(models.where["text_encoder"])
        if models.where["text_encoder"] == "gpu":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr("ltx2cli.engine.render.sample", sample)
    write_image(tmp_path / "a.png", (64, 96))
    jobs = [{"id": f"j{i}", "image": "a.png", "duration": 0.3, "prompt": f"a face {i}"} for i in range(2)]
    manifest = write_manifest(tmp_path / "jobs.yaml", {"defaults": {"resolution": "64x96"}, "jobs": jobs})
    r = cli("batch", manifest, "-o", "out", "--model", "tiny", "--vram", "80", "--json")
    assert r.code == 0, r.err
    assert attempts == ["gpu", "host", "host"]  # one retry in the batch, not one per job
    summary = next(j for j in r.json_lines() if j.get("summary"))
    assert summary["memory_plan"]["plan"] == "80 GB" and summary["memory_lessons"] == [GEMMA_OUT]
    assert f"memory: {GEMMA_OUT}" in r.err.replace("\n", " ")
    first, second = (json.loads((tmp_path / "out" / f"j{i}.json").read_text()) for i in range(2))
    assert first["memory_fallbacks"] == [
        "denoising ran out of GPU memory; retried with the text encoder moved to the CPU"
    ]
    assert "memory_lessons" not in first  # it rendered with Gemma there until it ran out
    assert second["memory_lessons"] == [GEMMA_OUT] and "memory_fallbacks" not in second


def test_ffns_chunked_by_a_retry_stay_chunked_across_a_plan_switch(tmp_path, fresh_tiny, monkeypatch):
    """On the CPU Gemma cannot leave, so the retry chunks the FFNs; a worker's later switch to a leaner plan
    (placement.apply) keeps them chunked, and the next job denoises at the first try."""
    models = fresh_tiny
    placement.apply(models, res.PLANS[0])
    real, attempts = sampler.sample, []

    def sample(*args, **kwargs):
        attempts.append(ffn_chunks(models.transformer))
        if attempts[-1] == 1:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(*args, **kwargs)

    monkeypatch.setattr("ltx2cli.engine.render.sample", sample)
    first, second = _specs(tmp_path, [{}, {"prompt": "another face"}])
    assert _render(models, first).memory_fallbacks and attempts == [1, FFN_CHUNKS]
    placement.apply(models, res.PLANS[1])
    assert ffn_chunks(models.transformer) == FFN_CHUNKS and models.plan == res.PLANS[1]
    out = _render(models, second)
    assert attempts == [1, FFN_CHUNKS, FFN_CHUNKS] and not out.memory_fallbacks
    assert out.memory_lessons == placement.Lessons(ffn_chunks=FFN_CHUNKS).notes


# -- FP8 LoRA adapters move with the component they adapt -------------------------------------------------------

GPU = torch.device("cpu", 0)  # the fake GPU: not placement.HOST, so components (and adapters) move off and on it
HOST = torch.device(placement.HOST)


class Destinations:
    """Where Tensor.to last sent each storage. On this CPU the host and the fake GPU are one memory, so the
    destination asked for is what tells them apart (a move to the fake GPU copies; one to the host does not)."""

    def __init__(self, monkeypatch):
        self.last: dict[int, torch.device] = {}
        real = torch.Tensor.to

        def to(tensor, *args, **kwargs):
            out = real(tensor, *args, **kwargs)
            where = kwargs.get("device", next((a for a in args if isinstance(a, (str, torch.device))), None))
            if where is not None:
                self.last[out.untyped_storage().data_ptr()] = torch.device(where)
            return out

        monkeypatch.setattr(torch.Tensor, "to", to)

    def of(self, tensors) -> set[torch.device | None]:
        return {self.last.get(t.untyped_storage().data_ptr()) for t in tensors}


def _adapters(models, component: str, block: int | None = None) -> list[torch.Tensor]:
    """The FP8 LoRA A and B tensors on `component`'s modules (or on transformer block `block`'s)."""
    prefix = component + "." if block is None else f"transformer.transformer_blocks.{block}."
    return [t for name, ts, _ in models.fp8_lora_tensors() if name.startswith(prefix) for t in ts]


def _lora_on_both(path: Path, models) -> LoraRef:
    """A LoRA adapting attention and FFN Linears of the first and last transformer blocks and two text-connector
    Linears (diffusers' names)."""
    from safetensors.torch import save_file

    from ltx2cli.synthetic.tiny import lora_tensors

    last = len(models.transformer.transformer_blocks) - 1
    names = [f"transformer.transformer_blocks.{b}.{m}" for b in (0, last) for m in ("attn1.to_q", "ff.net.0.proj")]
    names += ["connectors.text_proj_in", "connectors.video_connector.transformer_blocks.0.attn1.to_q"]
    roots = {"transformer": models.transformer, "connectors": models.connectors}
    linears = {n: roots[n.split(".", 1)[0]].get_submodule(n.split(".", 1)[1]) for n in names}
    save_file(lora_tensors(linears, 4, torch.Generator().manual_seed(5)), str(path))
    return LoraRef(path=str(path))


def test_fp8_lora_adapters_move_with_the_transformer_and_the_connectors(tmp_path, fresh_tiny, monkeypatch):
    """The 24-GB plan has the transformer off the GPU for prompts and the decode, the connectors on it for prompts
    only: the FP8 LoRA adapters (forward hooks' tensors) follow their component at every phase (they stayed on the
    GPU in every phase, 6.9 GiB of the distilled LoRA beside Gemma while prompts encode)."""
    models = fresh_tiny
    models.device = GPU
    placement.apply(models, res.PLANS[-1])
    lora = _lora_on_both(tmp_path / "both.safetensors", models)
    sent = Destinations(monkeypatch)
    models.set_loras([lora])
    transformer, connectors = _adapters(models, "transformer"), _adapters(models, "connectors")
    assert len(transformer) == 8 and len(connectors) == 4
    expected = {
        "prompt": ({HOST}, {GPU}),
        "condition": ({GPU}, {HOST}),
        "denoise": ({GPU}, {HOST}),
        "decode": ({HOST}, {HOST}),
    }
    for phase in ("prompt", "condition", "denoise", "decode", "prompt", "denoise"):
        placement.place(models, phase)
        assert (sent.of(transformer), sent.of(connectors)) == expected[phase], phase


def test_a_render_with_fp8_loras_is_the_same_when_the_plan_moves_and_streams_them(tmp_path, fresh_tiny, monkeypatch):
    """The 24-GB plan streaming the last block, on the fake GPU, against the same FP8 model with nothing moving:
    frames and sound equal bit for bit (the hooks see their adapters wherever they were moved). The streamed
    block's adapters wait in host memory and are on the GPU for its forward only; after the render (the decode
    phase) every adapter is in host memory."""
    spec = _specs(tmp_path, [{}])[0].model_copy(update={"sigmas": [1.0, 0.725, 0.0]})  # two steps
    lora = _lora_on_both(tmp_path / "both.safetensors", fresh_tiny)
    styled = spec.model_copy(update={"loras": [lora]})
    still = random_models(fresh_tiny.path, device="cpu", dtype=torch.float32, seed=7)
    nothing_moves = dict(text_encoder_resident=True, transformer_for_prompts=True, transformer_for_decode=True)
    placement.apply(still, replace(res.PLANS[-1], parts_resident=True, streams=False, **nothing_moves))
    expected = _render(still, styled)
    assert not np.array_equal(_render(still, spec).frames, expected.frames)  # the LoRA is applied

    models = fresh_tiny
    models.device = GPU
    placement.apply(models, replace(res.PLANS[-1], streamed_blocks=1))
    last = len(models.transformer.transformer_blocks) - 1
    sent, seen = Destinations(monkeypatch), []
    to_q = models.transformer.transformer_blocks[last].attn1.to_q
    to_q.register_forward_pre_hook(lambda *_: seen.append(sent.of(_adapters(models, "transformer", last))))
    out = _render(models, styled)
    assert np.array_equal(out.frames, expected.frames) and np.array_equal(out.audio, expected.audio)
    steps = len([s for s in spec.sigmas if s > 0])
    assert seen == [{GPU}] * steps and models.streamed.copies == steps
    assert sent.of(_adapters(models, "transformer")) == {HOST}
    assert sent.of(_adapters(models, "connectors")) == {HOST}


def test_a_24_gb_worker_fits_a_fast_lipsync_with_the_distilled_lora(tmp_path, fresh_tiny):
    """residency.fit_request as the RunPod worker calls it, against full-size LTX-2 on a 24-GB card: a fast 4-s
    lip-sync with the distilled LoRA (6.89 GiB, by the rank its name says) fits the 24-GB plan, its prompt phase
    (Gemma FP8 and the connectors) without the LoRA, which waits off the GPU with the transformer. Before, the
    adapters counted in every phase: 24.38 GiB while prompts encode, over the 22.08 budget, and no plan fit any
    length."""
    write_audio(tmp_path / "voice.wav", 4.0)
    job = {"image": "face.png", "audio": "voice.wav", "duration": None, "resolution": "768x512"}  # as long as it
    spec = _specs(tmp_path, [job])[0].model_copy(update={"loras": [LoraRef(name="distilled", strength=0.6)]})
    assert spec.mode == "lipsync" and spec.num_frames == 97  # 4 s at 24 fps
    room = res.Budget(folder_configs(REFERENCE), 24, REFERENCE)
    models = fresh_tiny
    models.path = REFERENCE  # its LoRAs are sized as the reference weights' (no file: by the name's rank)
    placement.apply(models, res.PLANS[-1])  # what a 24-GB worker starts with
    choice, why = res.fit_request(room, models, spec)
    assert why is None and choice.fits and choice.plan.name == "24", why
    assert round(choice.lora_bytes / res.GIB, 2) == 6.89
    bare = res.choose(room.configs, [res.Clip.of(spec)], 24, start=choice.plan)
    assert bare.plan == choice.plan and choice.peaks["prompt"] == bare.peaks["prompt"]
    assert all(choice.peaks[p] >= bare.peaks[p] for p in placement.PHASES)  # never below the LoRA-less estimate
