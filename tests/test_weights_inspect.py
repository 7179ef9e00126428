"""Weights from headers alone: Lightricks' single-file names map onto diffusers' modules at full size, and
`ltx2 models inspect` reports kinds, versions and counts without reading tensor data."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from single_file_names import NAMERS, VAE_EXTRAS, write_sparse_safetensors

from ltx2cli.weights import components
from ltx2cli.weights.inspect import inspect_path
from ltx2cli.weights.layout import COMPONENTS, component_of, split, to_diffusers

ROOT = Path(__file__).resolve().parent.parent
METADATA = json.loads((ROOT / "configs" / "reference" / "single-file" / "ltx2_19b_metadata.json").read_text())
DTYPES = {torch.bfloat16: "BF16", torch.float32: "F32"}
# ../shared/reference/ltx2-configs/README.md: diffusers modules of LTX-2 built on the meta device, billions
REFERENCE_B = {"transformer": 18.876, "connectors": 1.431, "vae": 1.222, "audio_vae": 0.053, "vocoder": 0.056}


def _full_size(config_dir: Path) -> dict[str, dict[str, tuple[int, ...]]]:
    """{component: {diffusers name: shape}} of a full-size model, built on the meta device."""
    out = {}
    for name in COMPONENTS:
        module = components.construct(config_dir, name, torch.bfloat16)
        out[name] = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    return out


@pytest.fixture(scope="module")
def full_size() -> dict[str, dict[str, tuple[int, ...]]]:
    return _full_size(components.reference_config_dir())  # LTX-2 19B


def _single_file(full_size, fp8: bool = False) -> dict[str, tuple[str, tuple[int, ...]]]:
    """The header entries a real single file of that model has: ltx-core names, bf16 (fp8 block weights)."""
    tensors = {}
    for component, shapes in full_size.items():
        for key, shape in shapes.items():
            name = NAMERS[component](key)
            blockweight = component == "transformer" and ".transformer_blocks." in name and name.endswith(".weight")
            if fp8 and blockweight and len(shape) == 2:
                tensors[name] = ("F8_E4M3", shape)
                tensors[name + "_scale"] = ("F32", ())
            else:
                tensors[name] = ("BF16", shape)
    for extra in VAE_EXTRAS:
        tensors[extra] = ("BF16", (128,))
    return tensors


@pytest.mark.parametrize("version", ["LTX-2", "LTX-2.3", "LTX-2.5"])
def test_single_file_names_map_onto_the_full_size_modules_exactly(version):
    """Every tensor of a full-size single file lands in a diffusers module (diffusers' own converters for the
    transformer and the VAEs, plus the 2.3 renames), and every module tensor is covered: nothing missing, nothing
    left over, shapes equal. (The file's names come from tests/single_file_names.py, whose transformer names the
    real 2.5 header below confirms.)"""
    full_size = _full_size(ROOT / "configs" / "reference" / version)
    parts, unknown = split({name: shape for name, (_, shape) in _single_file(full_size).items()})
    assert not unknown
    for component in COMPONENTS:
        mapped = to_diffusers(component, parts[component])
        assert mapped == full_size[component], component
    assert component_of("text_embedding_projection.aggregate_embed.weight") == "connectors"
    assert component_of("model.diffusion_model.video_embeddings_connector.x") == "connectors"
    assert component_of("cond_stage_model.x") is None


def test_inspect_a_sparse_full_size_checkpoint_fast(full_size, tmp_path):
    path = write_sparse_safetensors(tmp_path / "ltx-2-19b-dev.safetensors", _single_file(full_size), METADATA)
    assert path.stat().st_size > 40 * 2**30 and path.stat().st_blocks * 512 < 2**20  # 43 GB, the data a hole
    t0 = time.perf_counter()
    report = inspect_path(path)
    assert time.perf_counter() - t0 < 1.0
    assert report["kind"] == "single-file checkpoint" and report["version"] == "2.0" and not report["problems"]
    assert {k: c["params_b"] for k, c in report["components"].items()} == REFERENCE_B
    assert report["components"]["transformer"]["dtypes"] == {"BF16": len(full_size["transformer"])}
    assert report["config_sections"] == ["audio_vae", "transformer", "vae", "vocoder"] and report["fp8"] == []


def test_a_checkpoint_cut_short_is_named_truncated(cli, full_size, tmp_path):
    """A download or copy that stopped early keeps a whole header: only the file's size against the header's last
    data offset tells. inspect and doctor say so in one line; loading it would fail deep inside safetensors."""
    path = write_sparse_safetensors(tmp_path / "ltx-2-19b-dev.safetensors", _single_file(full_size), METADATA)
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 2)
    report = inspect_path(path)
    assert len(report["problems"]) == 1 and "ltx-2-19b-dev.safetensors: truncated: " in report["problems"][0]
    assert "copy or download it again" in report["problems"][0]
    r = cli("models", "inspect", str(path))
    assert r.code == 1 and "truncated" in r.out, r.out


def test_inspect_reports_fp8_with_scales_and_a_missing_scale(full_size, tmp_path):
    tensors = _single_file(full_size, fp8=True)
    report = inspect_path(write_sparse_safetensors(tmp_path / "fp8.safetensors", tensors, METADATA))
    t = report["components"]["transformer"]
    assert report["fp8"] == ["transformer"] and t["fp8_tensors"] == t["scale_tensors"] == 1344
    assert t["params_b"] == 18.876 and not report["problems"]
    del tensors["model.diffusion_model.transformer_blocks.0.attn1.to_q.weight_scale"]
    report = inspect_path(write_sparse_safetensors(tmp_path / "broken.safetensors", tensors, METADATA))
    assert report["problems"] == ["transformer: 1344 float8 tensors but only 1343 scales"]


def test_version_comes_from_metadata_then_from_tensor_names(full_size, tmp_path):
    tensors = _single_file(full_size)
    tensors["model.diffusion_model.prompt_adaln_single.linear.weight"] = ("BF16", (8, 8))
    report = inspect_path(write_sparse_safetensors(tmp_path / "b.safetensors", tensors, METADATA))
    assert report["version"] == "2.3" and "prompt_adaln_single" in report["version_from"]
    declared = METADATA | {"model_version": "2.3.1"}
    report = inspect_path(write_sparse_safetensors(tmp_path / "c.safetensors", tensors, declared))
    assert report["version"] == "2.3" and report["version_from"] == "model_version 2.3.1" and not report["problems"]


@pytest.mark.parametrize(
    ("metadata", "problem"),
    [
        ({"model_version": "2.5.0"}, "model_version says 2.5 but the tensors are LTX-2 (19B): none of the tensors"),
        ({"gemma_source_checkpoint": '{"gemma_version": "gemma4-12b"}'}, "names Gemma 4 (LTX-2.5) but the tensors"),
        ({"model_version": "banana"}, "model_version 'banana' is no LTX-2 release (valid: 2.0.x, 2.3.x, 2.5.x)"),
    ],
)
def test_metadata_that_lies_about_the_release_is_a_problem(cli, full_size, tmp_path, metadata, problem):
    """The tensors are 2.0's: a release the metadata claims against them, or one that does not exist, is named,
    and the version reported is the tensors'."""
    path = write_sparse_safetensors(tmp_path / "lies.safetensors", _single_file(full_size), METADATA | metadata)
    report = inspect_path(path)
    assert report["version"] == "2.0" and [p for p in report["problems"] if problem in p], report["problems"]
    r = cli("models", "inspect", str(path))
    assert r.code == 1 and problem in " ".join(r.out.split()), r.out


