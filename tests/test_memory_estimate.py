"""The peak-memory estimator (engine/estimate.py) against torch's own accounting on the CPU, and against the GPU
peaks the H200 benchmark recorded; the memory plan's rules (engine/residency.py) one by one."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import write_manifest
from media import write_audio, write_image

from ltx2cli.engine.memory import estimate as est
from ltx2cli.engine.memory import residency as res
from ltx2cli.engine.memory.ffn_chunks import chunk_feed_forwards
from ltx2cli.engine.memory.vram import parse_vram
from ltx2cli.jobs.job import LoraRef

ROOT = Path(__file__).resolve().parents[1]
REF = ROOT / "configs" / "reference"
BENCH = json.loads((ROOT / "bench" / "logs" / "2026-11-30-h200-run2.json").read_text())
LIPSYNC_10S = est.Clip(768, 512, 305, 254)  # the benchmark's clips: 14,976 video + 254 audio tokens
AUDIOGEN_5S = est.Clip(768, 512, 153, 127)
AUDIOGEN_4S = est.Clip(768, 512, 121, 101)


def _small_transformer(version: str) -> dict:
    """A reference transformer config of `version`, every width shrunk, one block: what a CPU can run."""
    config = json.loads((REF / version / "transformer" / "config.json").read_text())
    return config | {
        "num_attention_heads": 4, "attention_head_dim": 32, "audio_num_attention_heads": 2,
        "audio_attention_head_dim": 16, "cross_attention_dim": 128, "audio_cross_attention_dim": 32,
        "num_layers": 1, "caption_channels": 64, "in_channels": 16, "out_channels": 16,
        "audio_in_channels": 16, "audio_out_channels": 16,
    }  # fmt: skip


def _real_forward(config: dict, clip: est.Clip, chunks: int = 1, fp8: bool = False):
    """The same forward estimate._denoise runs on meta, on real bf16 CPU tensors (`fp8`: the block Linears
    quantised to weights.fp8.Fp8Linear, multiplied by torch._scaled_mm as on an FP8 GPU)."""
    from diffusers import LTX2VideoTransformer3DModel

    from ltx2cli.weights.fp8 import block_linears, quantize_linears

    torch.manual_seed(0)
    model = LTX2VideoTransformer3DModel.from_config(config).to(torch.bfloat16).eval()
    if fp8:
        quantize_linears(block_linears(model))
    chunk_feed_forwards(model, chunks)
    d, a = 128, 32
    tv, ta = (64, 64) if config.get("use_prompt_embeddings", True) else (d, a)
    n, nv, na, nt = clip.rows, clip.video_tokens, clip.audio_latents, clip.text_tokens
    g = torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=g).to(torch.bfloat16)

    sigma = torch.full((n,), 500.0)
    args = dict(
        hidden_states=rand(n, nv, 16), audio_hidden_states=rand(n, na, 16), encoder_hidden_states=rand(n, nt, tv),
        audio_encoder_hidden_states=rand(n, nt, ta), timestep=torch.full((n, nv), 500.0),
        audio_timestep=torch.full((n, na), 500.0), sigma=sigma, audio_sigma=sigma,
        encoder_attention_mask=torch.ones(n, nt), audio_encoder_attention_mask=torch.ones(n, nt),
        num_frames=clip.latent_frames, height=clip.height // 32, width=clip.width // 32, audio_num_frames=na,
        use_cross_timestep=not config.get("use_prompt_embeddings", True), return_dict=False,
    )  # fmt: skip
    return lambda: model(**args)


@pytest.fixture
def many_threads():
    """The CPU ops on 16 threads, as a many-core CI machine runs them (restored after)."""
    before = torch.get_num_threads()
    torch.set_num_threads(16)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("version", ["LTX-2", "LTX-2.3"])
@pytest.mark.parametrize("rows,chunks", [(1, 1), (2, 1), (1, 4)])
def test_denoise_estimate_matches_the_live_tensors_of_a_real_cpu_forward(version, rows, chunks, many_threads):
    """The meta-device estimate of one block vs the tensors the real bf16 forward creates on the CPU, counted
    alike (LiveBytes: every tensor an op returns, while it is alive); the CPU's SDPA is a fused flash kernel too, so
    no scores matrix on either side.

    Tensors only, not the CPU allocator's own events (torch.profiler): those add the scratch space CPU kernels
    allocate inside themselves, which depends on the machine, not on the model: oneDNN's AVX-512 kernels take 8-9%
    more than its AVX2 ones (a Xeon failed this test so), and ATen's flash attention takes a buffer per thread (at
    16 threads 1.18-1.43x the estimate on an AVX2 EPYC, oneDNN on or off). A GPU's kernels add theirs too: that is
    GPU_OVERHEAD, fitted on a GPU."""
    config = _small_transformer(version)
    clip = est.Clip(256, 256, 65, 40, rows=rows, text_tokens=128)  # 9 x 64 video tokens
    forward = _real_forward(config, clip, chunks)
    with torch.no_grad():  # as ltx2 renders: no autograd state
        forward()  # warm-up: first-call allocations are not the forward's
        with est.LiveBytes() as live:
            forward()
    estimate = est._denoise(json.dumps(config), clip, chunks)
    assert estimate == pytest.approx(live.peak, rel=0.03), (estimate, live.peak)


@pytest.mark.parametrize("version", ["LTX-2", "LTX-2.3"])
@pytest.mark.parametrize("chunks", [1, 4])
def test_an_fp8_plans_denoise_is_estimated_with_its_fp8_linears(version, chunks):
    """Fp8Linear quantises each input through float32 copies before torch._scaled_mm: more live bytes than bf16.
    The meta estimate with FP8 blocks vs a real FP8 forward on the CPU (where _scaled_mm runs too), and what the
    planner charges an FP8 plan's denoise on full-size LTX-2 (10 s at 768x512: 4.75 GiB in bf16)."""
    config = _small_transformer(version)
    clip = est.Clip(256, 256, 65, 40, text_tokens=128)
    forward = _real_forward(config, clip, chunks, fp8=True)
    with torch.no_grad():
        forward()
        with est.LiveBytes() as live:
            forward()
    estimate = est._denoise(json.dumps(config), clip, chunks, True)
    assert estimate == pytest.approx(live.peak, rel=0.03), (estimate, live.peak)
    assert estimate > est._denoise(json.dumps(config), clip, chunks)  # the bf16 estimate
    if (version, chunks) == ("LTX-2", 1):  # what the planner charges an FP8 plan, full size
        ltx2 = est.folder_configs(REF / "LTX-2")
        acts = est.activations(ltx2, LIPSYNC_10S, fp8=True)
        assert acts["denoise"] / est.GIB == pytest.approx(6.12, abs=0.01)
        plan, w = res.PLANS[2], est.weights(ltx2)  # 32 GB: FP8 blocks
        assert res._worst(plan, w, ltx2, [LIPSYNC_10S]) == res.peaks(plan, w, acts)


