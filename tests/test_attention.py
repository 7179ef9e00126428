"""--attention: the transformer's maskless attention on a chosen dispatcher kernel (the masked text cross-attention
stays on SDPA), `auto`'s timed probe with its accuracy bar and its per-GPU verdict cache, and the refusals."""

from __future__ import annotations

import json

import pytest
import torch
from media import write_image

from ltx2cli.engine.models import attention as att
from ltx2cli.errors import UsageError
from ltx2cli.synthetic.tiny import tiny_model_dir


def _backends(transformer) -> dict[str, set]:
    found: dict[str, set] = {}
    for block in transformer.transformer_blocks:
        for name, module in block.named_children():
            if hasattr(getattr(module, "processor", None), "_attention_backend"):
                found.setdefault(name, set()).add(module.processor._attention_backend)
    return found


def test_the_kernel_goes_on_the_maskless_attention_and_is_used(tiny_models):
    from diffusers.models.attention_dispatch import AttentionBackendName

    transformer = tiny_models.transformer
    block = transformer.transformer_blocks[0]
    x = torch.randn(1, 40, transformer.config["num_attention_heads"] * transformer.config["attention_head_dim"])
    with torch.no_grad():
        before = block.attn1(x)
    try:
        att.set_attention(transformer, "_native_math")  # PyTorch's reference kernel: runs on the CPU too
        found = _backends(transformer)
        assert {found[role].pop() for role in att.UNMASKED} == {AttentionBackendName._NATIVE_MATH}
        assert found["attn2"] == found["audio_attn2"] == {None}  # the prompt's padding mask: SDPA's business
        with torch.no_grad():
            after = block.attn1(x)
        assert not torch.equal(after, before) and torch.allclose(after, before, atol=1e-5)  # another kernel ran
        att.set_attention(transformer, "sage")  # registered over diffusers' own (which wants sageattention 2.1.1+)
        assert _backends(transformer)["attn1"] == {AttentionBackendName.SAGE}
        assert _backends(transformer)["attn2"] == {None}
    finally:
        att.set_attention(transformer, "sdpa")
    with torch.no_grad():
        assert torch.equal(block.attn1(x), before)


def test_the_fastest_within_the_bar_wins():
    numbers = {
        "sdpa": {"seconds": 1.0, "rel_l2": 0.0},
        "sage": {"seconds": 0.5, "rel_l2": 0.05},  # fastest, but over the bar
        "fa3": {"seconds": 0.8, "rel_l2": 0.004},
        "flash": {"error": "RuntimeError: no kernel"},
    }
    assert att.fastest_within(numbers, 0.02) == "fa3"
    assert att.fastest_within(numbers, 0.1) == "sage"
    assert att.fastest_within({"sdpa": numbers["sdpa"], "flash": numbers["flash"]}, 0.02) == "sdpa"
    assert att.fastest_within({"sdpa": {"error": "OutOfMemoryError"}, "flash": numbers["flash"]}, 0.02) == "sdpa"


def test_auto_times_the_kernels_once_and_keeps_the_verdict(tmp_path, monkeypatch):
    monkeypatch.setenv("LTX2_CACHE_DIR", str(tmp_path))
    logs: list[str] = []
    shape = (256, 2, 32)
    name = att.pick("cpu", shape, ["sdpa", "_native_math", "_native_cudnn"], log=logs.append)
    [(key, verdict)] = json.loads((tmp_path / att.CACHE_FILE).read_text()).items()
    numbers = verdict["numbers"]
    assert name == verdict["choice"] in ("sdpa", "_native_math") and "256x2x32" in key
    assert numbers["sdpa"]["rel_l2"] == 0.0 and 0 < numbers["_native_math"]["rel_l2"] < 1e-5
    assert "error" in numbers["_native_cudnn"]  # no cuDNN on the CPU: left out, not fatal
    assert logs and name in logs[0]
    # A later process reads the verdict instead of timing again
    (tmp_path / att.CACHE_FILE).write_text(json.dumps({key: verdict | {"choice": "_native_math"}}))
    assert att.pick("cpu", shape, ["sdpa", "_native_math", "_native_cudnn"], log=logs.append) == "_native_math"
    assert len(logs) == 1
    assert att.pick("cpu", shape) == "sdpa"  # nothing but SDPA runs on a CPU: nothing to time


def test_a_kernel_that_cannot_run_here_is_refused_before_loading(cli, tmp_path):
    write_image(tmp_path / "face.png", (64, 96))
    r = cli("audiogen", tmp_path / "face.png", "--duration", "0.3", "-r", "64x96", "--model", "tiny",
            "--attention", "sage", "-o", tmp_path / "a.mp4")  # fmt: skip
    assert r.code == 2 and "--attention sage: needs a CUDA GPU (this run is on cpu); use auto or sdpa" in r.err
    assert not (tmp_path / "a.mp4").exists()
    r = cli("audiogen", tmp_path / "face.png", "--attention", "fastest")
    assert r.code == 2 and "fastest" in r.err and "sage" in r.err
    with pytest.raises(UsageError, match="flash"):
        att.require("flash", "cpu")


def test_the_worker_reads_ltx2_attention(monkeypatch, tiny_models):
    from ltx2cli.worker import handler

    monkeypatch.setenv("LTX2_ATTENTION", "quick")
    renderer, problem = handler._load(str(tiny_model_dir()), allow_cpu=True)
    assert renderer is None and problem.startswith("E_MODEL: LTX2_ATTENTION='quick' is not one of auto, sdpa")
    monkeypatch.setenv("LTX2_ATTENTION", "fa3")
    renderer, problem = handler._load(str(tiny_model_dir()), allow_cpu=True)
    assert (
        renderer is None
        and problem == "E_MODEL: --attention fa3: needs a CUDA GPU (this run is on cpu); use auto or sdpa"
    )
    monkeypatch.setenv("LTX2_ATTENTION", "sdpa")
    renderer, problem = handler._load(str(tiny_model_dir()), allow_cpu=True)
    assert problem is None and renderer.models.attention == "sdpa"
