"""The tiny LTX-2: real diffusers layout, deterministic, cached, and runnable by diffusers' own LTX-2 pipelines."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ltx2cli.synthetic import tiny

SIZE, FRAMES, FPS = 64, 9, 24  # 2x2 latent pixels, 2 latent frames
SEQ = 32  # prompt tokens: a multiple of the connectors' 8 learnable registers
COMPONENTS = ("audio_vae", "connectors", "scheduler", "text_encoder", "tokenizer", "transformer", "vae", "vocoder")
WEIGHTS = {
    "audio_vae": "diffusion_pytorch_model.safetensors",
    "connectors": "diffusion_pytorch_model.safetensors",
    "latent_upsampler": "diffusion_pytorch_model.safetensors",
    "text_encoder": "model.safetensors",
    "transformer": "diffusion_pytorch_model.safetensors",
    "vae": "diffusion_pytorch_model.safetensors",
    "vocoder": "diffusion_pytorch_model.safetensors",
}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny.tiny_model_dir(tmp_path_factory.mktemp("cache"))


def _image(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))


def _load(cls, model_dir: Path, **components):
    pipe = cls.from_pretrained(model_dir, dtype=torch.float32, **components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _render_kwargs(**extra) -> dict:
    # STG at block 1: the pipelines' default block 28 does not exist in a 2-layer model
    return dict(
        prompt="a cat talks",
        negative_prompt="blurry",
        height=SIZE,
        width=SIZE,
        num_frames=FRAMES,
        frame_rate=FPS,
        num_inference_steps=2,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
        max_sequence_length=SEQ,
        spatio_temporal_guidance_blocks=[1],
        **extra,
    )


def _check_output(out) -> None:
    assert out.frames.shape == (1, FRAMES, SIZE, SIZE, 3)
    assert np.isfinite(out.frames).all() and out.frames.min() >= 0 and out.frames.max() <= 1
    assert out.audio.shape[:2] == (1, 2) and out.audio.shape[-1] > 0  # stereo waveform at 24 kHz
    assert torch.isfinite(out.audio).all()


def test_folder_has_the_hub_layout(model_dir):
    index = json.loads((model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "LTX2Pipeline"
    assert {k: v for k, v in index.items() if not k.startswith("_")} == {
        "audio_vae": ["diffusers", "AutoencoderKLLTX2Audio"],
        "connectors": ["ltx2", "LTX2TextConnectors"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "Gemma3ForConditionalGeneration"],
        "tokenizer": ["transformers", "GemmaTokenizerFast"],
        "transformer": ["diffusers", "LTX2VideoTransformer3DModel"],
        "vae": ["diffusers", "AutoencoderKLLTX2Video"],
        "vocoder": ["ltx2", "LTX2Vocoder"],
    }
    for name, weights in WEIGHTS.items():
        assert (model_dir / name / "config.json").is_file()
        assert (model_dir / name / weights).is_file()
    assert (model_dir / "scheduler" / "scheduler_config.json").is_file()
    assert (model_dir / "tokenizer" / "tokenizer.json").is_file()
    assert sorted(p.name for p in (model_dir / "loras").iterdir()) == [f"{n}.safetensors" for n in sorted(tiny.LORAS)]
    assert sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file()) < 20e6


def test_component_dims_agree(model_dir):
    def cfg(name: str) -> dict:
        return json.loads((model_dir / name / "config.json").read_text())

    tr, vae, audio, conn, te = cfg("transformer"), cfg("vae"), cfg("audio_vae"), cfg("connectors"), cfg("text_encoder")
    assert (vae["spatial_compression_ratio"], vae["temporal_compression_ratio"]) == (32, 8)
    assert tr["in_channels"] == vae["latent_channels"] == cfg("latent_upsampler")["in_channels"]
    assert tr["audio_in_channels"] == audio["latent_channels"] * audio["mel_bins"] // 4 == audio["base_channels"]
    assert (audio["mel_bins"], audio["sample_rate"], audio["mel_hop_length"]) == (64, 16000, 160)
    assert cfg("vocoder")["in_channels"] == audio["output_channels"] * audio["mel_bins"]
    assert conn["caption_channels"] == tr["caption_channels"] == te["text_config"]["hidden_size"]
    assert conn["text_proj_in_factor"] == te["text_config"]["num_hidden_layers"] + 1


def test_build_is_deterministic_per_seed(model_dir, tmp_path):
    same, other = tiny.build_tiny_model(tmp_path / "a", seed=0), tiny.build_tiny_model(tmp_path / "b", seed=1)
    for rel in [Path(n) / w for n, w in WEIGHTS.items()] + [Path("loras") / f"{n}.safetensors" for n in tiny.LORAS]:
        assert (same / rel).read_bytes() == (model_dir / rel).read_bytes(), rel
    transformer = Path("transformer") / WEIGHTS["transformer"]
    assert (other / transformer).read_bytes() != (model_dir / transformer).read_bytes()


def test_cache_is_reused_and_keyed_by_config(model_dir, monkeypatch):
    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt a cached model")

    monkeypatch.setattr(tiny, "build_tiny_model", no_build)
    assert tiny.tiny_model_dir(model_dir.parent) == model_dir
    assert [p.name for p in model_dir.parent.iterdir()] == [model_dir.name]  # no temp folder left behind
    monkeypatch.setenv("LTX2_CACHE_DIR", str(model_dir.parent))
    assert tiny.tiny_model_dir() == model_dir
    before = tiny.tiny_config_hash()
    monkeypatch.setitem(tiny.TRANSFORMER, "num_layers", 3)
    assert tiny.tiny_config_hash() != before


def test_interrupted_build_leaves_nothing(tmp_path, monkeypatch):
    def half_build(path: Path, seed: int = 0, variant: str = "2.0") -> Path:
        (Path(path) / "transformer").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(tiny, "build_tiny_model", half_build)
    with pytest.raises(KeyboardInterrupt):
        tiny.tiny_model_dir(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_tokenizer_pads_left_to_max_length(model_dir):
    from transformers import GemmaTokenizerFast

    tok = GemmaTokenizerFast.from_pretrained(model_dir / "tokenizer")
    enc = tok(["a cat é", "hi"], padding="max_length", max_length=16, truncation=True, return_tensors="pt")
    assert tok.padding_side == "left" and tok.model_max_length == tiny.MAX_SEQUENCE_LENGTH
    assert enc.input_ids.shape == (2, 16)
    assert enc.attention_mask[1].tolist() == [0] * 13 + [1] * 3  # <bos> h i
    assert enc.input_ids[1, -3].item() == tok.bos_token_id and enc.input_ids[1, 0].item() == tok.pad_token_id
    assert tok.decode(enc.input_ids[0], skip_special_tokens=True) == "a cat é"  # bytes fall back, round trip


def test_image_to_video_pipeline_renders(model_dir):
    from diffusers import LTX2ImageToVideoPipeline

    out = _load(LTX2ImageToVideoPipeline, model_dir)(image=_image(0), **_render_kwargs())
    _check_output(out)
    audio_latents = round(FRAMES / FPS * 25)  # 25 audio latents/s; the decoder gives 4 mel frames each, minus 3
    assert out.audio.shape[-1] == (audio_latents * 4 - 3) * 240  # 240 samples per mel frame at 24 kHz


def test_condition_pipeline_renders_first_and_last_frame(model_dir):
    from diffusers import LTX2ConditionPipeline
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

    conditions = [LTX2VideoCondition(_image(0), index=0), LTX2VideoCondition(_image(1), index=-1, strength=0.8)]
    _check_output(_load(LTX2ConditionPipeline, model_dir)(conditions=conditions, **_render_kwargs()))


def test_dfr_pipeline_renders_without_keyframe_slots(model_dir):
    from diffusers import FlowMatchEulerDiscreteScheduler, LTX2DFRPipeline
    from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

    # DFR passes explicit (distilled) sigmas without `mu`, so it needs a scheduler without dynamic shifting
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(model_dir / "scheduler", use_dynamic_shifting=False)
    pipe = _load(LTX2DFRPipeline, model_dir, scheduler=scheduler)
    kwargs = dict(
        prompt="a cat talks",
        conditions=[LTX2VideoCondition(_image(0), index=0)],
        height=SIZE,
        width=SIZE,
        num_frames=FRAMES,
        frame_rate=FPS,
        sigmas=[1.0, 0.5],
        output_type="np",
        generator=torch.Generator().manual_seed(0),
        max_sequence_length=SEQ,
    )
    _check_output(pipe(generate_slots=False, **kwargs))
    with pytest.raises(ValueError, match="use_keyframes_abs_pos_embedding"):  # slots are an LTX-2.5 feature
        pipe(generate_slots=True, **kwargs)


@pytest.mark.filterwarnings("ignore:Already found a `peft_config`")  # peft's note on a second adapter
def test_loras_load_and_change_the_transformer(model_dir):
    from diffusers import LTX2ImageToVideoPipeline
    from safetensors.torch import load_file

    pipe = _load(LTX2ImageToVideoPipeline, model_dir)
    tr = pipe.transformer
    g = torch.Generator().manual_seed(0)
    video = torch.randn(1, 8, tr.config.in_channels, generator=g)  # 2 latent frames x 2 x 2
    audio = torch.randn(1, 9, tr.config.audio_in_channels, generator=g)
    text = torch.randn(1, SEQ, tr.config.caption_channels, generator=g)

    def forward() -> torch.Tensor:
        t = torch.tensor([500.0])
        with torch.no_grad():
            v, a = tr(
                video,
                audio,
                text,
                text,
                timestep=t.expand(1, 8),
                audio_timestep=t,
                sigma=t / 1000,
                num_frames=2,
                height=2,
                width=2,
                audio_num_frames=9,
                return_dict=False,
            )
        return torch.cat([v.flatten(), a.flatten()])

    base = forward()
    for name in tiny.LORAS:
        pipe.load_lora_weights(model_dir / "loras", weight_name=f"{name}.safetensors", adapter_name=name)
    assert sorted(pipe.get_list_adapters()["transformer"]) == sorted(tiny.LORAS)
    wrapped = {n for n, m in tr.named_modules() if hasattr(m, "lora_A") and len(m.lora_A)}
    keys = {k for n in tiny.LORAS for k in load_file(model_dir / "loras" / f"{n}.safetensors")}
    assert {k.removeprefix("diffusion_model.").rsplit(".lora_", 1)[0] for k in keys} == wrapped
    for weights in ([1.0, 0.0], [0.0, 0.3], [0.6, 0.3]):
        pipe.set_adapters(list(tiny.LORAS), weights)
        assert not torch.allclose(forward(), base, atol=1e-4)
    pipe.set_adapters(list(tiny.LORAS), [0.0, 0.0])
    assert torch.allclose(forward(), base, atol=1e-6)


def test_latent_upsampler_doubles_the_latent_size(model_dir):
    from diffusers import AutoencoderKLLTX2Video, LTX2LatentUpsamplePipeline
    from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel

    upsampler = LTX2LatentUpsamplerModel.from_pretrained(model_dir / "latent_upsampler", dtype=torch.float32)
    vae = AutoencoderKLLTX2Video.from_pretrained(model_dir / "vae", dtype=torch.float32)
    pipe = LTX2LatentUpsamplePipeline(vae=vae, latent_upsampler=upsampler)
    latents = torch.randn(1, vae.config.latent_channels, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    out = pipe(latents=latents, height=SIZE, width=SIZE, num_frames=FRAMES, output_type="np", return_dict=False)[0]
    assert out.shape == (1, FRAMES, 2 * SIZE, 2 * SIZE, 3) and np.isfinite(out).all()
