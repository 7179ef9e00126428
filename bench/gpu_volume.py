"""The studio's volume at full size through the real loader: write it, then render from it with --model ROOT.

Random weights are written in the original files, then one job is rendered from them by `ltx2 batch --model ROOT`,
as a user runs it (issue 26, item 1).

    python bench/gpu_volume.py --size full --device cuda --root /tmp/volume --drop-caches   # ~45 GB on disk
    python bench/gpu_volume.py --size tiny --device cpu --root /tmp/volume                 # seconds

The volume is a ComfyUI models root, written with the tests' single-file writers (tests/single_file_names.py):
  checkpoints/ltx-2-19b-dev-fp8.safetensors          Lightricks names, FP8 block Linears + per-tensor weight_scale,
                                                     ltx-core `config` metadata
  text_encoders/gemma_3_12B_it_fp8_scaled.safetensors ComfyUI fp8_scaled (scale_weight, scaled_fp8), spiece_model
  loras/<the fast preset's LoRAs>.safetensors        every ltx-trainer target (attention + feed-forward), bf16
  latent_upscale_models/ltx-2-spatial-upscaler-x2-1.0.safetensors
Each component is built on --device with random weights (synthetic.random_weights), converted tensor by tensor
and written into a file whose header was planned first (the same conversion run on the meta device), then freed:
the host never holds more than one tensor (the full-size checkpoint is ~20 GB, the Gemma ~13 GB).

The job (the fast preset's lip-sync: 10 s at 768x512 full size, 0.5 s at 64x96 tiny) is rendered twice in a
child process with a fresh prompt cache: cold (the volume's pages dropped from the file cache: posix_fadvise
DONTNEED on every file, plus /proc/sys/vm/drop_caches with --drop-caches where permitted) and warm. Measured from
outside, nothing added to the product: time to the job's "rendering" line on stderr (model loaded, prompts
encoded), to the first denoising step (that line + the job's seconds less its timed denoise, decodes and mux: an
upper bound, every untimed part counted before the step), the total, the
child's host RSS peak (wait4), and the sidecar's GPU peak. A render that finishes is the proof every tensor
mapped: the loaders refuse missing and unexpected tensors.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import platform
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from functools import partial
from pathlib import Path

import torch
import yaml

BENCH = Path(__file__).resolve().parent
TESTS = BENCH.parent / "tests"
sys.path.insert(0, str(TESTS))

from gpu_render import IMAGE, PROMPT, write_voice  # noqa: E402
from single_file_names import (  # noqa: E402
    NAMERS,
    comfy_gemma_extras,
    comfy_gemma_tensors,
    ltx_core_config,
    single_file_tensors,
    train_spiece,
    upscaler_metadata,
    vae_extras,
    write_sparse_safetensors,
)

from ltx2cli.cache import CACHE_ENV  # noqa: E402
from ltx2cli.synthetic.random_weights import materialize  # noqa: E402
from ltx2cli.synthetic.tiny import lora_tensors, tiny_model_dir  # noqa: E402
from ltx2cli.synthetic.tiny_configs import LORAS  # noqa: E402
from ltx2cli.weights.components import UPSAMPLER, construct, reference_config_dir  # noqa: E402
from ltx2cli.weights.header import read_header  # noqa: E402
from ltx2cli.weights.upscaler import FOLDERS  # noqa: E402

CHECKPOINT = Path("checkpoints") / "ltx-2-19b-dev-fp8.safetensors"
GEMMA = Path("text_encoders") / "gemma_3_12B_it_fp8_scaled.safetensors"
UPSCALER = Path(FOLDERS[0]) / "ltx-2-spatial-upscaler-x2-1.0.safetensors"
# Ranks at full size: the distilled LoRA's is in its name; the camera LoRA's rank is an assumption (it is small).
FULL_RANKS = {"ltx-2-19b-distilled-lora-384": 384, "ltx-2-19b-lora-camera-control-dolly-in": 32}
JOBS = {"full": {"duration": 10.0}, "tiny": {"duration": 0.5, "resolution": "64x96"}}
DTYPE = torch.bfloat16  # what released LTX-2 files store beside their FP8 weights
SAFETENSORS_DTYPES = {torch.float8_e4m3fn: "F8_E4M3", torch.bfloat16: "BF16", torch.float32: "F32",
                      torch.float16: "F16", torch.uint8: "U8", torch.int64: "I64"}  # fmt: skip
# ComfyUI's Gemma names from transformers' Gemma3ForConditionalGeneration's (lm_head is the tied embedding)
GEMMA_NAMES = (("model.language_model.", "model."), ("model.vision_tower.", "vision_tower."),
               ("model.multi_modal_projector.", "multi_modal_projector."))  # fmt: skip


# ---- writing ---------------------------------------------------------------------------------------------------


def write_streamed(path: Path, plan: dict, metadata: dict[str, str], tensors: Iterable[tuple[str, torch.Tensor]]):
    """A safetensors file from `plan` ({name: (dtype, shape)}: its header, written first) and `tensors` (each name
    once, in any order, on any device), one tensor in host memory at a time."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_sparse_safetensors(path, plan, metadata)
    header, written = read_header(path), set()
    with open(path, "r+b") as f:
        for name, tensor in tensors:
            info = header.tensors[name]
            if (SAFETENSORS_DTYPES[tensor.dtype], tuple(tensor.shape)) != (info.dtype, info.shape):
                raise ValueError(f"{path.name}: {name} is {tensor.dtype} {tuple(tensor.shape)}, planned {info}")
            f.seek(header.data_start + info.offsets[0])
            f.write(tensor.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy().data)
            written.add(name)
    if missing := sorted(set(plan) - written):
        raise ValueError(f"{path.name}: {len(missing)} planned tensors never written, e.g. {missing[0]}")
    return path