def test_config_metadata_that_is_not_json_is_named_as_such(full_size, tmp_path):
    path = write_sparse_safetensors(tmp_path / "x.safetensors", _single_file(full_size), {"config": "{not json"})
    problems = inspect_path(path)["problems"]
    assert len(problems) == 1 and problems[0].startswith("`config` metadata is not valid JSON (Expecting"), problems
    path = write_sparse_safetensors(tmp_path / "y.safetensors", _single_file(full_size), {"config": "[1]"})
    assert inspect_path(path)["problems"] == ["`config` metadata is JSON but not an object (a list): loading it fails"]
    path = write_sparse_safetensors(tmp_path / "z.safetensors", _single_file(full_size), {})
    assert inspect_path(path)["problems"] == [
        "no `config` in the header metadata: the shipped reference configs would be used"
    ]


def _lora(path, blocks: int, width: int, rank: int = 16, prefix: str = "diffusion_model."):
    tensors = {}
    for b in range(blocks):
        for mod in ("attn1.to_q", "attn1.to_k", "attn2.to_v", "ff.net.2"):
            tensors[f"{prefix}transformer_blocks.{b}.{mod}.lora_A.weight"] = ("BF16", (rank, width))
            tensors[f"{prefix}transformer_blocks.{b}.{mod}.lora_B.weight"] = ("BF16", (width, rank))
    return write_sparse_safetensors(path, tensors, {})


