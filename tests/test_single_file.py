"""Single-file LTX-2 checkpoints (Lightricks' layout, ltx-core `config` metadata): the tiny model written in that
format renders exactly what its diffusers folder renders; FP8 with per-tensor scales within a stated tolerance,
and a file whose scales are ignored does not."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_job_spec, write_manifest
from media import write_image
from single_file_names import write_single_file

from ltx2cli.engine.inputs import prepare_inputs
from ltx2cli.engine.models.loading import load_models
from ltx2cli.engine.render import Renderer
from ltx2cli.errors import ModelError
from ltx2cli.plan.resolve import plan_manifests
from ltx2cli.weights.source import ModelSource

FP8_TOLERANCE = 0.05  # relative L2 of the final video latents, FP8 weights vs the float32 folder
GEMMA_FP8_TOLERANCE = 0.1  # relative L2 of Gemma's hidden states (worst layer), FP8 projections vs float32


@pytest.fixture(scope="module")
def tiny_dir(_model_cache):
    from ltx2cli.synthetic.tiny import tiny_model_dir

    return tiny_model_dir()


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    return tiny_job_spec(tmp_path_factory.mktemp("single-file-spec"))


def _render(models, spec):
    return Renderer(models, max_sequence_length=64).render(spec, prepare_inputs(spec))


@pytest.fixture(scope="module")
def folder_render(tiny_models, spec):
    return _render(tiny_models, spec)


def _load(path, tiny_dir, **kw):
    return load_models(ModelSource(model=str(path), text_encoder=str(tiny_dir), **kw), device="cpu")


def test_a_single_file_renders_exactly_what_its_folder_renders(tmp_path, tiny_dir, spec, folder_render):
    path = write_single_file(tiny_dir, tmp_path / "ltx-2-tiny.safetensors")
    models = _load(path, tiny_dir)
    assert models.identity.startswith("ltx-2-tiny.safetensors@") and models.path == path.resolve()
    out = _render(models, spec)
    assert torch.equal(out.video_latents, folder_render.video_latents)
    assert np.array_equal(out.frames, folder_render.frames) and np.array_equal(out.audio, folder_render.audio)


@pytest.mark.parametrize("precision", ["bf16", "fp8"])
def test_fp8_with_scales_renders_within_tolerance_and_ignored_scales_do_not(
    tmp_path, tiny_dir, spec, folder_render, precision
):
    """bf16 dequantises at load; fp8 keeps the block Linears in float8 (scaled_mm / dequantised matmul)."""
    path = write_single_file(tiny_dir, tmp_path / "fp8.safetensors", fp8=True)
    models = _load(path, tiny_dir, precision=precision)
    out = _render(models, spec)
    ref = folder_render.video_latents
    diff = float((out.video_latents - ref).norm() / ref.norm())
    assert 0 < diff < FP8_TOLERANCE, diff
    unscaled = write_single_file(tiny_dir, tmp_path / "fp8-scales-of-one.safetensors", fp8=True, scales_of_one=True)
    wrong = _render(_load(unscaled, tiny_dir, precision=precision), spec)
    wrong_diff = float((wrong.video_latents - ref).norm() / ref.norm())
    assert not wrong_diff < FP8_TOLERANCE, wrong_diff  # NaN counts as a failure to match, too


@pytest.mark.parametrize("precision", ["bf16", "fp8"])
def test_comfyui_fp8_scaled_checkpoints_keep_their_scales(tmp_path, tiny_dir, spec, folder_render, precision):
    """The same FP8 weights under ComfyUI's names (scale_weight, scale_input, a scaled_fp8 marker)."""
    path = write_single_file(tiny_dir, tmp_path / "comfy-fp8.safetensors", fp8=True, comfy=True)
    out = _render(_load(path, tiny_dir, precision=precision), spec)
    ref = folder_render.video_latents
    assert 0 < float((out.video_latents - ref).norm() / ref.norm()) < FP8_TOLERANCE


