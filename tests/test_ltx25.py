"""LTX-2.5 on the tiny model's 2.5 variant: prompts start with BOS (Gemma 4's tokenizer adds none), the first
latent frame's tokens get the learned keyframe embedding, Lightricks' packed Gemma 4 file loads, and every mode
renders through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import write_manifest
from media import write_image, write_waveform
from single_file_names import write_packed_gemma4
from test_render_cli import MODES, check_mp4, decoded_seconds, invoke, speech

from ltx2cli.engine.inputs import prepare_inputs
from ltx2cli.engine.models.loading import load_models
from ltx2cli.engine.render import Renderer
from ltx2cli.errors import ModelError
from ltx2cli.plan.resolve import plan_manifests

BOS = 2  # the tiny tokenizer's, as Gemma's


@pytest.fixture(scope="module")
def tiny25_dir(_model_cache) -> Path:
    from ltx2cli.synthetic.tiny import tiny_model_dir

    return tiny_model_dir(variant="2.5")


@pytest.fixture(scope="module")
def tiny25(tiny25_dir):
    return load_models(str(tiny25_dir), device="cpu")


def test_the_tiny_25_is_25(tiny25_dir, tiny25):
    from transformers import AutoTokenizer

    from ltx2cli.synthetic.tiny import tiny_config_hash
    from ltx2cli.weights.versions import folder_version

    assert folder_version(tiny25_dir) == tiny25.version == "2.5"
    config = tiny25.transformer.config
    assert not config.ff_bias and config.use_keyframes_abs_pos_embedding and tiny25.keyframe_embedding
    assert tiny25.transformer.keyframes_abs_pos_embedding.abs().min() > 0
    assert type(tiny25.text_encoder).__name__ == "Gemma4UnifiedForConditionalGeneration"
    assert tiny25.vocoder.config.output_sampling_rate == 48000
    assert AutoTokenizer.from_pretrained(tiny25_dir / "tokenizer")("a").input_ids[0] != BOS  # as Gemma 4's
    assert tiny_config_hash("2.5") != tiny_config_hash()
    # the 2.5 release's distilled LoRA, under its real name (Lightricks/LTX-2.5 loras/); no 19B LoRA
    assert [f.name for f in (tiny25_dir / "loras").iterdir()] == ["ltx-2.5-22b-distilled-lora-450-bf16.safetensors"]


def test_a_diffusers_folders_bwe_vocoder_clamps_its_16_khz_stage_as_ltx_core(tiny25_dir, tiny25):
    """diffusers' converted configs leave the BWE vocoder's 16 kHz stage without its last activation
    (`final_act_fn` null); ltx-core builds it from the checkpoints' config as a clamp to +-1 (see
    tests/test_ltx_core_oracle.py), and so does ltx2 whatever the folder says."""
    import json

    assert json.loads((tiny25_dir / "vocoder" / "config.json").read_text()).get("final_act_fn") is None
    assert tiny25.vocoder.vocoder.final_act_fn == "clamp" and tiny25.vocoder.bwe_generator.final_act_fn is None
    g = torch.Generator().manual_seed(0)
    mel = (
        torch.randn(1, 2, 9, tiny25.vocoder.vocoder.conv_in.in_channels // 2, generator=g) * 100
    )  # loud: > 1 unclamped
    stage = tiny25.vocoder.vocoder(mel)
    assert stage.abs().max() <= 1


def _encoded_ids(models, negative: str | None = None) -> torch.Tensor:
    """The input ids the text encoder receives from Models.encode_text, one row per call (prompt, then negative)."""
    seen = []
    encoder = models.pipe.text_encoder
    forward = encoder.forward

    def record(*args, **kwargs):
        seen.append(kwargs["input_ids"])
        return forward(*args, **kwargs)

    encoder.forward = record
    try:
        models.encode_text("a cat", negative, 16)
    finally:
        del encoder.forward
    return torch.cat(seen)


def test_25_prompts_start_with_one_bos_after_the_padding(tiny25):
    ids = _encoded_ids(tiny25, negative="blur")
    for row, length in zip(ids.tolist(), (5, 4), strict=True):  # "blur", "a cat": one token per character
        assert row[: 16 - length - 1] == [0] * (16 - length - 1)  # left padding
        assert row[16 - length - 1] == BOS and BOS not in row[16 - length :]


def test_prepend_bos_changes_a_gemma4_tokenizer_and_leaves_a_gemma3_one(tiny_models):
    from ltx2cli.synthetic.tiny import make_tokenizer
    from ltx2cli.weights.text_encoder import prepend_bos

    gemma4, gemma3 = make_tokenizer(add_bos=False), make_tokenizer()
    assert gemma4("a b").input_ids[0] != BOS
    prepend_bos(gemma4)
    prepend_bos(gemma3)
    assert gemma4("a b").input_ids == gemma3("a b").input_ids == [BOS, *make_tokenizer(add_bos=False)("a b").input_ids]
    # the 2.0 model's prompts: exactly what its own tokenizer gives, one BOS
    ids = _encoded_ids(tiny_models)[0].tolist()
    assert ids == make_tokenizer()("a cat", padding="max_length", max_length=16).input_ids and ids.count(BOS) == 1


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    """A first frame and a guide keyframe in the middle, 17 frames at 64x96: 3 latent frames of 2x3 tokens."""
    tmp = tmp_path_factory.mktemp("ltx25-spec")
    write_image(tmp / "a.png", (64, 96))
    write_image(tmp / "b.png", (64, 96))
    job = {"id": "j", "image": str(tmp / "a.png"), "fps": 24, "resolution": "64x96", "preset": "fast", "seed": 4,
           "duration": 17 / 24, "keyframes": [{"image": str(tmp / "b.png"), "position": 0.5, "strength": 0.9}]}  # fmt: skip
    specs, problems = plan_manifests([write_manifest(tmp / "jobs.yaml", [job])])
    assert not problems, problems
    return specs[0].model_copy(update={"loras": []})


def _render_recording(models, spec) -> tuple[torch.Tensor, list[dict]]:
    calls = []
    transformer = models.pipe.transformer
    forward = transformer.forward

    def record(*args, **kwargs):
        calls.append(kwargs)
        return forward(*args, **kwargs)

    transformer.forward = record
    try:
        out = Renderer(models, max_sequence_length=64).render(spec, prepare_inputs(spec))
    finally:
        del transformer.forward
    return out.video_latents, calls


def test_25_marks_the_first_latent_frame_for_the_keyframe_embedding(tiny25, spec):
    """Base grid 3 frames x 6 tokens, then 6 guide tokens: only the first frame's 6 are marked, at every step
    (ltx-core marks it whether or not an image conditions it; given guide frames are never marked)."""
    latents, calls = _render_recording(tiny25, spec)
    assert len(calls) == 8  # the fast preset's steps
    for kwargs in calls:
        mask = kwargs["video_keyframes_mask"]
        assert mask.shape == (1, 24, 1) and mask.dtype == kwargs["hidden_states"].dtype
        assert mask[0, :, 0].tolist() == [1.0] * 6 + [0.0] * 18
    embedding = tiny25.transformer.keyframes_abs_pos_embedding
    kept = embedding.detach().clone()
    with torch.no_grad():
        embedding.zero_()
    try:
        without, _ = _render_recording(tiny25, spec)
    finally:
        with torch.no_grad():
            embedding.copy_(kept)
    assert not torch.allclose(latents, without, atol=1e-3)  # the embedding really is applied


def test_20_gets_no_keyframe_mask(tiny_models, spec):
    _, calls = _render_recording(tiny_models, spec)
    assert calls and all(kwargs["video_keyframes_mask"] is None for kwargs in calls)


@pytest.mark.parametrize("comfy_flat", [True, False])
def test_packed_gemma4_encodes_like_transformers(tmp_path, tiny25_dir, comfy_flat):
    """ltx-core's packed TE file (ComfyUI's flat names, or HF's): the language model's hidden states are
    transformers' own Gemma 4's exactly, and its embedded tokenizer is the folder's."""
    from transformers import AutoTokenizer, Gemma4UnifiedForConditionalGeneration

    from ltx2cli.weights.text_encoder import is_gemma_file, load_gemma_file, prepend_bos

    path = write_packed_gemma4(tiny25_dir, tmp_path / "gemma4-12b-with-proj-ltx-2.5-bf16.safetensors", comfy_flat)
    assert is_gemma_file(path)
    model, tokenizer = load_gemma_file(path, "cpu", torch.float32)
    reference = AutoTokenizer.from_pretrained(tiny25_dir / "tokenizer")
    text = "a cat, <bos> on a mat"
    assert tokenizer(text).input_ids == reference(text).input_ids
    prepend_bos(tokenizer)
    tokenizer.padding_side = "left"  # as diffusers' prompt encoding sets it
    ids = tokenizer(text, padding="max_length", max_length=32, return_tensors="pt")
    assert ids.input_ids[0, 32 - len(reference(text).input_ids) - 1] == BOS
    ours = model(**ids, output_hidden_states=True).hidden_states
    full = Gemma4UnifiedForConditionalGeneration.from_pretrained(tiny25_dir / "text_encoder").eval()
    theirs = full(**ids, output_hidden_states=True).hidden_states
    assert len(ours) == len(theirs) == 3 and all(torch.equal(a, b) for a, b in zip(ours, theirs, strict=True))