def test_inspect_tells_which_model_a_lora_was_made_for(tmp_path):
    old = inspect_path(_lora(tmp_path / "ltxv-2b.safetensors", 28, 2048))
    assert old["kind"] == "LoRA" and old["made_for"].startswith("LTX-Video 0.9.x 2B") and old["ranks"] == [16]
    new = inspect_path(_lora(tmp_path / "ltx2.safetensors", 48, 4096, prefix="transformer."))
    assert new["made_for"].startswith("LTX-2") and new["format"] == "diffusers" and new["blocks"] == 48


def test_inspect_a_comfyui_root_and_its_text_encoder(cli, full_size, tmp_path):
    root = tmp_path / "models"
    for sub in ("checkpoints", "text_encoders", "loras"):
        (root / sub).mkdir(parents=True)
    write_sparse_safetensors(
        root / "checkpoints" / "ltx-2-19b-dev-fp8.safetensors", _single_file(full_size, True), METADATA
    )
    gemma = {f"model.layers.{i}.self_attn.q_proj.weight": ("F8_E4M3", (4096, 3840)) for i in range(48)}
    gemma |= {f"model.layers.{i}.self_attn.q_proj.scale_weight": ("F32", ()) for i in range(48)}
    gemma |= {"model.embed_tokens.weight": ("BF16", (262208, 3840)), "scaled_fp8": ("F8_E4M3", (0,))}
    encoder_file = root / "text_encoders" / "gemma_3_12B_it_fp8_scaled.safetensors"
    write_sparse_safetensors(encoder_file, gemma | {"spiece_model": ("U8", (4096,))}, {})
    _lora(root / "loras" / "ltxv-2b-lora.safetensors", 28, 2048)
    report = inspect_path(root)
    assert report["kind"] == "ComfyUI models root" and not report["problems"], report["problems"]
    folders = report["folders"]
    assert folders["checkpoints"][0]["kind"] == "single-file checkpoint" and folders["checkpoints"][0]["fp8"]
    assert folders["loras"][0]["made_for"].startswith("LTX-Video 0.9.x 2B")
    assert cli("models", "inspect", str(root)).code == 0

    write_sparse_safetensors(encoder_file, gemma, {})  # ComfyUI's file without its tokenizer
    encoder = inspect_path(encoder_file)
    assert encoder["kind"] == "text encoder" and encoder["layers"] == 48 and encoder["fp8_scaled"]
    assert encoder["hidden"] == 3840 and encoder["problems"] == ["no embedded tokenizer (spiece_model): give a folder"]
    # a listed file's problem is the root's too: printed, not only in --json, and exit 1
    problem = "text_encoders/gemma_3_12B_it_fp8_scaled.safetensors: no embedded tokenizer (spiece_model)"
    assert [p for p in inspect_path(root)["problems"] if p.startswith(problem)]
    r = cli("models", "inspect", str(root))
    assert r.code == 1 and [line for line in r.out.splitlines() if line.startswith("problem") and problem in line]