def test_a_tensor_the_metadata_does_not_describe_is_named(tmp_path, tiny_dir):
    import json

    from single_file_names import ltx_core_config

    config = ltx_core_config(tiny_dir)
    config["transformer"]["num_layers"] = 3  # the file has two blocks
    path = write_single_file(tiny_dir, tmp_path / "bad.safetensors", metadata={"config": json.dumps(config)})
    with pytest.raises(ModelError, match=r"transformer tensor transformer_blocks\.2\.\S+ is missing from the file"):
        _load(path, tiny_dir)


def test_a_single_file_needs_a_text_encoder(tmp_path, tiny_dir):
    path = write_single_file(tiny_dir, tmp_path / "alone.safetensors")
    with pytest.raises(ModelError, match="holds no text encoder: pass --text-encoder PATH"):
        load_models(ModelSource(model=str(path)), device="cpu")


def test_cli_renders_from_a_comfyui_root(cli, tmp_path, tiny_dir):
    """The original service's volume layout: checkpoints/, text_encoders/, loras/ (the fast preset's LoRAs)."""
    root = tmp_path / "models"
    (root / "checkpoints").mkdir(parents=True)
    write_single_file(tiny_dir, root / "checkpoints" / "ltx-2-19b-dev-fp8.safetensors", fp8=True)
    gemma = root / "text_encoders" / "gemma-3-12b-it"
    shutil.copytree(tiny_dir / "text_encoder", gemma)
    for f in (tiny_dir / "tokenizer").iterdir():
        shutil.copy(f, gemma)
    shutil.copytree(tiny_dir / "loras", root / "loras")
    write_image(tmp_path / "face.png", (64, 96))
    r = cli("audiogen", "face.png", "--duration", "0.3", "--resolution", "64x96", "--model", str(root), "--json")
    assert r.code == 0, r.err
    assert (tmp_path / "face.mp4").is_file()
    import json

    sidecar = json.loads((tmp_path / "face.json").read_text())
    assert "ltx-2-19b-dev-fp8.safetensors@" in sidecar["model"] and sidecar["model_version"] == "2.0"


def test_a_comfyui_root_with_several_checkpoints_needs_one_named(cli, tmp_path, tiny_dir):
    root = tmp_path / "models"
    (root / "checkpoints").mkdir(parents=True)
    shutil.copytree(tiny_dir / "loras", root / "loras")  # the default preset's LoRAs, found beside the checkpoint
    for name in ("ltx-2-19b-dev.safetensors", "ltx-2-19b-distilled.safetensors"):
        (root / "checkpoints" / name).write_bytes(b"")
    write_image(tmp_path / "face.png", (64, 96))
    manifest = write_manifest(tmp_path / "jobs.yaml", [{"id": "a", "image": "face.png", "duration": 0.3}])
    r = cli("validate", manifest, "--model", str(root))
    assert r.code == 2 and "holds 2 checkpoints: pick one with --checkpoint NAME" in r.err
    assert "ltx-2-19b-dev.safetensors, ltx-2-19b-distilled.safetensors" in r.err
    assert cli("validate", manifest, "--model", str(root), "--checkpoint", "ltx-2-19b-distilled").code == 0
    r = cli("validate", manifest, "--model", str(root), "--checkpoint", "ltx-2.3")
    assert r.code == 2 and "checkpoint 'ltx-2.3' not in" in r.err
    r = cli("validate", manifest, "--model", str(tmp_path / "nowhere"))
    assert r.code == 2 and "model not found" in r.err


def test_precision_from_the_environment_is_checked(monkeypatch, tmp_path, tiny_dir):
    monkeypatch.setenv("LTX2_PRECISION", "fp4")
    path = write_single_file(tiny_dir, tmp_path / "x.safetensors")
    with pytest.raises(ModelError, match="precision must be auto, bf16 or fp8, got 'fp4'"):
        _load(path, tiny_dir)


