"""The bench/ scripts run (their numbers are read by people, not asserted: timings are not tests)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_batch_overlap_bench_runs_and_loads_the_model_once():
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "batch_overlap.py"), "--jobs", "2", "--resolution", "64x96", "--rounds", "1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert "model loads in the batch  1" in r.stdout, r.stdout + r.stderr
    assert re.search(r"ratio batch wall / \(load \+ pure renders\), median of 1: \d+\.\d{3}", r.stdout), r.stdout
    assert r.returncode in (0, 1) and r.stdout.rstrip().endswith(("PASS", "FAIL"))


def test_gpu_render_bench_runs_on_tiny_cpu(tmp_path):
    results = tmp_path / "RESULTS.md"
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_render.py"), "--model", "tiny", "--device", "cpu", "--width", "96",
         "--height", "64", "--seconds", "0.5", "--warmup", "0", "--results", str(results)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    for mode in ("lipsync", "audiogen"):
        for stage in ("clip", "prompt", "steps", "decode", "audio", "mux", "total", "memory", "speed"):
            assert re.search(rf"^ours {mode} +{stage} ", r.stdout, re.M), f"{mode} {stage}\n{r.stdout}"
        assert re.search(rf"^diffusers +{mode} .* speed ratio \d+\.\d+x$", r.stdout, re.M), r.stdout
    assert re.search(r"^model load +\d+\.\d+ s", r.stdout, re.M) and re.search(r"^params +transformer ", r.stdout, re.M)
    block = results.read_text()
    assert "gpu_render.py --model tiny --device cpu" in block and "\ndevice        CPU " in block


def test_gpu_session_runs_every_phase_on_tiny_cpu(tmp_path):
    """The GPU session's script end to end on the CPU (compiling is left out: minutes of inductor on a CPU; the
    compile path itself is tested in test_compile.py). Phases that need a GPU feature report it unavailable."""
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable}
    r = subprocess.run(
        ["bash", str(ROOT / "bench" / "gpu_session.sh"), "--model", "tiny", "--device", "cpu", "--width", "96",
         "--height", "64", "--seconds", "1", "--audiogen-seconds", "0.5", "--batch-jobs", "2",
         "--skip", "compile,cudagraphs"],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "out"
    log = (out / "session.log").read_text()
    for phase in ("speed", "diffusers", "profile", "attention", "fp8", "vae", "encode", "batch", "plan24"):
        assert re.search(rf"^{phase} +phase took \d+\.\d s$", log, re.M), f"{phase}\n{log}"
        assert f"{phase:<10} FAILED" not in log, log
    assert re.search(r"^compile +skipped \(--skip\)$", log, re.M)
    assert re.search(r"^attention +sdpa +step +\d", log, re.M) and re.search(r"^attention +auto picks sdpa", log, re.M)
    assert re.search(r"^fp8 .* final video latents vs bf16 \d\.\d\de-\d\d", log, re.M)
    assert re.search(r"^batch +wall / \(load 0 \+ renders\) = \d\.\d{3}", log, re.M)
    numbers = json.loads((out / "results.json").read_text())
    assert numbers["speed_lipsync"]["ratio"] > 0 and numbers["fp8"]["layers"] > 0
    assert numbers["plan24"]["plan"]["plan"].startswith("80 GB") and numbers["plan24"]["estimate_gib"] > 0
    assert (out / "results.md").read_text().startswith("```\ndevice ") and (out / "profile.txt").stat().st_size


@pytest.fixture(scope="module")
def tiny_volume(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """bench/gpu_volume.py at the tiny size, run once: the volume it wrote and what it printed."""
    root = tmp_path_factory.mktemp("volume") / "models"
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_volume.py"), "--size", "tiny", "--device", "cpu", "--root",
         str(root), "--runs", "cold"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    return root, r


def test_gpu_volume_bench_writes_the_original_volume_and_renders_it_through_model_root(tiny_volume):
    """bench/gpu_volume.py at the tiny size: the studio's files in their original formats, then `--model ROOT`."""
    from ltx2cli.synthetic.tiny import tiny_model_dir
    from ltx2cli.synthetic.tiny_configs import LORAS
    from ltx2cli.weights.header import read_header

    root, r = tiny_volume
    tmp_path = root.parent
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"^cold +rendered: loaded \+ prompts \d+\.\d s, first step <= \d+\.\d s, total ", r.stdout, re.M)
    assert "every tensor mapped (the loader refuses missing/unexpected ones): yes" in r.stdout, r.stdout
    check = json.loads((tmp_path / "models-runs" / "results.json").read_text())["check"]
    assert check["ok"] and check["fp8_linears"] > 0 and 0 < check["rel_l2_video"] < check["tolerance"]
    sidecar = json.loads((tmp_path / "models-runs" / "cold" / "lipsync.json").read_text())
    assert re.match(r"ltx-2-19b-dev-fp8\.safetensors@\w+\+te:gemma_3_12B_it_fp8_scaled\.safetensors@", sidecar["model"])
    assert [lo["name"] for lo in sidecar["loras"]] == ["distilled", "camera-dolly-in"]

    ckpt = read_header(root / "checkpoints" / "ltx-2-19b-dev-fp8.safetensors")
    fp8 = [n for n, t in ckpt.tensors.items() if t.is_fp8]
    assert fp8 and all(".transformer_blocks." in n for n in fp8)
    assert all(ckpt.tensors[n + "_scale"].dtype == "F32" and ckpt.tensors[n + "_scale"].shape == () for n in fp8)
    assert set(ckpt.json_metadata("config")) == {"transformer", "vae", "audio_vae", "vocoder"}
    gemma = read_header(root / "text_encoders" / "gemma_3_12B_it_fp8_scaled.safetensors")
    assert gemma.tensors["spiece_model"].dtype == "U8" and gemma.tensors["spiece_model"].numel > 1000
    assert gemma.tensors["model.layers.0.self_attn.q_proj.weight"].is_fp8 and "scaled_fp8" in gemma.tensors
    assert gemma.tensors["model.layers.0.self_attn.q_proj.scale_weight"].shape == ()
    blocks = json.loads((tiny_model_dir() / "transformer" / "config.json").read_text())["num_layers"]
    for name, (rank, layers) in LORAS.items():
        lora = read_header(root / "loras" / f"{name}.safetensors").tensors
        stems = {f"diffusion_model.transformer_blocks.{i}.{layer}" for i in range(blocks) for layer in layers}
        assert set(lora) == {f"{s}.lora_{ab}.weight" for s in stems for ab in "AB"}, name
        assert all(t.shape[0] == rank for n, t in lora.items() if n.endswith("lora_A.weight")), name
    assert "ff.net.0.proj" in LORAS["ltx-2-19b-distilled-lora-384"][1]  # feed-forward targets beside attention
    upscaler = read_header(root / "latent_upscale_models" / "ltx-2-spatial-upscaler-x2-1.0.safetensors")
    assert "initial_conv.weight" in upscaler.tensors and upscaler.json_metadata("config")["spatial_upsample"]


