"""Regional torch.compile of the transformer blocks (engine.models.compile): when it is chosen, that it leaves a render
unchanged, and that the batch runner and the worker apply it. Compiling runs with backend="eager" here (dynamo
traces the real blocks, no C++ toolchain or minutes of inductor on a CPU); the speed is measured in bench/."""

from __future__ import annotations

import functools
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import write_manifest
from media import write_image

from ltx2cli.engine.inputs import prepare_inputs
from ltx2cli.engine.models import compile as engine_compile
from ltx2cli.engine.models.compile import AUTO_MIN_JOBS, CompileMode, compile_blocks, compile_wanted
from ltx2cli.engine.render import Renderer
from ltx2cli.plan.resolve import plan_manifests
from ltx2cli.synthetic.random_models import random_models
from ltx2cli.synthetic.tiny import tiny_model_dir
from ltx2cli.weights import fp8


@pytest.mark.parametrize(
    ("mode", "device", "jobs", "wanted"),
    [
        ("off", "cuda", None, False),
        ("on", "cpu", 1, True),
        ("auto", "cpu", 100, False),  # inductor on a CPU: not measured to pay, never automatic
        ("auto", "cuda", 1, False),  # one render: ~15 s of compiling would cost more than it saves
        ("auto", "cuda", AUTO_MIN_JOBS - 1, False),
        ("auto", "cuda", AUTO_MIN_JOBS, True),
        ("auto", "cuda", None, True),  # a long-lived worker
        (CompileMode.on, "cpu", None, True),
    ],
)
def test_when_compiling_is_chosen(mode, device, jobs, wanted):
    assert compile_wanted(mode, device, jobs) is wanted


def test_an_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="sometimes"):
        compile_wanted("sometimes", "cuda", None)


@pytest.fixture
def fresh_tiny():
    """A tiny model of its own (compiling changes it in place), with dynamo's caches cleared after."""
    from ltx2cli.synthetic.tiny import tiny_model_dir

    yield random_models(tiny_model_dir(), device="cpu", dtype=torch.float32, seed=5)
    torch._dynamo.reset()


def _spec(tmp_path, **job):
    write_image(tmp_path / "a.png", (64, 96))
    base = {"id": "j", "image": "a.png", "fps": 24, "resolution": "64x96", "preset": "fast", "seed": 2}
    specs, problems = plan_manifests([write_manifest(tmp_path / "jobs.yaml", [base | job])])
    assert not problems, problems
    return specs[0].model_copy(update={"loras": []})


def _blocks(models) -> list[torch.nn.Module]:
    return list(models.transformer.transformer_blocks)


def test_compiled_blocks_render_what_eager_blocks_render(fresh_tiny, tmp_path):
    spec = _spec(tmp_path, duration=8 / 24)
    eager = Renderer(fresh_tiny, max_sequence_length=64).render(spec, prepare_inputs(spec))
    assert compile_blocks(fresh_tiny, backend="eager") is True
    assert all(b._compiled_call_impl is not None for b in _blocks(fresh_tiny)) and fresh_tiny.compiled
    assert compile_blocks(fresh_tiny, backend="eager") is False  # once per loaded model
    compiled = Renderer(fresh_tiny, max_sequence_length=64).render(spec, prepare_inputs(spec))
    torch.testing.assert_close(compiled.video_latents, eager.video_latents, rtol=1e-5, atol=1e-5)
    assert np.abs(compiled.frames.astype(int) - eager.frames.astype(int)).max() <= 1


def test_fp8_block_linears_swap_in_and_back(fresh_tiny, tmp_path):
    """The same weights' block Linears in fp8 (the GPU session's fp8 vs bf16 comparison) render close to the
    original, and every original layer is back afterwards."""
    spec = _spec(tmp_path, duration=8 / 24)
    base = Renderer(fresh_tiny, max_sequence_length=64).render(spec, prepare_inputs(spec))
    before = [m for m in fresh_tiny.transformer.transformer_blocks.modules() if type(m) is torch.nn.Linear]
    with fp8.fp8_block_linears(fresh_tiny.transformer) as swapped:
        assert swapped == len(before) > 0
        layers = [m for m in fresh_tiny.transformer.transformer_blocks.modules() if isinstance(m, fp8.Fp8Linear)]
        assert len(layers) == swapped and all(m.weight_fp8.dtype == torch.float8_e4m3fn for m in layers)
        out = Renderer(fresh_tiny, max_sequence_length=64).render(spec, prepare_inputs(spec))
    after = [m for m in fresh_tiny.transformer.transformer_blocks.modules() if type(m) is torch.nn.Linear]
    assert after == before
    diff = (out.video_latents - base.video_latents).norm() / base.video_latents.norm()
    assert 0 < diff < 0.05  # fp8 changes the numbers, a little