def test_models_inspect_cli(cli, tmp_path, tiny_models):
    r = cli("models", "inspect", str(tiny_models.path), "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["kind"] == "diffusers folder" and set(report["components"]) >= set(COMPONENTS)
    (tmp_path / "junk.safetensors").write_bytes(b"not a model")
    r = cli("models", "inspect", "junk.safetensors")
    assert r.code == 1 and "not a safetensors file" in r.out
    r = cli("models", "inspect", "nowhere")
    assert r.code == 1 and "does not exist" in r.out


@pytest.fixture
def ltxv_lora_manifest(tmp_path):
    from conftest import write_manifest
    from media import write_image

    write_image(tmp_path / "face.png", (64, 96))
    _lora(tmp_path / "ltxv-2b-style.safetensors", 28, 2048)
    jobs = [
        {"id": "plain", "image": "face.png", "duration": 0.3},
        {"id": "styled", "image": "face.png", "duration": 0.3, "loras": [{"path": "ltxv-2b-style.safetensors"}]},
    ]
    return write_manifest(tmp_path / "jobs.yaml", {"defaults": {"resolution": "64x96"}, "jobs": jobs})


def test_a_lora_for_another_model_is_refused_before_anything_renders(cli, tmp_path, ltxv_lora_manifest):
    r = cli("validate", ltxv_lora_manifest, "--model", "tiny")
    assert r.code == 2
    line = next(x for x in r.err.splitlines() if "ltxv-2b-style" in x)
    assert "job 'styled': loras: LoRA" in line and "LTX-Video 0.9.x 2B (28 blocks, 2048 wide)" in line
    assert "not the loaded model (2 blocks, 32 wide)" in line and "plain" not in r.err
    assert cli("validate", ltxv_lora_manifest).code == 0  # no model named: the files alone are fine

    r = cli("batch", ltxv_lora_manifest, "-o", "out", "--model", "tiny")
    assert r.code == 2 and "ltxv-2b-style.safetensors was made for LTX-Video" in r.err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.mp4"))


def test_a_file_that_is_not_a_lora_is_named(cli, tmp_path, ltxv_lora_manifest):
    write_sparse_safetensors(tmp_path / "ltxv-2b-style.safetensors", {"some.weight": ("BF16", (4, 4))}, {})
    r = cli("validate", ltxv_lora_manifest, "--model", "tiny")
    assert r.code == 2 and "ltxv-2b-style.safetensors is not a LoRA (no lora_A / lora_down tensors)" in r.err


def _bad_rank_lora(path):
    """The tiny model's shape, but each lora_B has one column more than its lora_A has rows."""
    tensors = {}
    for b in range(2):
        for mod in ("attn1.to_q", "attn2.to_v"):
            tensors[f"diffusion_model.transformer_blocks.{b}.{mod}.lora_A.weight"] = ("BF16", (4, 32))
            tensors[f"diffusion_model.transformer_blocks.{b}.{mod}.lora_B.weight"] = ("BF16", (32, 5))
    return write_sparse_safetensors(path, tensors, {})


@pytest.mark.parametrize(
    ("write", "problem"),
    [
        (_bad_rank_lora, "the ranks of 4 layers disagree, e.g. diffusion_model.transformer_blocks.0.attn1.to_q: "
                         "lora_A [4, 32] against lora_B [32, 5]"),
        (lambda path: _lora(path, 2, 32, rank=4, prefix=""), "16 of its 16 tensors have no prefix LTX-2's LoRA "
                                                             "loader reads (diffusion_model., transformer., "),
    ],
    ids=["ranks-disagree", "no-prefix"],
)  # fmt: skip
def test_a_lora_that_cannot_load_into_any_model_is_refused_in_one_line(
    cli, tmp_path, ltxv_lora_manifest, write, problem
):
    """Right block count and width for the tiny model, yet peft fails on it at render time (a 20-line size mismatch,
    or `Adapter name(s) ... not in the list`): the header says so before anything loads."""
    path = write(tmp_path / "ltxv-2b-style.safetensors")
    report = inspect_path(path)
    assert report["kind"] == "LoRA" and len(report["problems"]) == 1 and problem in report["problems"][0], report
    assert cli("models", "inspect", str(path)).code == 1
    r = cli("validate", ltxv_lora_manifest, "--model", "tiny")
    lines = [line for line in r.err.splitlines() if "ltxv-2b-style" in line]
    assert r.code == 2 and len(lines) == 1 and "LoRA ltxv-2b-style.safetensors cannot load: " in lines[0], r.err
    assert problem in " ".join(r.err.split())


def test_doctor_on_a_machine_without_a_gpu(cli, tmp_path):
    r = cli("doctor")
    assert r.code == 0 and "Traceback" not in r.out + r.err
    assert "no CUDA GPU visible" in r.out and "libx264 yes" in r.out and "model     no model given: pass" in r.out
    r = cli("doctor", "--model", "tiny", "--json")
    report = json.loads(r.out)
    assert r.code == 0 and report["gpu"]["available"] is False and report["encoders"]["aac"] is True
    assert report["model"]["kind"] == "diffusers folder" and report["model"]["version"] == "2.0"
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 16)
    r = cli("doctor", "--model", "broken.safetensors")
    assert r.code == 1 and "problem" in r.out and "not a safetensors file" in r.out


