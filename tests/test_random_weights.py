"""Random-weight LTX-2 made directly on a device: full size on the meta device, the tiny config for real on CPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import write_manifest
from media import write_audio, write_image

from ltx2cli.engine.inputs import prepare_inputs
from ltx2cli.engine.models.loaded import Models
from ltx2cli.engine.render import Renderer
from ltx2cli.plan.resolve import plan_manifests
from ltx2cli.synthetic import random_weights as rw
from ltx2cli.synthetic.random_models import random_models
from ltx2cli.weights import components, fp8

# SPEC.md "Full-size model facts", in billions; checked to the 0.1 B the spec states them with
SPEC_SIZES = {"transformer": 18.9, "text_encoder": 12.2, "connectors": 1.4, "vae": 1.2}
W, H, FPS = 64, 96, 24


@pytest.fixture(scope="module")
def reference_dir():
    return components.reference_config_dir()  # configs/reference/LTX-2, shipped with ltx2


def test_full_size_on_meta_matches_spec_sizes_and_allocates_nothing(reference_dir):
    modules = {name: components.construct(reference_dir, name, torch.bfloat16) for name in SPEC_SIZES}
    for name, module in modules.items():
        billions = rw.parameter_count(module) / 1e9
        assert round(billions, 1) == SPEC_SIZES[name], f"{name}: {billions:.3f} B"
        assert all(p.is_meta for p in module.parameters()), f"{name} has materialised parameters"
        # buffers are the classes' own small tables (RoPE freqs, position ids, latent stats), real on the CPU
        assert sum(b.numel() * b.element_size() for b in module.buffers()) < 1 << 20, name
    te = modules["text_encoder"]
    assert te.lm_head.weight is te.model.language_model.embed_tokens.weight  # tied: counted once, stored once


@pytest.fixture(scope="module")
def tiny_dir(_model_cache):
    from ltx2cli.synthetic.tiny import tiny_model_dir

    return tiny_model_dir()


@pytest.fixture(scope="module")
def random_tiny(tiny_dir) -> Models:
    return random_models(tiny_dir, device="cpu", dtype=torch.float32, seed=3)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_meta_init_buffers_equal_a_normal_construction(tiny_dir, dtype):
    """Every buffer (non-persistent ones above all: Gemma's RoPE inv_freq, SigLIP position ids) holds what the
    class's own __init__ computes, in the dtype the libraries' loaders give it; nothing is left uninitialised."""
    for name in [*rw.WEIGHTED, rw.UPSAMPLER]:
        built = rw.materialize(components.construct(tiny_dir, name, dtype), "cpu", seed=1)
        normal = components.construct(tiny_dir, name, dtype, empty=False)
        ours, theirs = dict(built.named_buffers()), dict(normal.named_buffers())
        assert ours.keys() == theirs.keys(), name
        for key, buf in theirs.items():
            assert ours[key].dtype == buf.dtype and torch.equal(ours[key], buf), f"{name}.{key}"
        assert not any(p.is_meta for p in built.parameters()), name
        assert all(torch.isfinite(p.float()).all() for p in built.parameters()), name


def test_non_persistent_buffers_equal_the_loaded_tiny_model(random_tiny, tiny_models):
    """Against `load_models('tiny')` (from_pretrained), the non-persistent buffers (never saved) must agree."""
    checked = 0
    for name in rw.WEIGHTED:
        ours, loaded = getattr(random_tiny, name), getattr(tiny_models, name)
        theirs = dict(loaded.named_buffers())
        for module_name, module in loaded.named_modules():
            for buf_name in module._non_persistent_buffers_set:
                key = f"{module_name}.{buf_name}" if module_name else buf_name
                assert torch.equal(dict(ours.named_buffers())[key], theirs[key]), f"{name}.{key}"
                checked += 1
    assert checked >= 5  # Gemma's four inv_freq tables and SigLIP's position ids at least


def test_weights_are_random_where_they_should_be(random_tiny):
    te, tr = random_tiny.text_encoder, random_tiny.transformer
    assert te.lm_head.weight is te.model.language_model.embed_tokens.weight
    w = tr.transformer_blocks[0].attn1.to_q.weight
    assert abs(w.std().item() - rw.INIT_STD) < 0.005
    assert torch.equal(tr.transformer_blocks[0].attn1.to_q.bias, torch.zeros_like(w[:, 0]))
    assert torch.equal(tr.transformer_blocks[0].attn1.norm_q.weight, torch.ones_like(w[:, 0]))
    assert (te.model.language_model.norm.weight == 0).all()  # Gemma's RMSNorm scales by (1 + w)
    assert random_tiny.identity.endswith("+random-s3") and random_tiny.device == torch.device("cpu")


def _spec(tmp_path, **job):
    write_image(tmp_path / "a.png", (W, H))
    write_audio(tmp_path / "v.wav", 8 / FPS, rate=16000, channels=2)  # 9 frames
    base = {"id": "j", "image": "a.png", "fps": FPS, "resolution": f"{W}x{H}", "preset": "fast", "seed": 1}
    specs, problems = plan_manifests([write_manifest(tmp_path / "jobs.yaml", [base | job])])
    assert not problems, problems
    return specs[0]


@pytest.mark.parametrize("mode", ["audiogen", "lipsync"])
def test_renderer_renders_with_random_weights_unchanged(random_tiny, tmp_path, mode):
    job = {"audio": "v.wav"} if mode == "lipsync" else {"duration": 8 / FPS}
    spec = _spec(tmp_path, **job)
    assert spec.num_frames == 9 and spec.loras  # the fast preset's LoRAs load from the tiny folder's loras/
    out = Renderer(random_tiny, max_sequence_length=64).render(spec, prepare_inputs(spec))
    assert out.frames.shape == (spec.output_frames, H, W, 3) and out.frames.dtype == np.uint8
    assert out.frames.std() > 0
    assert np.isfinite(out.audio).all() and out.audio.shape[0] == 2 and out.audio.shape[1] > 0
    assert torch.isfinite(out.video_latents).all() and torch.isfinite(out.audio_latents).all()
    assert out.video_latents.shape == (1, 2 * (H // 32) * (W // 32), 16)
    random_tiny.set_loras([])


def test_fp8_transformer_weights_render(tiny_dir, tmp_path):
    models = random_models(tiny_dir, device="cpu", dtype=torch.float32, seed=3, weights=rw.FP8)
    layers = [m for m in models.transformer.modules() if isinstance(m, fp8.Fp8Linear)]
    assert layers and not any(type(m) is torch.nn.Linear for m in models.transformer.transformer_blocks.modules())
    assert all(m.weight_fp8.dtype == torch.float8_e4m3fn and m.weight_scale.numel() == 1 for m in layers)
    assert models.transformer.dtype == torch.float32  # diffusers still sees the compute dtype
    spec = _spec(tmp_path, duration=8 / FPS).model_copy(update={"loras": []})  # no LoRAs on fp8 layers
    out = Renderer(models, max_sequence_length=64).render(spec, prepare_inputs(spec))
    assert out.frames.shape == (spec.output_frames, H, W, 3) and np.isfinite(out.audio).all()


def test_fp8_scaled_mm_matches_dequantised_matmul():
    gen = torch.Generator().manual_seed(0)
    layer = fp8.Fp8Linear(64, 32, bias=True, dtype=torch.float32)
    layer.fill_(gen, rw.INIT_STD)
    layer.bias.normal_(generator=gen)
    x = torch.randn(3, 5, 64, generator=gen)
    exact = torch.nn.functional.linear(x, layer.dequantized(torch.float32), layer.bias)
    layer.scaled_mm = True
    fast = layer(x)
    assert fast.shape == (3, 5, 32)
    assert (fast - exact).abs().max() / exact.abs().max() < 0.1  # fp8 inputs: ~2 significant bits lost
    layer.scaled_mm = False
    torch.testing.assert_close(layer(x), exact)


def test_flop_formula_counts_the_blocks_matmuls_and_attention(random_tiny):
    """transformer_flops against torch's FlopCounterMode over transformer_blocks in one real tiny forward."""
    from torch.utils.flop_counter import FlopCounterMode

    from ltx2cli.engine.flops import transformer_flops

    tr = random_tiny.transformer
    nv, na, nt, batch = 12, 7, 16, 2
    cfg = tr.config
    counter = FlopCounterMode(display=False, custom_mapping={
        torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops,
    })  # fmt: skip
    with counter:
        tr(
            hidden_states=torch.randn(batch, nv, cfg.in_channels),
            audio_hidden_states=torch.randn(batch, na, cfg.audio_in_channels),
            encoder_hidden_states=torch.randn(batch, nt, cfg.caption_channels),
            audio_encoder_hidden_states=torch.randn(batch, nt, cfg.caption_channels),
            timestep=torch.full((batch, nv), 500.0),
            audio_timestep=torch.full((batch, na), 500.0),
            num_frames=3, height=2, width=2, audio_num_frames=na, fps=24.0, return_dict=False,
        )  # fmt: skip
    counted = sum(
        sum(ops.values())
        for name, ops in counter.get_flop_counts().items()
        if name.count(".") == 2 and ".transformer_blocks." in name  # each block once, not nested modules again
    )
    assert counted == batch * transformer_flops(dict(cfg), nv, na, nt)


def _sdpa_flops(q_shape, k_shape, v_shape, *args, **kwargs) -> int:
    b, h, sq, e = q_shape
    return 4 * b * h * sq * k_shape[2] * e