@pytest.fixture
def eager_backend(monkeypatch, tiny_models):
    """The runner and the worker compile through the real function, with dynamo's eager backend; the shared
    tiny model is eager again afterwards."""
    monkeypatch.setattr(engine_compile, "compile_blocks", functools.partial(compile_blocks, backend="eager"))
    yield
    for block in _blocks(tiny_models):
        block._compiled_call_impl = None
    tiny_models.compiled = False
    torch._dynamo.reset()


def test_batch_compiles_on_request(cli, tmp_path, eager_backend, tiny_models):
    write_image(tmp_path / "face.png", (64, 96))
    jobs = [{"id": f"j{i}", "image": "face.png", "duration": 0.3} for i in range(2)]
    manifest = write_manifest(tmp_path / "jobs.yaml", {"defaults": {"resolution": "64x96"}, "jobs": jobs})
    r = cli("batch", manifest, "-o", "out", "--model", "tiny", "--compile", "on")
    assert r.code == 0, r.err
    assert "transformer blocks set to compile" in r.err and tiny_models.compiled
    assert len(list((tmp_path / "out").glob("*.mp4"))) == 2


def test_batch_on_a_cpu_stays_eager_by_default(cli, tmp_path, tiny_models):
    write_image(tmp_path / "face.png", (64, 96))
    jobs = [{"id": f"j{i}", "image": "face.png", "duration": 0.3} for i in range(AUTO_MIN_JOBS)]
    manifest = write_manifest(tmp_path / "jobs.yaml", {"defaults": {"resolution": "64x96"}, "jobs": jobs})
    r = cli("batch", manifest, "-o", "out", "--model", "tiny")
    assert r.code == 0 and "compile" not in r.err and not tiny_models.compiled


def test_a_bad_compile_value_is_a_usage_error(cli, tmp_path):
    r = cli("batch", tmp_path / "none.yaml", "--model", "tiny", "--compile", "always")
    assert r.code == 2 and "always" in r.err and "auto" in r.err


def test_worker_reads_ltx2_compile(monkeypatch, eager_backend, tiny_models):
    from ltx2cli.worker import handler as runpod_handler

    monkeypatch.setenv("LTX2_COMPILE", "sometimes")
    renderer, problem = runpod_handler._load(str(tiny_model_dir()), allow_cpu=True)
    assert renderer is None and problem == "E_MODEL: LTX2_COMPILE='sometimes' is not one of auto, on, off"
    monkeypatch.setenv("LTX2_COMPILE", "on")
    renderer, problem = runpod_handler._load(str(tiny_model_dir()), allow_cpu=True)
    assert problem is None and renderer.models.compiled


COMPILE_CACHE_VARS = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR")


def test_compiling_keeps_its_caches_under_ltx2_cache_dir(monkeypatch, tmp_path, fresh_tiny):
    monkeypatch.setenv("LTX2_CACHE_DIR", str(tmp_path))
    for var in COMPILE_CACHE_VARS:  # registered first, so the variables compile_blocks sets go when the test ends
        monkeypatch.setenv(var, "x")
        monkeypatch.delenv(var)
    assert compile_blocks(fresh_tiny, backend="eager")
    assert [os.environ[v] for v in COMPILE_CACHE_VARS] == [
        str(tmp_path / "compile" / f) for f in ("inductor", "triton")
    ]
    monkeypatch.setenv("TRITON_CACHE_DIR", "/elsewhere")  # one the deployment set is left alone
    assert engine_compile.use_compile_cache() == tmp_path / "compile" and os.environ["TRITON_CACHE_DIR"] == "/elsewhere"


INDUCTOR_RUN = """
import json, torch
from torch._dynamo.utils import counters  # dynamo first, as in ltx2: torch has put its own cache dir in the env
from ltx2cli.engine.models.compile import use_compile_cache
use_compile_cache()
f = torch.compile(lambda x, w: torch.nn.functional.gelu(x @ w) * 2 + x.sum(), backend="inductor")
f(torch.randn(8, 8), torch.randn(8, 8))
print(json.dumps(dict(counters["inductor"])))
"""


@pytest.mark.skipif(shutil.which("cc") is None, reason="inductor on a CPU needs a C compiler")
def test_a_second_process_compiles_from_the_warm_cache(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in COMPILE_CACHE_VARS} | {"LTX2_CACHE_DIR": str(tmp_path)}
    runs = [subprocess.run([sys.executable, "-c", INDUCTOR_RUN], env=env, capture_output=True, text=True, timeout=300)
            for _ in range(2)]  # fmt: skip
    assert all(r.returncode == 0 for r in runs), runs[-1].stderr[-3000:]
    cold, warm = (json.loads(r.stdout.splitlines()[-1]) for r in runs)
    assert cold.get("fxgraph_cache_miss") == 1 and not cold.get("fxgraph_cache_hit")
    assert warm.get("fxgraph_cache_hit") == 1 and not warm.get("fxgraph_cache_miss")
    assert any((tmp_path / "compile" / "inductor" / "fxgraph").iterdir())