def test_ffn_chunks_change_no_number_and_lower_the_peak():
    config = _small_transformer("LTX-2")
    clip = est.Clip(256, 256, 65, 40, text_tokens=128)
    with torch.no_grad():
        whole, chunked = _real_forward(config, clip, 1)(), _real_forward(config, clip, 4)()
    assert all(torch.equal(a, b) for a, b in zip(whole, chunked, strict=True))
    assert est._denoise(json.dumps(config), clip, 4) < 0.95 * est._denoise(json.dumps(config), clip, 1)


@pytest.mark.parametrize("tiled", [False, True])
def test_decode_estimate_equals_live_tensors_of_a_real_cpu_decode(tiled):
    """The profiler misses oneDNN's convolution buffers, so the VAE is checked with LiveBytes on real CPU tensors
    (every tensor an op returns) against the meta run: the same count, byte for byte."""
    from diffusers import AutoencoderKLLTX2Video

    from ltx2cli.engine.memory.retry import enable_tiles
    from ltx2cli.synthetic import tiny

    config = tiny.VAE
    vae = AutoencoderKLLTX2Video.from_config(config).to(torch.bfloat16).eval()
    if tiled:
        enable_tiles(vae)
        vae.tile_sample_min_height = vae.tile_sample_min_width = 128  # several tiles at this size
        vae.tile_sample_stride_height = vae.tile_sample_stride_width = 96
    latent = torch.randn(1, config["latent_channels"], 3, 6, 6).to(torch.bfloat16)
    with torch.no_grad(), est.LiveBytes() as live:
        vae.decode(latent, return_dict=False)
    # estimate._decode tiles with diffusers' default tile size: compare like with like
    meta = _meta_decode_with_tiles(config, latent.shape) if tiled else est._decode(json.dumps(config), 3, 6, 6, False)
    assert meta == live.peak