def _expanded_ltx25_names() -> list[str]:
    """The real LTX-2.5 file's names, block 0 repeated for every block, under the single file's prefix."""
    lines = (ROOT / "tests" / "data" / "ltx25_transformer_tensor_names.txt").read_text().splitlines()
    names = []
    for line in (x for x in lines if x and not x.startswith("#")):
        if line.startswith("transformer_blocks.0."):
            names += [line.replace(".0.", f".{i}.", 1) for i in range(48)]
        elif ".transformer_1d_blocks.0." in line:
            names += [line.replace(".transformer_1d_blocks.0.", f".transformer_1d_blocks.{i}.", 1) for i in range(8)]
        else:
            names.append(line)
    return ["model.diffusion_model." + n for n in names]


def test_a_real_ltx25_transformer_header_maps_onto_the_25_modules():
    """Independent of our own test writer: the names of a real 2.5 file (transformer and connectors) rename onto
    the LTX-2.5 modules built on the meta device, nothing missing, nothing left over (the connectors' input
    projection is not in that file)."""
    names = _expanded_ltx25_names()
    assert len(names) == 4349
    parts, unknown = split(dict.fromkeys(names))
    assert not unknown and set(parts) >= {"transformer", "connectors"}
    config_dir = ROOT / "configs" / "reference" / "LTX-2.5"
    for component in ("transformer", "connectors"):
        module = components.construct(config_dir, component, torch.bfloat16)
        own = set(module.state_dict())
        if component == "connectors":
            own = {k for k in own if "text_proj_in" not in k}
        assert set(to_diffusers(component, parts[component])) == own, component
    # ...and this test suite's own single-file writer gives exactly the real file's names
    ours = {NAMERS[c](k) for c in ("transformer", "connectors") for k in _full_size(config_dir)[c]}
    assert {n for n in ours if "text_embedding_projection" not in n} == set(names)


def test_a_lora_for_modules_the_model_lacks_is_refused(cli, tmp_path, ltxv_lora_manifest, tiny_models):
    """Right width and block count, but a module only LTX-2.3 has (gated attention): refused from the header."""
    tensors = {}
    for mod in ("attn1.to_q", "attn1.to_gate_logits"):
        tensors[f"diffusion_model.transformer_blocks.0.{mod}.lora_A.weight"] = ("BF16", (4, 32))
        tensors[f"diffusion_model.transformer_blocks.0.{mod}.lora_B.weight"] = ("BF16", (32, 4))
    write_sparse_safetensors(tmp_path / "ltxv-2b-style.safetensors", tensors, {})
    r = cli("validate", ltxv_lora_manifest, "--model", "tiny")
    assert r.code == 2, r.err
    assert "adapts 1 modules the loaded model does not have, e.g. transformer_blocks.0.attn1.to_gate_logits" in r.err