def test_gpu_plans_bench_renders_every_clip_under_each_plan_and_the_worker_switch(tiny_volume):
    """bench/gpu_plans.py at the tiny size on a CPU, on the volume gpu_volume.py wrote: the three clips through
    `ltx2 batch --vram 24` (the long one in three windows), every phase's estimate in the table; no GPU, so no caps
    or measured peaks."""
    root, _ = tiny_volume
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_plans.py"), "--size", "tiny", "--device", "cpu", "--root",
         str(root), "--caps", "24", "--recovery", "--switch"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    tmp_path = root.parent
    results = json.loads((tmp_path / "models-plans" / "results.json").read_text())
    rows = results["rows"]
    assert {(x["job"], x["phase"]) for x in rows} == {
        (j, p) for j in ("lipsync10", "audiogen5", "lipsync30") for p in ("prompt", "condition", "denoise", "decode")
    }
    assert all(x["status"] == "done" and x["plan"].startswith("24 GB") and x["estimate_gib"] is not None for x in rows)
    assert all(x["reserved_gib"] is None for x in rows)  # a CPU measures no GPU peaks
    long = json.loads((tmp_path / "models-plans" / "cap-24" / "lipsync30.json").read_text())
    assert len(long["windows"]) == 3
    assert results["recovery"]["skipped"].startswith("no GPU")
    assert [q["id"] for q in results["switch"]["requests"]] == ["first", "leaner"]
    assert all(q["plan"] for q in results["switch"]["requests"])
    assert "res/est" in r.stdout and "lipsync30" in r.stdout