def planned(tensors: Iterable[tuple[str, torch.Tensor]]) -> dict:
    return {name: (SAFETENSORS_DTYPES[t.dtype], tuple(t.shape)) for name, t in tensors}


def state(config_dir: Path, name: str, device: str | None, seed: int) -> Iterator[tuple[str, torch.Tensor]]:
    """One component's state dict: random on `device`, freed once read through; device None: the meta build
    (shapes and dtypes only, for the header)."""
    module = construct(config_dir, name, DTYPE)
    if device is not None:
        module = materialize(module, device, seed)
    yield from module.state_dict().items()
    del module
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def checkpoint_tensors(config_dir: Path, device: str | None) -> Iterator[tuple[str, torch.Tensor]]:
    """The single file's tensors, component by component."""
    for i, (component, namer) in enumerate(NAMERS.items()):
        for key, value in state(config_dir, component, device, i):
            yield from single_file_tensors(component, namer(key), value, fp8=True).items()
            if component == "vae" and key == "latents_mean":
                yield from vae_extras(value.shape).items()


def gemma_tensors(config_dir: Path, device: str | None, spiece: bytes) -> Iterator[tuple[str, torch.Tensor]]:
    for key, value in state(config_dir, "text_encoder", device, len(NAMERS)):
        for ours, comfy in GEMMA_NAMES:
            if key.startswith(ours):
                yield from comfy_gemma_tensors(comfy + key.removeprefix(ours), value, fp8=True).items()
    yield from comfy_gemma_extras(spiece, fp8=True).items()


def upscaler_tensors(config_dir: Path, device: str | None) -> Iterator[tuple[str, torch.Tensor]]:
    yield from ((k, v.contiguous()) for k, v in state(config_dir, UPSAMPLER, device, len(NAMERS) + 1))


def lora_layers(config_dir: Path, layers: tuple[str, ...]) -> dict:
    """{the LoRA file's key stem: the (meta) Linear it adapts}, as synthetic.tiny.build_tiny_loras names them."""
    model = construct(config_dir, "transformer", DTYPE)
    return {
        f"diffusion_model.transformer_blocks.{i}.{layer}": block.get_submodule(layer)
        for i, block in enumerate(model.transformer_blocks)
        for layer in layers
    }


def write_lora(path: Path, config_dir: Path, rank: int, layers: tuple[str, ...], device: str, seed: int) -> Path:
    linears = lora_layers(config_dir, layers)
    plan = {}
    for key, linear in linears.items():
        plan[f"{key}.lora_A.weight"] = ("BF16", (rank, linear.in_features))
        plan[f"{key}.lora_B.weight"] = ("BF16", (linear.out_features, rank))
    gen = torch.Generator(device).manual_seed(seed)
    layer_by_layer = (item for key, lin in linears.items() for item in lora_tensors({key: lin}, rank, gen).items())
    return write_streamed(path, plan, {"format": "pt"}, layer_by_layer)