def test_a_packed_gemma_of_another_kind_is_named(tmp_path, tiny25_dir):
    from safetensors.torch import load_file, save_file

    from ltx2cli.weights.text_encoder import load_gemma_file

    path = write_packed_gemma4(tiny25_dir, tmp_path / "te.safetensors")
    config = json.loads((tiny25_dir / "text_encoder" / "config.json").read_text()) | {"model_type": "gemma4"}
    save_file(load_file(path), str(path), metadata={"gemma_config": json.dumps(config)})
    with pytest.raises(ModelError, match=r"te.safetensors: a packed text encoder of model_type 'gemma4'"):
        load_gemma_file(path, "cpu", torch.float32)


# -- every mode through the command line -------------------------------------------------------------

# The fast schedule without LoRAs: these modes test rendering, test_releases.py the stock presets' LoRAs on 2.5.
FAST_NO_LORAS = """description: the fast preset without LoRAs
sigmas: [1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0]
resolution: 768x512
"""


@pytest.fixture(scope="module")
def modes25(tmp_path_factory, tiny25_dir):
    d = tmp_path_factory.mktemp("modes25")
    write_image(d / "face.png", (96, 64))
    write_image(d / "smile.jpg", (64, 96))
    write_image(d / "turn.webp", (96, 64))
    write_waveform(d / "voice.wav", speech(1.3, 44100, 2), 44100)
    write_waveform(d / "voice16.flac", speech(1.1, 16000, 1), 16000)
    (d / "presets").mkdir()
    (d / "presets" / "fast.yaml").write_text(FAST_NO_LORAS)
    model = ("--model", str(tiny25_dir), "--presets-dir", "presets")
    return d, {name: invoke(d, *m["args"], "-o", f"{name}.mp4", "--json", *model) for name, m in MODES.items()}