def test_loras_apply_to_fp8_blocks_as_peft_applies_them_to_bf16(tmp_path, tiny_dir, spec):
    """peft cannot wrap Fp8Linear: the fast preset's LoRAs go on as forward hooks. The result matches the same
    weights dequantised at load with peft's LoRAs, within the FP8 tolerance, while the LoRAs change it far more."""
    shutil.copytree(tiny_dir / "loras", tmp_path / "loras")
    path = write_single_file(tiny_dir, tmp_path / "fp8.safetensors", fp8=True)
    fast = _fast_with_loras(spec)
    assert {lo.name for lo in fast.loras} >= {"distilled"}
    fp8 = _load(path, tiny_dir, precision="fp8")
    bf16 = _load(path, tiny_dir, precision="bf16")
    assert fp8.fp8_blocks and not bf16.fp8_blocks
    ours, peft = _render(fp8, fast), _render(bf16, fast)
    plain = _render(fp8, spec)  # the same model without LoRAs: hooks come off when the set changes
    rel = lambda a, b: float((a.video_latents - b.video_latents).norm() / b.video_latents.norm())  # noqa: E731
    assert rel(ours, peft) < FP8_TOLERANCE < rel(plain, peft), (rel(ours, peft), rel(plain, peft))
    assert not fp8._lora_hooks


def _fast_with_loras(spec):
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        job = {"id": "f", "image": spec.keyframes[0].image, "fps": 24, "resolution": "64x96", "preset": "fast",
               "seed": 4, "duration": 8 / 24}  # fmt: skip
        specs, problems = plan_manifests([write_manifest(Path(tmp) / "fast.yaml", [job])])
    assert not problems, problems
    return specs[0]


def test_versions_of_diffusers_folders(tmp_path):
    import json

    from ltx2cli.jobs.releases import VERSIONS
    from ltx2cli.weights.versions import folder_version

    def folder(name, **configs):
        for component, config in configs.items():
            (tmp_path / name / component).mkdir(parents=True)
            (tmp_path / name / component / "config.json").write_text(json.dumps(config))
        return tmp_path / name

    assert folder_version(folder("a", transformer={"num_layers": 48})) == "2.0"
    assert folder_version(folder("b", vocoder={"_class_name": "LTX2VocoderWithBWE"})) == "2.3"
    assert folder_version(folder("c", transformer={"use_keyframes_abs_pos_embedding": True})) == "2.5"
    assert VERSIONS["2.3"].vocoder_rate == 48000 and VERSIONS["2.5"].bos_prepended and VERSIONS["2.5"].crf_default == 18


@pytest.fixture(scope="module")
def spiece(tmp_path_factory):
    from single_file_names import train_spiece

    return train_spiece(tmp_path_factory.mktemp("spm") / "gemma.model")