def _write_made(path: Path, tensors, metadata: dict[str, str], device: str) -> Path:
    return write_streamed(path, planned(tensors(None)), metadata, tensors(device))


def config_dir_of(size: str) -> Path:
    return reference_config_dir() if size == "full" else tiny_model_dir()


def write_volume(root: Path, work: Path, size: str, device: str, log=print) -> dict[str, float]:
    """The models root (the tokenizer is trained in `work`); seconds per file."""
    config_dir = config_dir_of(size)
    spiece = train_spiece(work / "gemma.model")  # a small SentencePiece: ids fit any Gemma vocabulary
    meta = {"config": json.dumps(ltx_core_config(config_dir))}
    upscaler_config = json.loads((config_dir / UPSAMPLER / "config.json").read_text())
    made = {  # each file's tensors on the device: None plans its header on the meta device first
        CHECKPOINT: (partial(checkpoint_tensors, config_dir), meta),
        GEMMA: (partial(gemma_tensors, config_dir, spiece=spiece), {}),
        UPSCALER: (partial(upscaler_tensors, config_dir), upscaler_metadata(upscaler_config)),
    }
    files = {rel: partial(_write_made, tensors=t, metadata=m, device=device) for rel, (t, m) in made.items()}
    for i, (name, (rank, layers)) in enumerate(LORAS.items()):
        rank = FULL_RANKS[name] if size == "full" else rank
        files[Path("loras") / f"{name}.safetensors"] = partial(
            write_lora, config_dir=config_dir, rank=rank, layers=layers, device=device, seed=i
        )
    seconds = {}
    for rel, write in files.items():
        t0 = time.perf_counter()
        write(root / rel)
        seconds[str(rel)] = time.perf_counter() - t0
        log(f"wrote {rel} ({(root / rel).stat().st_size / 2**30:.2f} GiB) in {seconds[str(rel)]:.1f} s")
    return seconds


# ---- rendering -------------------------------------------------------------------------------------------------


def drop_file_cache(root: Path, system_wide: bool) -> str:
    """Evict the volume's pages; say how (and what could not be done)."""
    os.sync()
    for path in root.rglob("*.safetensors"):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    how = "volume's pages evicted (posix_fadvise DONTNEED)"
    if not system_wide:
        return how
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return how + " + /proc/sys/vm/drop_caches"
    except OSError as e:
        return how + f"; /proc/sys/vm/drop_caches not permitted ({e.strerror})"


def write_job(work: Path, size: str) -> Path:
    voice = write_voice(work / "voice.wav", JOBS[size]["duration"])
    job = {"id": "lipsync", "image": str(IMAGE), "audio": str(voice), "prompt": PROMPT, "preset": "fast", "seed": 1}
    job |= {k: v for k, v in JOBS[size].items() if k != "duration"}
    manifest = work / "jobs.yaml"
    manifest.write_text(yaml.safe_dump({"jobs": [job]}))
    return manifest


def ltx2_command() -> list[str]:
    script = Path(sys.executable).parent / "ltx2"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "ltx2cli"]


def child_env(out: Path, device: str) -> dict[str, str]:
    """A child's environment: its own ltx2 cache under `out` (prompts encoded afresh), and no GPU on a CPU run."""
    return os.environ | {CACHE_ENV: str(out / "cache")} | ({"CUDA_VISIBLE_DEVICES": ""} if device == "cpu" else {})


