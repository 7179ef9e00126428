"""The bench/ scripts run (their numbers are read by people, not asserted: timings are not tests)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

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
    assert re.search(r"^attention +native +step +\d", log, re.M)
    assert re.search(r"^fp8 .* final video latents vs bf16 \d\.\d\de-\d\d", log, re.M)
    assert re.search(r"^batch +wall / \(load 0 \+ renders\) = \d\.\d{3}", log, re.M)
    numbers = json.loads((out / "results.json").read_text())
    assert numbers["speed_lipsync"]["ratio"] > 0 and numbers["fp8"]["layers"] > 0
    assert numbers["plan24"]["plan"]["plan"].startswith("80 GB") and numbers["plan24"]["estimate_gib"] > 0
    assert (out / "results.md").read_text().startswith("```\ndevice ") and (out / "profile.txt").stat().st_size