def test_the_real_19b_metadata_configures_modules_that_fit_the_file(full_size, tmp_path):
    """ltx-core's `config` of ltx-2-19b-dev, translated to diffusers configs, builds (on the meta device) exactly
    the modules whose tensors a 19B file holds: every shape checked, no weights needed."""
    from ltx2cli.weights import single_file

    path = write_sparse_safetensors(tmp_path / "ltx-2-19b-dev.safetensors", _single_file(full_size), METADATA)
    plan = single_file.plan(path)
    assert plan.version == "2.0"
    for component in COMPONENTS:
        module = components.construct(None, component, torch.bfloat16, config=plan.configs[component])
        expected = {d: plan.header.tensors[o] for d, o in plan.names[component].items()}
        single_file.check(module, component, expected, path.name)  # raises, naming the tensor, on any mismatch
    t = plan.configs["transformer"]
    assert (t["num_layers"], t["cross_attention_dim"], t["cross_attn_timestep_scale_multiplier"]) == (48, 4096, 1000.0)
    assert plan.configs["vocoder"]["upsample_factors"] == [6, 5, 2, 2, 2] and plan.configs["vae"]["patch_size"] == 4


def test_a_lora_named_for_another_ltx2_release_is_refused(cli, tmp_path, tiny_models):
    """Same shapes, same module names: Lightricks' file names say the release (ltx-2-19b-..., ltx-2.3-22b-...)."""
    import shutil

    from conftest import write_manifest
    from media import write_image

    write_image(tmp_path / "face.png", (64, 96))
    lora = tiny_models.path / "loras" / "ltx-2-19b-lora-camera-control-dolly-in.safetensors"
    shutil.copy(lora, tmp_path / "ltx-2.3-22b-lora-camera-control-dolly-in.safetensors")
    jobs = [{"id": "a", "image": "face.png", "duration": 0.3,
             "loras": [{"path": "ltx-2.3-22b-lora-camera-control-dolly-in.safetensors"}]}]  # fmt: skip
    manifest = write_manifest(tmp_path / "jobs.yaml", {"defaults": {"resolution": "64x96"}, "jobs": jobs})
    r = cli("validate", manifest, "--model", "tiny")
    assert r.code == 2 and "was made for LTX-2.3 (22B), the loaded model is LTX-2 (19B)" in r.err


def test_doctor_exits_1_in_one_line_when_the_named_model_cannot_be_found(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    root = tmp_path / "models"
    (root / "checkpoints").mkdir(parents=True)
    for name in ("ltx-2-19b-dev.safetensors", "ltx-2-19b-distilled.safetensors"):
        (root / "checkpoints" / name).write_bytes(b"")
    cases = [
        (["--model", "nowhere"], "model not found: nowhere; pass --model PATH"),
        (["--model", "empty"], "empty is neither a diffusers folder (model_index.json) nor a ComfyUI root"),
        (["--model", "models"], "holds 2 checkpoints: pick one with --checkpoint NAME (ltx-2-19b-dev.safetensors, "),
        (["--model", "models", "--checkpoint", "ltx-2.3"], "checkpoint 'ltx-2.3' not in "),
    ]
    for args, message in cases:
        r = cli("doctor", *args)
        lines = [line for line in r.out.splitlines() if line.startswith("model")]
        assert r.code == 1 and len(lines) == 1 and message in lines[0], (args, r.out)
        assert "not found: model not found" not in r.out
        assert json.loads(cli("doctor", *args, "--json").out)["model"]["problems"] == [lines[0][10:]]