def render(root: Path, manifest: Path, out: Path, device: str) -> dict:
    """`ltx2 batch MANIFEST --model ROOT --json` in a child with its own prompt cache; what it took, from outside."""
    env = child_env(out, device)
    cmd = [*ltx2_command(), "batch", str(manifest), "-o", str(out), "--model", str(root), "--json"]
    lines: list[tuple[float, str]] = []
    t0 = time.monotonic()
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    reader = threading.Thread(target=lambda: lines.extend((time.monotonic() - t0, ln) for ln in child.stderr))
    reader.start()
    stdout = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    total = time.monotonic() - t0
    reader.join()
    child.returncode = os.waitstatus_to_exitcode(status)
    results = [json.loads(ln) for ln in stdout.splitlines() if ln.startswith("{")]
    job = next((r for r in results if r.get("id") == "lipsync"), {})
    rendering = next((t for t, ln in lines if ": rendering" in ln), None)
    timings = job.get("timings") or {}
    # The job's seconds less its timed parts after the first step: every untimed part (waiting for its inputs,
    # LoRAs, weight placement) is counted before the first step, so this bounds it from above.
    after = sum(timings.get(k, 0) for k in ("denoise", "decode_audio", "decode_video", "upsample", "mux"))
    before_steps = max(job.get("seconds", 0) - after, 0)
    sidecar = out / "lipsync.json"
    peak = json.loads(sidecar.read_text()).get("gpu_peak_gib") if sidecar.is_file() else None
    return {
        "ok": child.returncode == 0 and job.get("status") == "done",
        "rc": child.returncode,
        "to_rendering_s": rendering,
        "to_first_step_s": None if rendering is None else rendering + before_steps,
        "total_s": total,
        "rss_peak_gib": usage.ru_maxrss / 2**20,  # KiB on Linux
        "gpu_peak_gib": peak if peak is not None else job.get("gpu_peak_gib"),
        "timings": timings,
        "stderr": "".join(ln for _, ln in lines),
        "command": shlex.join(cmd),
    }


FP8_TOLERANCE = 0.05  # as tests/test_single_file.py: relative L2 of FP8 weights' output against the unquantised


def check_transformer(root: Path, size: str, device: str) -> dict:
    """The file's transformer as the single-file loader reads it (FP8 blocks kept, scales applied) against the same
    random build made in memory (bf16, the seed the writer used): one forward on the same random inputs, relative
    L2 of each output. Within FP8_TOLERANCE: every tensor landed where it belongs, scaled."""
    from ltx2cli.engine.memory.estimate import Clip, forward_inputs
    from ltx2cli.weights import single_file

    config_dir = config_dir_of(size)
    plan = single_file.plan(root / CHECKPOINT)
    loaded = single_file.load_components(plan, device, DTYPE, "fp8")["transformer"]
    seed = list(NAMERS).index("transformer")  # checkpoint_tensors seeds each component by its place
    built = materialize(construct(config_dir, "transformer", DTYPE), device, seed)
    g = torch.Generator(device).manual_seed(0)

    def tensor(*shape: int, dtype: torch.dtype) -> torch.Tensor:
        return torch.rand(*shape, generator=g, device=device, dtype=torch.float32).to(dtype)

    clip = Clip(width=384, height=256, num_frames=17, audio_latents=16, text_tokens=64)
    inputs = forward_inputs(dict(built.config), clip, tensor)
    for mask in ("encoder_attention_mask", "audio_encoder_attention_mask"):  # every prompt token real
        inputs[mask] = torch.ones_like(inputs[mask])
    with torch.no_grad():
        got, want = loaded(**inputs), built(**inputs)
    rel = [float((a.float() - b.float()).norm() / b.float().norm()) for a, b in zip(got[:2], want[:2], strict=True)]
    fp8 = sum(1 for m in loaded.modules() if type(m).__name__ == "Fp8Linear")
    del loaded, built
    gc.collect()
    return {"rel_l2_video": rel[0], "rel_l2_audio": rel[1], "fp8_linears": fp8, "tolerance": FP8_TOLERANCE,
            "ok": fp8 > 0 and all(0 < r < FP8_TOLERANCE for r in rel)}  # fmt: skip


# ---- the report ------------------------------------------------------------------------------------------------