def _meta_decode_with_tiles(config: dict, shape) -> int:
    from ltx2cli.engine.memory.retry import enable_tiles

    vae = est._meta_module("vae", config)
    enable_tiles(vae)
    vae.tile_sample_min_height = vae.tile_sample_min_width = 128
    vae.tile_sample_stride_height = vae.tile_sample_stride_width = 96
    with torch.no_grad(), est.LiveBytes() as live:
        vae.decode(torch.empty(*shape, dtype=torch.bfloat16, device="meta"), return_dict=False)
    return live.peak


def _meta_decode_spatial_tiles(config: dict, clip: est.Clip) -> int:
    """diffusers' own tiling alone (spatial tiles, every frame at once), as run 1 of the benchmark decoded."""
    vae = est._meta_module("vae", config)
    vae.enable_tiling()
    shape = (1, config["latent_channels"], clip.latent_frames, clip.height // 32, clip.width // 32)
    with torch.no_grad(), est.LiveBytes() as live:
        vae.decode(torch.empty(*shape, dtype=torch.bfloat16, device="meta"), return_dict=False)
    return live.peak


def test_a_lipsyncs_whole_voice_is_counted_in_the_condition_phase(tmp_path):
    """A lip-sync encodes its whole voice at once (engine.latents.encode_audio; windows get slices of it): the meta
    estimate vs the tensors of that encoding on the CPU, byte for byte; a job's clip carries its voice's length;
    full size, a 600-s voice outweighs the conditioning frame by far."""
    from diffusers import AutoencoderKLLTX2Audio

    from ltx2cli.media.mel import log_mel
    from ltx2cli.synthetic import tiny

    vae = AutoencoderKLLTX2Audio.from_config(tiny.AUDIO_VAE).to(torch.bfloat16).eval()
    with torch.no_grad(), est.LiveBytes() as live:
        mel = log_mel(torch.randn(2, 48000))  # the voice copied to the device, float32 stereo
        vae.encode(mel.to(torch.bfloat16)).latent_dist.mode().float()
    assert est._voice(json.dumps(tiny.AUDIO_VAE), 48000) == live.peak

    from ltx2cli.plan.resolve import plan_manifests

    write_image(tmp_path / "face.png", (768, 512))
    write_audio(tmp_path / "voice.wav", 2.0)
    jobs = [
        {"id": "talk", "image": "face.png", "audio": "voice.wav"},
        {"id": "gen", "image": "face.png", "duration": 2},
    ]
    specs, problems = plan_manifests([write_manifest(tmp_path / "jobs.yaml", jobs)])
    assert not problems, problems
    talk, gen = (est.Clip.of(spec) for spec in specs)
    assert talk.voice_samples == round(specs[0].num_frames / specs[0].fps * 16000) and not gen.voice_samples

    ltx2 = est.folder_configs(REF / "LTX-2")
    frames = 18001  # 600 s at 30 fps, denoised in windows: each window's frames and audio latents as a 10-s clip's
    long = replace(LIPSYNC_10S, voice_samples=est.voice_samples(frames, 30.0))
    condition = est.activations(ltx2, long)["condition"]
    assert condition / est.GIB > 3.7 and condition > 50 * est.activations(ltx2, LIPSYNC_10S)["condition"]


def test_prompt_formula_bounds_the_live_tensors_of_a_real_gemma_forward(tiny_models):
    """Gemma cannot run on meta; its formula against the tiny Gemma's real forward as encode_prompt runs it."""
    te = tiny_models.text_encoder
    config = te.config.to_dict()
    ids = torch.randint(0, config["text_config"]["vocab_size"], (1, 256))
    with torch.no_grad(), est.LiveBytes() as live:
        out = te(input_ids=ids, attention_mask=torch.ones_like(ids), output_hidden_states=True)
        torch.stack(out.hidden_states, dim=-1).flatten(2, 3)
    formula = est._prompt({"text_encoder": config}, 256) * 4 // est.BF16  # the tiny model runs in float32
    assert live.peak <= formula <= 1.5 * live.peak, (live.peak, formula)


def test_estimate_predicts_the_h200_benchmark_peaks():
    """GPU_OVERHEAD is ONE benchmark peak's fit (10-s lip-sync, whole decode; 80-GB plan, bf16, nothing moving),
    so at that point the estimate equals the peak by construction: what is checked there is only that the constant
    is that fit. The 5-s audio-gen peak of the same run and the tiled-decode peaks of run 1 are predictions, each
    within 3%: all four are decode phases of that plan, measured as max_memory_allocated."""
    configs = est.folder_configs(REF / "LTX-2")
    run1 = json.loads((ROOT / "bench" / "logs" / "2026-11-30-h200-run1.json").read_text())
    weights = BENCH["weights_gib"] * est.GIB  # as the benchmark measured them (allocator blocks included)

    def whole_decode(clip: est.Clip, tiled: bool = False) -> int:  # as that run decoded: before chunked decodes
        return est._decode(json.dumps(configs["vae"]), clip.latent_frames, clip.height // 32, clip.width // 32, tiled)

    def predicted(clip: est.Clip, tiled: bool) -> float:
        return (weights + whole_decode(clip, tiled) * est.GPU_OVERHEAD) / est.GIB

    fitted = (BENCH["speed_lipsync"]["peak_gib"] * est.GIB - weights) / whole_decode(LIPSYNC_10S)
    assert round(fitted, 2) == est.GPU_OVERHEAD, fitted
    assert predicted(AUDIOGEN_5S, False) == pytest.approx(BENCH["speed_audiogen"]["peak_gib"], rel=0.03)
    spatial_tiles = _meta_decode_spatial_tiles(configs["vae"], LIPSYNC_10S)
    run1_peak = (weights + spatial_tiles * est.GPU_OVERHEAD) / est.GIB
    assert run1_peak == pytest.approx(run1["speed_lipsync"]["peak_gib"], rel=0.03)


def test_full_size_weights_match_the_reference_counts():
    w = est.weights(est.folder_configs(REF / "LTX-2"))
    assert w.params["transformer"] == 18_876_174_592
    assert w.bytes("transformer", fp8=True) / est.GIB == pytest.approx(17.9, abs=0.05)  # block Linears halve
    assert w.bytes("text_encoder", fp8=True) < 0.6 * w.bytes("text_encoder")


# The plan's rules, one test each (LTX-2 19B configs, the benchmark's 10-s and 5-s clips).


@pytest.fixture(scope="module")
def ltx2():
    return est.folder_configs(REF / "LTX-2")


def _config_folder(root: Path) -> Path:
    """A copy of the LTX-2 reference configs (no weights): a model folder to put LoRA files beside."""
    for config in REF.glob("LTX-2/**/*.json"):
        target = root / config.relative_to(REF / "LTX-2")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(config.read_text())
    return root


def test_a_jobs_loras_count_from_their_headers_or_the_rank_their_name_says(ltx2, tmp_path):
    """What a job's LoRAs hold on the GPU: a file's A and B matrices from its header (in bf16, whatever the file
    stores); a Lightricks LoRA not on disk by the rank its name says over every block Linear (the distilled LoRA:
    6.89 GiB on LTX-2 19B); nothing for a LoRA at strength 0, nor for the distilled LoRA on a distilled checkpoint."""
    from safetensors.torch import save_file

    distilled, camera = LoraRef(name="distilled", strength=0.6), LoraRef(name="camera-dolly-in", strength=0.3)
    by_name = res.lora_sizes(REF / "LTX-2", ltx2, [distilled, camera])
    assert by_name[camera.key] is None  # no rank in its name
    assert by_name[distilled.key].bytes == est.weights(ltx2).lora_bytes(384)
    assert by_name[distilled.key].bytes / est.GIB == pytest.approx(6.89, abs=0.01)
    assert len(set(by_name[distilled.key].blocks)) == 1 and len(by_name[distilled.key].blocks) == 48  # even

    model = _config_folder(tmp_path / "model")
    (model / "loras").mkdir()
    stem, connector = "transformer.transformer_blocks.3.attn1.to_q", "text_embedding_projection.aggregate_embed"
    save_file(
        {f"{stem}.lora_A.weight": torch.zeros(8, 4096), f"{stem}.lora_B.weight": torch.zeros(4096, 8),
         f"{stem}.alpha": torch.tensor(8.0), f"{connector}.lora_A.weight": torch.zeros(8, 64),
         f"{connector}.lora_B.weight": torch.zeros(16, 8)},
        str(model / "loras" / "ltx-2-19b-distilled-lora-384.safetensors"),
    )  # fmt: skip
    size = res.lora_sizes(model, ltx2, [distilled])[distilled.key]
    block = 2 * 2 * 8 * 4096  # float32 file, bf16 GPU
    assert (size.transformer, size.connectors) == (block, 2 * 8 * (64 + 16))
    assert size.blocks[3] == block and sum(size.blocks) == block
    assert res.lora_load(model, ltx2, [distilled.model_copy(update={"strength": 0})]).bytes == 0

    checkpoint = tmp_path / "ltx-2-19b-distilled.safetensors"
    save_file({"model.diffusion_model.patchify_proj.bias": torch.zeros(4)}, str(checkpoint))
    assert res.lora_sizes(checkpoint, ltx2, [distilled]) == {}  # its weights have it


def test_the_plan_holds_the_loras_with_the_component_they_adapt(ltx2):
    """On both paths a LoRA's matrices are on the GPU exactly when the module they adapt is: FP8 hooks' adapters
    move with the transformer (or the text connectors), peft's layers are inside it. A batch encodes its prompts
    before its first render (but a file adapting the connectors is read for them); a worker encodes each request's
    with earlier requests' LoRAs loaded."""
    w, acts = est.weights(ltx2), est.activations(ltx2, AUDIOGEN_5S)
    blocks = w.lora_blocks(384)
    transformer = res.LoraSize(sum(blocks), blocks=blocks)
    connectors = res.LoraSize(connectors=est.GIB)
    for plan in res.PLANS:
        bare = res.peaks(plan, w, acts)
        for during_prompts in (False, True):
            held = res.peaks(plan, w, acts, res.LoraLoad((transformer,), during_prompts))
            text = res.peaks(plan, w, acts, res.LoraLoad((connectors,), during_prompts))
            for phase in bare:
                on = "transformer" in plan.on_gpu(phase) and (phase != "prompt" or during_prompts)
                assert held[phase] - bare[phase] == sum(blocks) * on, (plan.name, phase, during_prompts)
                assert text[phase] - bare[phase] == est.GIB * ("connectors" in plan.on_gpu(phase)), (plan.name, phase)


def test_a_24_gb_workers_prompt_phase_holds_no_lora_of_the_transformer(ltx2):
    """The 24-GB plan's prompt phase is Gemma (FP8) and the connectors: the distilled LoRA, loaded by an earlier
    request, waits off the GPU with the transformer (it was counted there: 24.38 GiB over a 22.08 budget)."""
    distilled = res.lora_load(REF / "LTX-2", ltx2, [LoraRef(name="distilled", strength=0.6)], during_prompts=True)
    w, acts, plan = est.weights(ltx2), est.activations(ltx2, AUDIOGEN_4S, fp8=True), res.PLANS[-1]
    held, bare = res.peaks(plan, w, acts, distilled), res.peaks(plan, w, acts)
    assert held["prompt"] == bare["prompt"] < res.budget(24), held["prompt"] / est.GIB
    assert held["denoise"] - bare["denoise"] == distilled.bytes > 6.8 * est.GIB


def test_the_adapters_of_streamed_blocks_stream_with_them(ltx2):
    """Each streamed block's adapters wait in host memory with it, one block's on the GPU at a time: streaming k
    of the 48 blocks takes k - 1 blocks' share of the LoRA off the transformer's phases."""
    distilled = res.lora_load(REF / "LTX-2", ltx2, [LoraRef(name="distilled", strength=0.6)])
    w, acts = est.weights(ltx2), est.activations(ltx2, AUDIOGEN_5S, fp8=True)
    for k in res.STREAMED:
        plan = replace(res.PLANS[-1], streamed_blocks=k)
        held, bare = res.peaks(plan, w, acts, distilled), res.peaks(plan, w, acts)
        for phase in ("condition", "denoise"):
            assert held[phase] - bare[phase] == distilled.bytes // 48 * (48 - (k - 1)), (k, phase)


def test_validate_plans_a_fast_lipsync_with_the_distilled_lora_on_24_gb(cli, tmp_path):
    """`ltx2 validate --vram 24 --model configs/reference/LTX-2` on a fast 5-s lip-sync with the distilled LoRA: its
    plan counts the LoRA (6.89 GiB, by the rank its name says: the reference folder has no LoRA files, a problem
    validate reports), never a faster plan than the same job without it, and that plan's estimate with the LoRA
    is the estimate without it plus the LoRA where it sits."""
    from media import write_audio, write_image

    write_image(tmp_path / "face.png", (768, 512))
    write_audio(tmp_path / "voice.wav", 5.0)
    off = [{"name": "camera-dolly-in", "strength": 0}]
    jobs = [
        {"id": "lora", "image": "face.png", "audio": "voice.wav", "loras": [{"name": "distilled", "strength": 0.6}]},
        {"id": "bare", "image": "face.png", "audio": "voice.wav", "loras": [{"name": "distilled", "strength": 0}]},
    ]
    manifest = write_manifest(tmp_path / "jobs.yaml", {"defaults": {"preset": "fast", "loras": off}, "jobs": jobs})
    r = cli("validate", manifest, "--vram", "24", "--model", str(REF / "LTX-2"), "--json")
    assert r.code == 2 and "LoRA file not found" in r.err and "ltx-2-19b-distilled-lora-384" in r.err, r.err
    memory = {j["id"]: j["memory"] for j in r.json_lines() if "memory" in j}
    labels = [p.label for p in res.candidates()]
    plan = res.candidates()[labels.index(memory["lora"]["plan"])]
    ltx2 = est.folder_configs(REF / "LTX-2")
    bare = res._worst(plan, est.weights(ltx2), ltx2, [AUDIOGEN_5S])  # its 5-s voice weighs less than the frame
    resident = 6.89 * (1 - max(plan.streamed_blocks - 1, 0) / 48)  # one streamed block's share on the GPU at a time
    for phase, gib in memory["lora"]["phases_gib"].items():  # with the transformer: not for prompts nor the decode
        on = "transformer" in plan.on_gpu(phase)
        assert gib == pytest.approx(bare[phase] / est.GIB + resident * on, abs=0.011), (phase, gib)
    assert memory["lora"]["loras_gib"] == 6.89 and memory["bare"]["loras_gib"] == 0
    assert all(m["estimated_peak_gib"] <= m["budget_gib"] for m in memory.values()), memory  # both fit at 5 s
    assert labels.index(memory["lora"]["plan"]) >= labels.index(memory["bare"]["plan"]), memory  # never faster


def test_the_peaks_keep_a_margin_for_fragmentation_and_doctor_says_what_was_measured(ltx2, cli):
    """GPU_OVERHEAD fits max_memory_allocated; what the allocator reserves beyond (fragmentation) is FRAGMENTATION
    more, charged on the activations in every plan's peaks. `ltx2 doctor` says which peaks the factor was fitted
    and checked on, and that the rest is a prediction."""
    w, acts = est.weights(ltx2), est.activations(ltx2, LIPSYNC_10S)
    allocated = {p: sum(w.bytes(c) for c in res.PLANS[0].on_gpu(p)) + acts[p] * est.GPU_OVERHEAD for p in acts}
    for phase, peak in res.peaks(res.PLANS[0], w, acts).items():
        assert peak == pytest.approx(allocated[phase] + acts[phase] * est.FRAGMENTATION, abs=1), phase
    assert 0.2 <= est.FRAGMENTATION < est.GPU_OVERHEAD - 1

    r = cli("doctor", "--vram", "80", "--model", "tiny", "--json")
    note = json.loads(r.out)["model"]["memory_estimate"]
    for said in ("fitted on one H200", "decode phase of the 80-GB plan", "prediction", "fragmentation"):
        assert said in note, note
    assert "fitted on one H200" in cli("doctor", "--vram", "80", "--model", "tiny").out.replace("\n", " ")


def test_a_big_card_keeps_everything_resident_in_bf16(ltx2):
    choice = res.choose(ltx2, [AUDIOGEN_5S], 141)
    assert choice.plan == res.PLANS[0] and choice.fits


def test_fp8_only_where_bf16_does_not_fit(ltx2):
    assert not res.choose(ltx2, [AUDIOGEN_5S], 48).plan.transformer_fp8 or not _bf16_fits(ltx2, AUDIOGEN_5S, 48)
    assert res.choose(ltx2, [AUDIOGEN_5S], 32).plan.transformer_fp8


def _bf16_fits(configs, clip, vram) -> bool:
    return any(res.choose(configs, [clip], vram).plan == p for p in res.candidates() if not p.transformer_fp8)


def test_gemma_and_the_transformer_never_share_the_gpu_below_80(ltx2):
    for plan in res.PLANS[1:]:
        assert not {"text_encoder", "transformer"} <= plan.on_gpu("prompt")
        assert "text_encoder" not in plan.on_gpu("denoise")


def test_tiles_only_when_a_decode_chunk_does_not_fit(ltx2):
    """The video decodes in chunks of at most 17 latent frames (engine.memory.decode_spans), so the decode phase
    no longer grows with the clip: a 10-s clip (39 latent frames) decodes untiled beside every resident
    component, where a whole decode had to tile; a larger frame still tiles."""
    assert est.decoded_frames(LIPSYNC_10S.latent_frames) == 16 and est.decoded_frames(9) == 9
    assert max(est.decoded_frames(f) for f in range(1, 2000)) == 17  # however long the clip
    assert not res.choose(ltx2, [AUDIOGEN_5S], 80).plan.tiled_decode
    assert not res.choose(ltx2, [LIPSYNC_10S], 80).plan.tiled_decode
    assert res.choose(ltx2, [replace(AUDIOGEN_5S, width=1280, height=704)], 80).plan.tiled_decode


def test_blocks_stream_only_when_nothing_else_fits(ltx2):
    assert res.choose(ltx2, [AUDIOGEN_4S], 24).plan.streamed_blocks == 0  # 4 s fits without
    ten = res.choose(ltx2, [LIPSYNC_10S], 24)
    assert ten.fits and ten.plan.streamed_blocks in res.STREAMED  # 10 s needs some, the fewest that fit
    fewer = replace(ten.plan, streamed_blocks=ten.plan.streamed_blocks - 8)
    w = est.weights(ltx2)
    acts = est.activations(ltx2, LIPSYNC_10S, fewer.tiled_decode, fewer.ffn_chunks)
    assert max(res.peaks(fewer, w, acts).values()) > res.budget(24)
    assert all(not p.streamed_blocks for p in res.candidates() if not p.streams)  # only the 24-GB plan streams


def test_ffn_chunks_come_before_streaming(ltx2):
    order = res.candidates()
    for plan in order:
        if plan.ffn_chunks > 1:
            assert order.index(replace(plan, ffn_chunks=1)) < order.index(plan)  # unchunked is tried first
        if plan.streamed_blocks:
            chunked = replace(plan, streamed_blocks=0, ffn_chunks=res.FFN_CHUNKS, tiled_decode=True)
            assert order.index(chunked) < order.index(plan)


def test_the_24_gb_plan_moves_everything_it_can(ltx2):
    plan = res.PLANS[-1]
    assert plan.on_gpu("prompt") == {"text_encoder", "connectors"}
    assert plan.on_gpu("denoise") == {"transformer", "latent_upsampler"}  # the upsampler runs between stages
    assert plan.on_gpu("decode") == {"vae", "audio_vae", "vocoder"}


def test_a_job_no_plan_fits_names_what_would(ltx2):
    twenty = replace(LIPSYNC_10S, num_frames=601, audio_latents=500, rows=2)
    choice = res.choose(ltx2, [twenty], 24)
    assert not choice.fits
    longest = res.longest_fitting(ltx2, twenty, 24, fps=30)
    assert longest is not None and 1 <= longest < 20
    assert res.choose(ltx2, [_seconds(twenty, longest)], 24).fits


def _seconds(clip: est.Clip, seconds: float) -> est.Clip:
    frames = ((round(seconds * 30) - 1) // 8) * 8 + 1
    return replace(clip, num_frames=frames, audio_latents=round(frames / 30 * 25))


def test_doctor_prints_the_plan_per_gpu_size_for_full_size_configs(cli):
    """`ltx2 doctor --vram N --model <configs>`: a folder of configs without weights is planned (and reported as a
    model with problems: no weights)."""
    r = cli("doctor", "--vram", "24", "--model", str(REF / "LTX-2"), "--json")
    rows = {(row["preset"], row["seconds"]): row for row in json.loads(r.out)["model"]["memory_plans"]}
    assert (
        rows["fast", 5]["fits"]
        and rows["fast", 5]["plan"] == "24 GB (FFN in 4 chunks, 16 blocks streamed)"  # its distilled LoRA: 6.89 GiB
        and rows["fast", 5]["vram_gib"] == 24
    )
    assert rows["fast", 10]["fits"] and "blocks streamed" in rows["fast", 10]["plan"]
    assert all(row["fits"] or 1 <= (row["longest_fitting_s"] or 10) < 10 for row in rows.values())


def test_a_clip_in_windows_needs_the_memory_of_its_largest_window(cli, tmp_path):
    """Each window is denoised and decoded on its own: a 10-minute clip plans like a 10-s one on a 24-GB card; the
    keyframes count in the window that owns them."""
    write_image(tmp_path / "face.png", (768, 512))
    jobs = [{"id": f"s{seconds}", "image": "face.png", "duration": seconds} for seconds in (10, 600, 60)]
    jobs[2]["keyframes"] = [{"image": "face.png", "position": p} for p in (0.3, 0.32, 0.6)]
    no_loras = [{"name": "distilled", "strength": 0}, {"name": "camera-dolly-in", "strength": 0}]  # none on disk
    defaults = {"resolution": "768x512", "loras": no_loras}
    manifest = write_manifest(tmp_path / "jobs.yaml", {"defaults": defaults, "jobs": jobs})
    r = cli("validate", manifest, "--model", str(REF / "LTX-2"), "--vram", "24", "--json")
    assert r.code == 0, r.err
    memory = {j["id"]: j["memory"] for j in r.json_lines()}
    assert memory["s600"] == memory["s10"] and memory["s600"]["estimated_peak_gib"] <= 22
    assert memory["s60"]["phases_gib"]["denoise"] > memory["s10"]["phases_gib"]["denoise"]  # two guides in one window


@pytest.mark.parametrize("value", ["banana", "4", "0", "-24", "nan", "24 TB"])
@pytest.mark.parametrize("command", ["doctor", "validate", "batch", "lipsync"])
def test_a_vram_that_is_not_a_card_size_is_a_usage_error_before_anything_runs(cli, monkeypatch, command, value):
    """Given as --vram or as $LTX2_VRAM: exit 2 naming the option, the value and what would do; nothing read."""
    args = {"doctor": [], "validate": ["jobs.yaml"], "batch": ["jobs.yaml"], "lipsync": ["face.png", "v.wav"]}[command]
    r = cli(command, *args, "--vram", value)
    assert r.code == 2 and "'--vram'" in r.err and "must be auto or a GPU size in GB" in r.err, r.err
    assert repr(value.lower()) in " ".join(r.err.split()), r.err
    monkeypatch.setenv("LTX2_VRAM", value)
    r = cli(command, *args)
    assert r.code == 2 and "LTX2_VRAM must be auto or a GPU size" in " ".join(r.err.split()), r.err


@pytest.mark.parametrize(
    "value, gib", [("24", 24.0), ("24GB", 24.0), (" 32 gb ", 32.0), ("80GiB", 80.0), ("auto", None)]
)
def test_card_sizes_read_as_users_write_them(value, gib):
    assert parse_vram(value) == gib


@pytest.mark.parametrize("vram, plan", [(141, "80"), (48, "32"), (32, "24"), (24, "24")])
def test_the_planner_decides_for_ltx23_too(vram, plan):
    """LTX-2.3 (22B: bigger connectors, a smaller VAE decoder) at 5 s: a plan per card size, every one fitting."""
    choice = res.choose(est.folder_configs(REF / "LTX-2.3"), [AUDIOGEN_5S], vram)
    assert choice.fits and choice.plan.name == plan, choice.as_dict()


def test_estimates_are_kept_on_disk_for_the_next_process(tmp_path, monkeypatch):
    """A meta run's result is kept in $LTX2_CACHE_DIR/estimates.json: a process that has not computed it yet (the
    in-memory copy dropped, as a new process starts) reads it instead of running again, shown by a value planted in
    the file; other arguments are another entry."""
    from ltx2cli.engine.memory import estimate_cache
    from ltx2cli.synthetic import tiny_configs as tiny

    monkeypatch.setenv("LTX2_CACHE_DIR", str(tmp_path))
    config = json.dumps(tiny.AUDIO_VAE)

    def new_process() -> None:
        monkeypatch.setattr(estimate_cache, "_known", None)

    new_process()
    first = est._voice(config, 48000)
    [(key, value)] = json.loads((tmp_path / "estimates.json").read_text()).items()
    assert value == first > 0
    (tmp_path / "estimates.json").write_text(json.dumps({key: 12345}))
    new_process()
    assert est._voice(config, 48000) == 12345  # read, not run again
    assert est._voice(config, 96000) > first and len(json.loads((tmp_path / "estimates.json").read_text())) == 2
