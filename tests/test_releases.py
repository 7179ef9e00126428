"""LTX-2.3 and LTX-2.5 as Lightricks ship them: single-file checkpoints (ltx-core `config` metadata in 2.3 / 2.5
keys, each architecture switch checked against the tensors it adds) render exactly what their diffusers folders
render; LoRA short names resolve to each release's own files; the conditioning image's CRF default is the
release's."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_manifest
from media import write_image
from single_file_names import ltx_core_config, write_single_file
from test_render_cli import read_clip, same_clip
from test_single_file import _render
from test_single_file import spec as single_file_spec

from ltx2cli.engine.models.loading import load_models
from ltx2cli.errors import ModelError
from ltx2cli.plan.resolve import plan_manifests
from ltx2cli.weights.source import ModelSource

spec = single_file_spec  # the same 8-frame job as the single-file tests (a module-scoped fixture)

RELEASES = {"2.3": "2.3.0", "2.5": "2.5.0"}  # variant -> the header's model_version written


@pytest.fixture(scope="module", params=list(RELEASES))
def release(request, _model_cache) -> tuple[str, Path]:
    from ltx2cli.synthetic.tiny import tiny_model_dir

    return request.param, tiny_model_dir(variant=request.param)


def test_the_tiny_23_is_23(_model_cache):
    from ltx2cli.synthetic.tiny import tiny_model_dir
    from ltx2cli.weights.versions import folder_version

    folder = tiny_model_dir(variant="2.3")
    models = load_models(str(folder), device="cpu")
    config = models.transformer.config
    assert folder_version(folder) == models.version == "2.3" and not models.keyframe_embedding
    assert config.gated_attn and config.cross_attn_mod and config.ff_bias and models.perturbed_attn
    assert type(models.text_encoder).__name__ == "Gemma3ForConditionalGeneration"
    assert models.vocoder.config.output_sampling_rate == 48000


@pytest.mark.parametrize("declared", [True, False], ids=["model_version", "tensors-only"])
def test_a_single_file_of_the_release_renders_exactly_what_its_folder_renders(tmp_path, release, spec, declared):
    """Every component's config comes out as the folder's (2.3: gated attention, prompt AdaLN, per-modality
    connectors, BWE vocoder; 2.5 also the bias-free video FFN and the keyframe embedding), whether the header says
    model_version or the tensors alone tell the release; then the render is bit-exact in float32."""
    variant, folder = release
    path = write_single_file(folder, tmp_path / f"ltx-{variant}-tiny.safetensors",
                             model_version=RELEASES[variant] if declared else None)  # fmt: skip
    meta = json.loads(__import__("ltx2cli.weights.header", fromlist=["x"]).read_header(path).metadata["config"])
    if variant == "2.5":  # the real 2.5 keys (../shared/reference/single-file, the SKETCH)
        assert meta["transformer"]["ff_bias"] is False and meta["transformer"]["use_keyframes_abs_pos_embedding"]
    assert meta["transformer"]["apply_gated_attention"] and set(meta["vocoder"]) == {"vocoder", "bwe"}
    models = load_models(ModelSource(model=str(path), text_encoder=str(folder)), device="cpu")
    reference = load_models(str(folder), device="cpu")
    assert models.version == variant
    for name in ("transformer", "connectors", "vae", "audio_vae", "vocoder"):
        ours, theirs = getattr(models, name), getattr(reference, name)
        assert type(ours) is type(theirs)
        public = lambda c: {k: v for k, v in dict(c).items() if not k.startswith("_")}  # noqa: E731
        assert public(ours.config) == public(theirs.config), name
    out, ref = _render(models, spec), _render(reference, spec)
    assert torch.equal(out.video_latents, ref.video_latents)
    assert np.array_equal(out.frames, ref.frames) and np.array_equal(out.audio, ref.audio)


def test_metadata_that_contradicts_the_tensors_is_named(tmp_path, _model_cache):
    from ltx2cli.synthetic.tiny import tiny_model_dir

    folder = tiny_model_dir(variant="2.5")
    config = ltx_core_config(folder)
    config["transformer"]["ff_bias"] = True  # the 2.5 file has no video FFN bias
    path = write_single_file(folder, tmp_path / "bad.safetensors", metadata={"config": json.dumps(config)})
    with pytest.raises(ModelError, match=r"bad.safetensors: its metadata says ff_bias: true, but tensor "
                                         r"transformer_blocks\.0\.ff\.net\.0\.proj\.bias is not in the file"):  # fmt: skip
        load_models(ModelSource(model=str(path), text_encoder=str(folder)), device="cpu")


def _comfy_root(tmp_path: Path, variant: str, folder: Path) -> Path:
    """checkpoints/ (the single file), text_encoders/ (the Gemma folder), loras/ (the release's LoRA names)."""
    root = tmp_path / f"models-{variant}"
    (root / "checkpoints").mkdir(parents=True)
    write_single_file(
        folder, root / "checkpoints" / f"ltx-{variant}-22b-dev.safetensors", model_version=RELEASES[variant]
    )
    gemma = root / "text_encoders" / "gemma"
    shutil.copytree(folder / "text_encoder", gemma)
    for f in (folder / "tokenizer").iterdir():
        shutil.copy(f, gemma)
    shutil.copytree(folder / "loras", root / "loras")
    return root


def test_the_stock_fast_preset_renders_the_release_from_a_comfyui_root_as_from_its_folder(cli, tmp_path, release):
    """The built-in fast preset (distilled + camera-dolly-in LoRAs) on each release: the distilled LoRA is that
    release's own file, the camera LoRA (LTX-2 19B only) is left out with a warning, the image CRF is the
    release's; the single file and the folder give the same MP4 frames and sound."""
    from ltx2cli.jobs.releases import VERSIONS

    variant, folder = release
    write_image(tmp_path / "face.png", (64, 96))
    args = ("audiogen", "face.png", "--duration", "0.3", "--resolution", "64x96", "--seed", "7", "--json")
    clips, sidecars = [], []
    for name, model in (("folder", folder), ("root", _comfy_root(tmp_path, variant, folder))):
        r = cli(*args, "-o", f"{name}.mp4", "--model", str(model))
        assert r.code == 0, r.err
        assert "preset's LoRA 'camera-dolly-in' is left out" in r.err
        clips.append(read_clip(tmp_path / f"{name}.mp4"))
        sidecars.append(json.loads((tmp_path / f"{name}.json").read_text()))
    for sidecar in sidecars:
        assert sidecar["model_version"] == variant and sidecar["loras"] == [{"name": "distilled", "strength": 0.6}]
        assert sidecar["spec"]["img_compression"] == VERSIONS[variant].crf_default  # 2.5: 18, 2.3: 23
    assert same_clip(*clips)


def test_the_stock_balanced_preset_renders_on_25(cli, tmp_path, _model_cache):
    from ltx2cli.synthetic.tiny import tiny_model_dir

    write_image(tmp_path / "face.png", (64, 96))
    r = cli("audiogen", "face.png", "--duration", "0.3", "--resolution", "64x96", "--preset", "balanced",
            "--model", str(tiny_model_dir(variant="2.5")), "--json")  # fmt: skip
    assert r.code == 0, r.err
    assert json.loads((tmp_path / "face.json").read_text())["loras"] == [{"name": "distilled", "strength": 0.6}]


def _job_manifest(tmp_path: Path, **fields) -> Path:
    write_image(tmp_path / "face.png", (64, 96))
    return write_manifest(tmp_path / "jobs.yaml", [{"id": "a", "image": "face.png", "duration": 0.3, **fields}])


def test_a_lora_the_release_lacks_is_refused_before_rendering_in_one_line(cli, tmp_path, _model_cache):
    from ltx2cli.synthetic.tiny import tiny_model_dir

    manifest = _job_manifest(tmp_path, loras=[{"name": "camera-jib-up", "strength": 0.5}])
    r = cli("batch", manifest, "-o", "out", "--model", str(tiny_model_dir(variant="2.5")))
    assert r.code == 2 and not (tmp_path / "out" / "a.mp4").exists()
    lines = [line for line in r.err.splitlines() if "camera-jib-up" in line]
    assert len(lines) == 1, r.err
    assert "LoRA 'camera-jib-up' does not exist for LTX-2.5 (22B): Lightricks' LoRAs for it are distilled" in lines[0]


def test_an_ltx2_lora_on_25_is_refused_by_its_header(cli, tmp_path, tiny_models, _model_cache):
    from ltx2cli.synthetic.tiny import tiny_model_dir

    lora = tiny_models.path / "loras" / "ltx-2-19b-distilled-lora-384.safetensors"
    manifest = _job_manifest(tmp_path, loras=[{"path": str(lora)}])
    r = cli("validate", manifest, "--model", str(tiny_model_dir(variant="2.5")))
    assert r.code == 2
    assert "ltx-2-19b-distilled-lora-384.safetensors was made for LTX-2 (19B), the loaded model is LTX-2.5" in r.err


def test_short_names_resolve_to_the_release_files(tmp_path):
    from ltx2cli.jobs.job import LoraRef
    from ltx2cli.jobs.loras import canonical_name
    from ltx2cli.weights.lora_files import lora_file

    distilled = LoraRef(name="distilled")
    (tmp_path / "loras").mkdir()
    for stem in (
        "ltx-2-19b-distilled-lora-384",
        "ltx-2.3-22b-distilled-lora-384",
        "ltx-2.5-22b-distilled-lora-450-bf16",
    ):
        (tmp_path / "loras" / f"{stem}.safetensors").write_bytes(b"")
    assert lora_file(tmp_path, distilled, "2.0").name == "ltx-2-19b-distilled-lora-384.safetensors"
    assert lora_file(tmp_path, distilled, "2.3").name == "ltx-2.3-22b-distilled-lora-384.safetensors"  # 1.0
    (tmp_path / "loras" / "ltx-2.3-22b-distilled-lora-384-1.1.safetensors").write_bytes(b"")
    assert lora_file(tmp_path, distilled, "2.3").name == "ltx-2.3-22b-distilled-lora-384-1.1.safetensors"  # 1.1 first
    assert lora_file(tmp_path, distilled, "2.5").name == "ltx-2.5-22b-distilled-lora-450-bf16.safetensors"
    # a stem of any release names the same LoRA, whose file is then the loaded release's
    assert (
        canonical_name("ltx-2-19b-distilled-lora-384")
        == canonical_name("ltx-2.3-22b-distilled-lora-384")
        == "distilled"
    )
    with pytest.raises(ModelError, match=r"LoRA 'camera-static' does not exist for LTX-2\.3 \(22B\)"):
        lora_file(tmp_path, LoraRef(name="camera-static"), "2.3")


@pytest.mark.parametrize(("version", "given", "expected"), [(None, None, 23), ("2.5", None, 18), ("2.5", 30, 30),
                                                            ("2.3", None, 23), ("2.0", None, 23)])  # fmt: skip
def test_the_image_crf_default_is_the_releases(tmp_path, version, given, expected):
    manifest = _job_manifest(tmp_path, **({"img_compression": given} if given is not None else {}))
    specs, problems = plan_manifests([manifest], model_version=version)
    assert not problems and specs[0].img_compression == expected


def test_validate_without_a_model_says_what_it_planned_for(cli, tmp_path):
    r = cli("validate", _job_manifest(tmp_path))
    assert r.code == 0, r.err
    assert "planned for LTX-2 (19B) (no --model): jobs without img_compression get its 23" in " ".join(r.err.split())


def test_models_inspect_names_the_loras_the_release_presets_need(cli, release):
    variant, folder = release
    r = cli("models", "inspect", str(folder), "--json")
    assert r.code == 0, r.err
    loras = json.loads(r.out)["preset_loras"]
    names = {
        "2.3": "ltx-2.3-22b-distilled-lora-384-1.1.safetensors",
        "2.5": "ltx-2.5-22b-distilled-lora-450-bf16.safetensors",
    }
    assert loras == {"distilled": names[variant], "camera-dolly-in": None}


@pytest.mark.parametrize(
    ("variant", "encoder_variant", "family"), [("2.5", "2.0", "Gemma 3"), ("2.0", "2.5", "Gemma 4")]
)
def test_a_text_encoder_of_the_wrong_gemma_is_refused(cli, tmp_path, _model_cache, variant, encoder_variant, family):
    """2.5 conditions on Gemma 4, 2.0 and 2.3 on Gemma 3: another one's prompts would be read by the wrong model.
    Refused from the headers before anything loads, and a problem for doctor."""
    from ltx2cli.jobs.releases import VERSIONS
    from ltx2cli.synthetic.tiny import tiny_model_dir

    path = write_single_file(tiny_model_dir(variant=variant), tmp_path / "ltx.safetensors",
                             model_version=RELEASES.get(variant))  # fmt: skip
    encoder = str(tiny_model_dir(variant=encoder_variant))
    wanted = VERSIONS[variant].text_encoder
    message = f"conditions on {wanted}, but the text encoder {encoder}/text_encoder is {family}"
    with pytest.raises(ModelError, match=re.escape(f"ltx.safetensors: {VERSIONS[variant].name} {message}")):
        load_models(ModelSource(model=str(path), text_encoder=encoder), device="cpu")
    r = cli("doctor", "--model", str(path), "--text-encoder", encoder)
    assert r.code == 1 and [line for line in r.out.splitlines() if line.startswith("problem") and message in line]