def results_block(
    args: argparse.Namespace, sizes: dict[str, float], written: dict[str, float], runs: dict, check: dict | None
) -> str:
    device = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "CPU"
    lines = [f"device        {device}", f"date          {dt.date.today()}",
             f"versions      torch {torch.__version__}, python {platform.python_version()}",
             f"command       python bench/gpu_volume.py {shlex.join(sys.argv[1:])}"]  # fmt: skip
    for rel, gib in sizes.items():
        lines.append(f"file          {rel:<64} {gib:8.3f} GiB  written in {written[rel]:6.1f} s")
    for label, r in runs.items():
        peak = "n/a (CPU)" if r["gpu_peak_gib"] is None else f"{r['gpu_peak_gib']:.2f} GiB"
        first = "n/a" if r["to_first_step_s"] is None else f"{r['to_first_step_s']:.1f} s"
        loaded = "n/a" if r["to_rendering_s"] is None else f"{r['to_rendering_s']:.1f} s"
        lines.append(
            f"{label:<13} {'rendered' if r['ok'] else 'FAILED rc ' + str(r['rc'])}: loaded + prompts {loaded}, "
            f"first step <= {first}, "
            f"total {r['total_s']:.1f} s, host RSS peak {r['rss_peak_gib']:.2f} GiB, GPU peak {peak}"
        )
        if label.startswith("cold"):
            lines.append(f"              cache: {r['cache']}")
    mapped = all(r["ok"] for r in runs.values())
    lines.append(f"every tensor mapped (the loader refuses missing/unexpected ones): {'yes' if mapped else 'NO'}")
    if check is not None:
        lines.append(
            f"loaded vs in-memory transformer (one forward, {check['fp8_linears']} FP8 Linears): relative L2 video "
            f"{check['rel_l2_video']:.2e}, audio {check['rel_l2_audio']:.2e} (tolerance {check['tolerance']}): "
            f"{'ok' if check['ok'] else 'FAILED'}"
        )
    return "```\n" + "\n".join(lines) + "\n```\n"


def volume_parser(doc: str) -> argparse.ArgumentParser:
    """The options of a benchmark on the studio's volume (this one and gpu_plans.py)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "full"), default="full", help="LTX-2 19B + Gemma 12B, or tiny")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda", help="where weights are built and run")
    parser.add_argument("--root", type=Path, required=True, help="models root (a ComfyUI layout), written if missing")
    parser.add_argument("--record", action="store_true", help="append the results block to bench/RESULTS.md")
    return parser


def main() -> int:
    parser = volume_parser(__doc__)
    parser.add_argument("--keep", action="store_true", help="reuse files already under --root instead of rewriting")
    parser.add_argument("--drop-caches", action="store_true", help="cold run: also drop the whole system's file cache")
    parser.add_argument("--runs", default="cold,warm", help="which renders: cold, warm or both (comma-separated)")
    parser.add_argument(
        "--no-check",
        dest="check",
        action="store_false",
        help="skip the loaded transformer's forward against the in-memory random build",
    )
    args = parser.parse_args()
    root, work = args.root.resolve(), args.root.resolve().parent / (args.root.name + "-runs")
    work.mkdir(parents=True, exist_ok=True)
    wanted = [CHECKPOINT, GEMMA, UPSCALER, *(Path("loras") / f"{n}.safetensors" for n in LORAS)]
    if args.keep and all((root / p).is_file() for p in wanted):
        written = dict.fromkeys(map(str, wanted), 0.0)
    else:
        written = write_volume(root, work, args.size, args.device)
    sizes = {str(p): (root / p).stat().st_size / 2**30 for p in wanted}
    manifest = write_job(work, args.size)
    runs = {}
    labels = [r.strip() for r in args.runs.split(",") if r.strip()]
    if not labels or set(labels) - {"cold", "warm"}:
        parser.error(f"--runs: {args.runs!r} is not cold, warm or cold,warm")
    for label in labels:
        cache = drop_file_cache(root, args.drop_caches) if label == "cold" else "warm (just read)"
        r = render(root, manifest, work / label, args.device)
        runs[label] = r | {"cache": cache}
        (work / f"{label}.stderr.log").write_text(r["stderr"])
        if not r["ok"]:
            print(r["stderr"][-4000:], file=sys.stderr)
    check = check_transformer(root, args.size, args.device) if args.check else None
    block = results_block(args, sizes, written, runs, check)
    print(block, end="")
    results = {k: {f: v for f, v in r.items() if f != "stderr"} for k, r in runs.items()} | {"check": check}
    (work / "results.json").write_text(json.dumps(results, indent=1))
    if args.record:
        with open(BENCH / "RESULTS.md", "a") as f:
            f.write(f"\n## Full-size volume through --model ROOT ({args.size}, {dt.date.today()})\n\n{block}")
    return 0 if all(r["ok"] for r in runs.values()) and (check is None or check["ok"]) else 1


if __name__ == "__main__":
    sys.exit(main())