def _reference_gemma(tiny_dir, header):
    """transformers' own Gemma3ForCausalLM with the same config and the tiny model's language-model weights."""
    from safetensors.torch import load_file
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    from ltx2cli.weights.text_encoder import gemma_config

    model = Gemma3ForCausalLM(Gemma3TextConfig(**gemma_config(header))).eval()
    weights = load_file(next((tiny_dir / "text_encoder").glob("*.safetensors")))
    state = {k.removeprefix("language_model."): v for k, v in weights.items() if k.startswith("language_model.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert missing == ["lm_head.weight"] and not unexpected  # tied to the embedding
    model.tie_weights()
    return model


@pytest.mark.parametrize("fp8", [False, True])
def test_comfyui_gemma_file_encodes_like_transformers(tmp_path, tiny_dir, spiece, fp8):
    import sentencepiece as spm
    from single_file_names import GEMMA_TEXT, write_comfy_gemma

    from ltx2cli.weights.header import read_header
    from ltx2cli.weights.text_encoder import load_gemma_file

    path = write_comfy_gemma(tiny_dir, tmp_path / "gemma_3_12B_it.safetensors", spiece, fp8=fp8)
    model, tokenizer = load_gemma_file(path, "cpu", torch.float32)
    text = GEMMA_TEXT[1]
    ids = tokenizer(text, return_tensors="pt").input_ids
    assert ids[0].tolist() == [2, *spm.SentencePieceProcessor(model_proto=spiece).encode(text)]  # BOS + pieces
    ours = model(input_ids=ids, output_hidden_states=True).hidden_states
    theirs = _reference_gemma(tiny_dir, read_header(path))(input_ids=ids, output_hidden_states=True).hidden_states
    diff = max(float((a - b).norm() / b.norm()) for a, b in zip(ours, theirs, strict=True))
    assert diff == 0 if not fp8 else 0 < diff < GEMMA_FP8_TOLERANCE, diff
    if fp8:  # the same file with its scales ignored (all 1) is far outside the tolerance
        unscaled = write_comfy_gemma(tiny_dir, tmp_path / "ones.safetensors", spiece, fp8=True, scales_of_one=True)
        wrong = load_gemma_file(unscaled, "cpu", torch.float32)[0](input_ids=ids, output_hidden_states=True)
        worst = max(float((a - b).norm() / b.norm()) for a, b in zip(wrong.hidden_states, theirs, strict=True))
        assert not worst < GEMMA_FP8_TOLERANCE, worst


def test_a_comfyui_gemma_without_its_tokenizer_is_named(tmp_path, tiny_dir):
    from single_file_names import write_comfy_gemma

    from ltx2cli.weights.text_encoder import load_gemma_file

    path = write_comfy_gemma(tiny_dir, tmp_path / "gemma.safetensors", None)
    with pytest.raises(ModelError, match=r"gemma.safetensors has no embedded tokenizer \(spiece_model\)"):
        load_gemma_file(path, "cpu", torch.float32)


def test_the_original_volume_renders_unchanged(cli, tmp_path, tiny_dir, spiece):
    """checkpoints/ltx-2-19b-dev-fp8.safetensors + text_encoders/gemma_3_12B_it_fp8_scaled.safetensors + loras/."""
    from single_file_names import write_comfy_gemma

    root = tmp_path / "models"
    for sub in ("checkpoints", "text_encoders"):
        (root / sub).mkdir(parents=True)
    write_single_file(tiny_dir, root / "checkpoints" / "ltx-2-19b-dev-fp8.safetensors", fp8=True)
    write_comfy_gemma(tiny_dir, root / "text_encoders" / "gemma_3_12B_it_fp8_scaled.safetensors", spiece, fp8=True)
    shutil.copytree(tiny_dir / "loras", root / "loras")
    write_image(tmp_path / "face.png", (64, 96))
    r = cli("audiogen", "face.png", "--duration", "0.3", "--resolution", "64x96", "--model", str(root), "--json")
    assert r.code == 0, r.err
    import json

    sidecar = json.loads((tmp_path / "face.json").read_text())
    assert re.search(r"\+te:gemma_3_12B_it_fp8_scaled\.safetensors@[0-9a-f]{12}$", sidecar["model"]), sidecar["model"]


def _upscaler_file(tiny_dir, path, metadata: bool = True):
    """The tiny latent upsampler as Lightricks ship theirs: one file, diffusers' tensor names, config in metadata."""
    import json

    from safetensors.torch import load_file, save_file
    from single_file_names import upscaler_metadata

    config = json.loads((tiny_dir / "latent_upsampler" / "config.json").read_text())
    tensors = load_file(tiny_dir / "latent_upsampler" / "diffusion_pytorch_model.safetensors")
    save_file(tensors, str(path), metadata=upscaler_metadata(config) if metadata else None)
    return path


@pytest.mark.parametrize("metadata", [True, False])
def test_a_two_stage_preset_refines_with_the_upscalers_single_file(tmp_path, tiny_dir, tiny_models, spec, metadata):
    """quality (stage 1 at half size, 2x latent upscale, refine): the same frames as the diffusers folder."""
    root = tmp_path / "models"
    for sub in ("checkpoints", "latent_upscale_models"):
        (root / sub).mkdir(parents=True)
    write_single_file(tiny_dir, root / "checkpoints" / "ltx-2-19b-dev.safetensors")
    _upscaler_file(tiny_dir, root / "latent_upscale_models" / "ltx-2-spatial-upscaler-x2-1.0.safetensors", metadata)
    shutil.copytree(tiny_dir / "loras", root / "loras")
    quality = _quality(spec)
    models = load_models(ModelSource(model=str(root), text_encoder=str(tiny_dir)), device="cpu")
    assert models.upsampler is not None and models.upsampler.config.use_rational_resampler
    out, ref = _render(models, quality), _render(tiny_models, quality)
    assert torch.equal(out.video_latents, ref.video_latents) and np.array_equal(out.frames, ref.frames)


def _quality(spec):
    from ltx2cli.plan.resolve import plan_manifests

    tmp = spec.keyframes[0].image.rsplit("/", 1)[0]
    job = {"id": "q", "image": spec.keyframes[0].image, "fps": 24, "resolution": "64x96", "preset": "quality",
           "seed": 4, "duration": 8 / 24, "steps": 2}  # fmt: skip
    specs, problems = plan_manifests([write_manifest(Path(tmp) / "quality.yaml", [job])])
    assert not problems, problems
    return specs[0]


def test_a_distilled_checkpoint_needs_no_distilled_lora(cli, tmp_path, tiny_dir):
    write_image(tmp_path / "face.png", (64, 96))
    manifest = write_manifest(tmp_path / "jobs.yaml", [{"id": "a", "image": "face.png", "duration": 0.3}])
    write_single_file(tiny_dir, tmp_path / "ltx-2-19b-dev.safetensors")
    (tmp_path / "loras").mkdir()  # the preset's other LoRA (camera control) is there; the distilled one is not
    camera = "ltx-2-19b-lora-camera-control-dolly-in.safetensors"
    shutil.copy(tiny_dir / "loras" / camera, tmp_path / "loras" / camera)
    common = ("--text-encoder", str(tiny_dir))
    r = cli("validate", manifest, "--model", "ltx-2-19b-dev.safetensors", *common)
    assert r.code == 2 and "ltx-2-19b-distilled-lora-384.safetensors" in r.err  # the fast preset's LoRA is missing
    write_single_file(tiny_dir, tmp_path / "ltx-2-19b-distilled.safetensors")
    r = cli("batch", manifest, "-o", "out", "--model", "ltx-2-19b-distilled.safetensors", *common)
    assert r.code == 0, r.err
    assert (tmp_path / "out" / "a.mp4").is_file()
    import json

    sidecar = json.loads((tmp_path / "out" / "a.json").read_text())  # the LoRAs applied: not the distilled one
    asked = sidecar["spec"]["loras"]  # what was asked for stays in the spec
    assert {lo["name"] for lo in asked} == {"distilled", "camera-dolly-in"}
    applied = [{k: v for k, v in lo.items() if v is not None} for lo in asked if lo["name"] != "distilled"]
    assert sidecar["loras"] == applied


def test_the_runpod_worker_loads_a_single_file_with_its_text_encoder_from_the_environment(
    monkeypatch, tmp_path, tiny_dir
):
    from ltx2cli.worker import handler as runpod_handler

    path = write_single_file(tiny_dir, tmp_path / "ltx-2-19b-dev.safetensors")
    monkeypatch.setenv("LTX2_TEXT_ENCODER", str(tiny_dir))
    monkeypatch.setenv("LTX2_COMPILE", "off")
    renderer, problem = runpod_handler._load(str(path), allow_cpu=True)
    assert problem is None and renderer.models.identity.startswith("ltx-2-19b-dev.safetensors@")
    monkeypatch.delenv("LTX2_TEXT_ENCODER")
    renderer, problem = runpod_handler._load(str(tmp_path / "nope.safetensors"), allow_cpu=True)
    assert renderer is None and problem.startswith("E_MODEL: model not found")


def _nudge(path: Path, component: str) -> None:
    """Change the first byte of one tensor of `component` (its name prefix): same layout, other numbers."""
    from ltx2cli.weights.header import read_header

    header = read_header(path)
    name = min(n for n in header.tensors if n.startswith(component))
    offset = header.data_start + header.tensors[name].offsets[0]
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_weights_with_one_layout_and_other_numbers_are_other_models(cli, tmp_path, tiny_dir):
    """Encoded prompts are stored under the model's identity: a fine-tune, a distilled twin or another Gemma with
    the same names and shapes must not find the first one's prompts."""
    from ltx2cli.weights.fingerprint import fingerprint
    from ltx2cli.weights.source import model_identity

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a = write_single_file(tiny_dir, tmp_path / "a" / "ltx-2.safetensors")
    b = tmp_path / "b" / "ltx-2.safetensors"
    shutil.copy(a, b)
    assert fingerprint([a]) == fingerprint([b])
    _nudge(b, "model.diffusion_model.video_embeddings_connector")
    assert fingerprint([a]) != fingerprint([b])

    write_image(tmp_path / "face.png", (64, 96))
    runs = []
    for name in ("one", "two"):  # two copies of the tiny folder under one name; the second's Gemma is nudged
        folder = tmp_path / name / "LTX-2"
        shutil.copytree(tiny_dir, folder)
        if name == "two":
            _nudge(next((folder / "text_encoder").glob("*.safetensors")), "language_model.model.layers.0")
        runs.append(
            cli("audiogen", "face.png", "-d", "0.3", "-r", "64x96", "-o", f"{name}.mp4", "--model", str(folder))
        )
        assert runs[-1].code == 0, runs[-1].err
    assert model_identity(tmp_path / "one" / "LTX-2") != model_identity(tmp_path / "two" / "LTX-2")
    assert "prompts: 1 encoded" in runs[1].err, runs[1].err


@pytest.mark.parametrize(
    ("metadata", "error"),
    [
        ({"model_version": "2.5.0"}, r"x.safetensors: model_version says 2.5 but the tensors are LTX-2 \(19B\): "),
        ({"config": "{not json"}, r"x.safetensors: `config` metadata is not valid JSON \(Expecting property name"),
        (  # the tiny model's sizes are not the reference's: the error must not blame metadata the file lacks
            {},
            r"x.safetensors: transformer tensor \S+ has shape \[\d+(, \d+)*\], the transformer configured by the shipped "
            r"LTX-2 \(19B\) reference config \(the file has no `config` metadata\) expects",
        ),
    ],
    ids=["version-contradicts-tensors", "config-not-json", "no-metadata"],
)
def test_metadata_that_lies_or_is_missing_is_named_at_load(tmp_path, tiny_dir, metadata, error):
    path = write_single_file(tiny_dir, tmp_path / "x.safetensors", metadata=metadata)
    with pytest.raises(ModelError, match=error):
        _load(path, tiny_dir)


def test_doctor_checks_a_single_files_text_encoder_as_loading_finds_it(cli, tmp_path, tiny_dir, spiece):
    """The text encoder's parameters come from its own header (no Gemma 3 12B assumed), and one that is not given,
    not there or not a text encoder is a problem (exit 1), as it would fail the render."""
    import json

    from single_file_names import write_comfy_gemma

    from ltx2cli.weights.header import read_header

    model = write_single_file(tiny_dir, tmp_path / "ltx-2-19b-dev.safetensors")
    gemma = write_comfy_gemma(tiny_dir, tmp_path / "gemma_3_12B_it.safetensors", spiece)
    r = cli("doctor", "--model", str(model), "--text-encoder", str(gemma), "--json")
    report = json.loads(r.out)["model"]
    params = (
        sum(t.numel for t in read_header(gemma).tensors.values()) - read_header(gemma).tensors["spiece_model"].numel
    )
    assert r.code == 0 and report["text_encoder"]["params"] == params and report["text_encoder"]["family"] == "Gemma 3"
    assert report["bf16_weights_gib"] < 0.1 and not report["problems"]  # tiny, both of them
    for args, problem in [
        ((), "a single-file checkpoint holds no text encoder: pass --text-encoder PATH"),
        (("--text-encoder", "nowhere"), "text encoder not found: nowhere"),
        (("--text-encoder", str(model)), "ltx-2-19b-dev.safetensors is not a text encoder"),
    ]:
        r = cli("doctor", "--model", str(model), *args)
        assert r.code == 1 and [line for line in r.out.splitlines() if line.startswith("problem") and problem in line]


def test_options_the_model_has_no_use_for_are_not_silently_ignored(cli, tmp_path, tiny_dir, monkeypatch):
    """--checkpoint picks a file of a ComfyUI root: with any other model it would be ignored (a usage error, exit 2);
    a --text-encoder beside a diffusers folder that loads its own is a warning. Their environment variables are
    deployment-wide defaults: not checked."""
    write_image(tmp_path / "face.png", (64, 96))
    manifest = write_manifest(tmp_path / "jobs.yaml", [{"id": "a", "image": "face.png", "duration": 0.3}])
    model = write_single_file(tiny_dir, tmp_path / "ltx-2-19b-dev.safetensors")
    for command in (("validate", manifest), ("doctor",), ("audiogen", "face.png", "-d", "0.3")):
        for given, kind in ((str(model), "single-file checkpoint"), ("tiny", "diffusers folder")):
            r = cli(*command, "--model", given, "--checkpoint", "ltx-2-19b-distilled", "--text-encoder", str(tiny_dir))
            why = (
                f"--checkpoint 'ltx-2-19b-distilled' picks a file of a ComfyUI root's checkpoints/, but --model {given}"
            )
            assert r.code == 2 and f"{why} is a {kind}" in " ".join(r.err.split()), (command, r.err)
    monkeypatch.setenv("LTX2_CHECKPOINT", "ltx-2-19b-distilled")
    r = cli("validate", manifest, "--model", "tiny", "--text-encoder", str(model))
    warning = f"warning: --text-encoder {model} is not used: the diffusers folder tiny loads its own text_encoder/"
    assert r.code == 0 and warning in " ".join(r.err.split()), r.err


def test_a_two_stage_preset_without_the_upsampler_is_refused_before_anything_loads(cli, tmp_path, tiny_dir):
    """Like a missing LoRA: found when the jobs are checked (exit 2), naming where the upsampler is looked for, not
    after the model has loaded and the prompts are encoded."""
    write_image(tmp_path / "face.png", (64, 96))
    jobs = [{"id": "q", "image": "face.png", "duration": 0.3, "preset": "quality"}]
    manifest = write_manifest(tmp_path / "jobs.yaml", jobs)
    model = write_single_file(tiny_dir, tmp_path / "ltx-2-19b-dev.safetensors")
    shutil.copytree(tiny_dir / "loras", tmp_path / "loras")
    common = ("--model", str(model), "--text-encoder", str(tiny_dir))
    where = f"looked for in {tmp_path / 'latent_upscale_models'}/*.safetensors or {tmp_path / 'upscale_models'}/"
    for command in (("validate", manifest), ("batch", manifest, "-o", "out")):
        r = cli(*command, *common)
        why = "job 'q': preset: the quality preset is two-stage: its refine stage needs the latent upsampler, "
        assert r.code == 2 and why + where in " ".join(r.err.split()), r.err
        assert "model " not in r.err and not (tmp_path / "out" / "q.mp4").exists()  # nothing loaded or rendered
    (tmp_path / "latent_upscale_models").mkdir()
    _upscaler_file(tiny_dir, tmp_path / "latent_upscale_models" / "ltx-2-spatial-upscaler-x2-1.0.safetensors")
    r = cli("validate", manifest, *common)
    assert r.code == 0, r.err