@pytest.mark.parametrize("mode", MODES)
def test_every_mode_renders_on_25(modes25, mode):
    d, results = modes25
    m, r = MODES[mode], results[mode]
    assert r.code == 0, r.err
    seconds = decoded_seconds(d / m["audio"]) if "audio" in m else m["seconds"]
    clip = check_mp4(d / f"{mode}.mp4", *m["size"], frames=round(seconds * m["fps"]), fps=m["fps"])
    meta = json.loads((d / f"{mode}.json").read_text())
    assert meta["model_version"] == "2.5" and meta["model"].startswith("tiny-ltx25")
    if "audio" not in m:  # generated sound: the bandwidth-extension vocoder's 48 kHz, through AAC
        assert clip.audio_rate == 48000


def test_models_inspect_says_25(cli, tiny25_dir):
    r = cli("models", "inspect", str(tiny25_dir), "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert (report["version"], report["version_name"]) == ("2.5", "LTX-2.5 (22B)")


def test_models_inspect_says_what_a_packed_gemma4_file_is(cli, tmp_path, tiny25_dir):
    """ltx-core's packed text encoder holds LTX's text projection beside Gemma: still a text encoder, not a
    checkpoint missing components; its parameters are Gemma's alone (the folder's text_encoder/)."""
    from ltx2cli.weights.header import read_header
    from ltx2cli.weights.inspect import inspect_path

    path = write_packed_gemma4(tiny25_dir, tmp_path / "gemma4-12b-with-proj-ltx-2.5-bf16.safetensors")
    report = inspect_path(path)
    assert (report["kind"], report["family"], report["packed"], report["problems"]) == ("text encoder", "Gemma 4",
                                                                                          True, [])  # fmt: skip
    assert report["tokenizer_embedded"]
    gemma = sum(
        t.numel for f in (tiny25_dir / "text_encoder").glob("*.safetensors") for t in read_header(f).tensors.values()
    )
    assert report["params"] == gemma
    r = cli("models", "inspect", str(path))
    assert r.code == 0 and "Gemma 4" in r.out and "component missing" not in r.out, r.out
