"""One GPU session in one process under a time budget: full-size speed against diffusers, then each tuning knob
on and off on the same weights, then a batch through the real runner (issue 14).

    bash bench/gpu_session.sh                  # on the GPU machine (installs carried wheels first), out: $OUT
    python bench/gpu_session.py --model tiny --device cpu --width 96 --height 64 --seconds 1 --out /tmp/s

Phases, most valuable first. Each is skipped, saying so, when its estimate (from the speed phase's step and
render times) would overrun --budget; a failure in one is logged and the next goes on.
  speed      bench/gpu_render.py's renders: lip-sync + audio-gen, per stage, per step, MFU, peak memory
  diffusers  diffusers' own pipelines on the same clips, weights and inputs: the speed ratio
  profile    one denoising step under torch.profiler: top kernels, GEMM / attention / other shares, GPU busy time
  attention  one step per --attention kernel (engine.models.attention), x0 against SDPA's; auto's probe and
             verdict, and a full lip-sync on the verdict against the default's frames (PSNR)
  fp8        the same weights' block Linears in fp8 (torch._scaled_mm): step time, a whole render, its difference
  vae        video decode tiled vs whole: time, peak memory, the tiles' difference from the whole decode
  encode     H.264 through PyAV: write_mp4's libx264 at presets medium and veryfast vs h264_nvenc, on smooth
             and on noise frames
  batch      short jobs through run_jobs (prefetch / deliver overlap) vs one by one: wall / sum of renders
  compile    regional torch.compile of the transformer blocks: cold compile, steady step, then with fp8 too (with
             --compile, as ltx2 batch runs: compiled vs eager step, and recompiling from warm on-disk caches)
  cudagraphs regional compile with CUDA graphs (mode reduce-overhead): steady step
  plan24     the memory plan for --plan-vram GiB (issue 15): the lip-sync rendered again under
             torch.cuda.set_per_process_memory_fraction for that size, its measured peak against the estimate.
             Last: it turns the weights to FP8 and moves them. Alone, after the speed phase:
             bash bench/gpu_session.sh --no-diffusers --skip profile,attention,fp8,vae,encode,batch,compile,cudagraphs

Under --out: results.md (the RESULTS.md block, rewritten after every phase so a killed run keeps what it
measured), results.json (the numbers) and profile.txt (the profiler's kernel table); the wrapper tees the
console to session.log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import batch_overlap
import gpu_render
from gpu_render import say, sync

from ltx2cli.engine import latents as lat
from ltx2cli.engine.conditions import streams
from ltx2cli.engine.guidance import GuidedDenoiser
from ltx2cli.engine.inputs import prepare_inputs
from ltx2cli.engine.models import attention as att
from ltx2cli.engine.models.loaded import Models
from ltx2cli.engine.render import Renderer
from ltx2cli.engine.sampler import State, noised
from ltx2cli.engine.schedule import fixed_sigmas
from ltx2cli.jobs.guidance import Scales
from ltx2cli.media.video import write_mp4
from ltx2cli.plan.resolve import plan_manifests
from ltx2cli.weights.fp8 import fp8_block_linears, fp8_matmul_ok

# --attention's kernels and two more of PyTorch's SDPA; sage needs `sageattention` 1.0.6 (Triton, INT8 QK^T; 20 KB
# wheel carried in .whl/), flash / fa3 flash-attn 2 / 3; one not installed is reported unavailable (issue 27 item 2)
ATTENTION_KERNELS = ("sdpa", "cudnn", "_native_efficient", "_native_flash", "flash", "fa3", "sage")
PHASES = ("profile", "attention", "fp8", "vae", "encode", "batch", "compile", "cudagraphs", "plan24")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    session = Session(args, start)
    models = gpu_render.build(args, session.lines)
    session.numbers["weights_gib"] = _allocated_gib(models.device)
    with tempfile.TemporaryDirectory(prefix="ltx2-gpu-session-") as tmp:
        ctx = Context(args, models, Path(tmp), session)
        session.phase("speed", lambda: speed(ctx), estimate=0.0)
        if ctx.ours and not args.no_diffusers:
            session.phase("diffusers", lambda: diffusers(ctx), estimate=0.0)
        if ctx.ours:
            skip = set(args.skip.split(",")) if args.skip else set()
            for name in PHASES:
                if name in skip:
                    session.note(f"{name:<10} skipped (--skip)")
                    continue
                session.phase(name, lambda name=name: RUNS[name](ctx), ESTIMATES[name](ctx))
    session.note(f"session    {time.perf_counter() - start:8.1f} s in all (budget {args.budget:g} s)")
    session.save()
    if args.append_to:
        gpu_render.append_results(args.append_to, session.lines, argv)
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = gpu_render.parser(__doc__)
    p.set_defaults(audiogen_seconds=5.0, no_results=True)
    p.add_argument("--out", type=Path, required=True, help="folder for results.md, results.json, profile.txt")
    p.add_argument("--budget", type=float, default=450.0, help="seconds for the whole session; phases that "
                   "would overrun it are skipped")  # fmt: skip
    p.add_argument("--skip", default="", help=f"comma-separated phases to leave out: {', '.join(PHASES)}")
    p.add_argument("--batch-jobs", type=int, default=10)
    p.add_argument("--batch-seconds", type=float, default=1.0, help="length of each batch job's clip")
    p.add_argument("--repeats", type=int, default=3, help="timed steps per setting (the median counts)")
    p.add_argument("--plan-vram", type=float, default=24.0, help="GPU size (GiB) the plan24 phase plans for")
    p.add_argument("--append-to", type=Path, default=None,
                   help="also append the block to this RESULTS.md")  # fmt: skip
    return p.parse_args(argv)


# ---- bookkeeping -----------------------------------------------------------------------------------------------


@dataclass
class Session:
    args: argparse.Namespace
    start: float
    lines: list[str] = field(default_factory=list)
    numbers: dict = field(default_factory=dict)

    def note(self, line: str) -> None:
        say(self.lines, line)

    def left(self) -> float:
        return self.args.budget - (time.perf_counter() - self.start)

    def phase(self, name: str, run: Callable[[], None], estimate: float) -> None:
        if estimate > self.left():
            self.note(f"{name:<10} skipped: needs ~{estimate:.0f} s, {max(self.left(), 0):.0f} s of the budget left")
            self.numbers[name] = {"skipped": f"needs ~{estimate:.0f} s"}
            return
        t0 = time.perf_counter()
        try:
            run()
        except Exception as e:  # one phase's failure is a result too; the rest go on
            self.note(f"{name:<10} FAILED: {e.__class__.__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}")
            traceback.print_exc()
            self.numbers.setdefault(name, {})["error"] = f"{e.__class__.__name__}: {e}"[:1000]
        finally:
            _free()
        self.note(f"{name:<10} phase took {time.perf_counter() - t0:.1f} s")
        self.save()

    def save(self) -> None:
        out = self.args.out
        (out / "results.md").write_text("```\n" + "\n".join(self.lines) + "\n```\n")
        (out / "results.json").write_text(json.dumps(self.numbers, indent=1, default=str))


def _free() -> None:
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _allocated_gib(device: torch.device) -> float | None:
    return torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else None


@contextlib.contextmanager
def peak_gib(device: torch.device, into: dict, key: str = "peak_gib"):
    """Record the device's peak allocation inside the block (nothing on the CPU)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield
    if device.type == "cuda":
        into[key] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """||a - b|| / ||b|| in float64."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp(min=1e-30))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


# ---- the shared state of the phases ----------------------------------------------------------------------------


class Context:
    """What the phases share: the models, the speed phase's renders, one denoising step built once."""

    def __init__(self, args: argparse.Namespace, models: Models, work: Path, session: Session):
        self.args, self.models, self.work, self.session = args, models, work, session
        self.ours: dict[str, gpu_render.Ours] = {}
        self._step: StepBench | None = None

    @property
    def device(self) -> torch.device:
        return self.models.device

    def note(self, line: str) -> None:
        self.session.note(line)

    def step(self) -> StepBench:
        if self._step is None:
            spec = self.ours["lipsync"].spec
            self._step = StepBench(Renderer(self.models, self.args.max_sequence_length), spec, self.args.repeats)
        return self._step

    @property
    def step_seconds(self) -> float:
        steps = self.ours["lipsync"].steps
        return float(np.mean(steps[1:] if len(steps) > 1 else steps))


class StepBench:
    """One denoising step (one transformer forward) at a clip's shape, built once, timed under any setting."""

    def __init__(self, renderer: Renderer, spec, repeats: int):
        m = self.models = renderer.models
        grid = lat.Grid(spec.num_frames, spec.height, spec.width, spec.fps, spec.audio_latent_frames)
        inputs = prepare_inputs(spec)
        prompt = renderer.prompt(spec.prompt, None)
        clean = streams(m, grid, inputs.conditions())
        video, audio = clean.video, clean.audio
        self.sigma = fixed_sigmas(m.scheduler_config, spec.sigmas)[0].to(m.device)
        g = torch.Generator().manual_seed(0)
        noise = [torch.randn(s.x.shape, generator=g).to(m.device) for s in (video, audio)]
        self.state = State(video=noised(video, noise[0], self.sigma), audio=noised(audio, noise[1], self.sigma))
        self.denoise = GuidedDenoiser(m, prompt, Scales.from_spec(spec.guidance), grid.fps)
        self.repeats = repeats

    def once(self) -> tuple[float, tuple[torch.Tensor, torch.Tensor]]:
        sync(self.models.device)
        t0 = time.perf_counter()
        out = self.denoise(self.state, self.sigma)
        sync(self.models.device)
        return time.perf_counter() - t0, out

    def time(self, warmup: int = 1) -> tuple[float, tuple[torch.Tensor, torch.Tensor]]:
        """Median seconds of `repeats` steps after `warmup` untimed ones, and the last step's (video, audio) x0."""
        for _ in range(warmup):
            self.once()
        runs = [self.once() for _ in range(self.repeats)]
        return statistics.median(t for t, _ in runs), runs[-1][1]


# ---- phases ----------------------------------------------------------------------------------------------------


def speed(ctx: Context) -> None:
    ctx.ours = gpu_render.render_ours(ctx.models, ctx.args, ctx.work, ctx.session.lines)
    for mode, o in ctx.ours.items():
        ctx.session.numbers[f"speed_{mode}"] = {
            "frames": o.spec.output_frames, "size": f"{o.spec.width}x{o.spec.height}", "fps": o.spec.fps,
            "render_s": o.render, "mux_s": o.mux, "end_to_end_s": o.render + o.mux, "steps_s": o.steps,
            "steps_per_s": len(o.steps) / sum(o.steps), "tflops": o.tflops, "peak_gib": o.peak_gib,
            "timings": o.out.timings,
        }  # fmt: skip


def diffusers(ctx: Context) -> None:
    with eager_blocks(ctx.models.transformer):  # diffusers' pipelines as their users run them: not compiled
        gpu_render.render_diffusers(ctx.models, ctx.args, ctx.ours, ctx.session.lines)
    for mode, o in ctx.ours.items():
        ctx.session.numbers[f"speed_{mode}"] |= {"diffusers_s": o.diffusers, "ratio": o.diffusers / o.render}


GEMM_NAMES = ("gemm", "xmma", "cutlass", "nvjet", "matmul", "addmm", "aten::mm", "aten::bmm", "linear", "scaled_mm")
ATTENTION_NAMES = ("flash", "fmha", "attention", "sdpa", "attn")


def kernel_class(name: str) -> str:
    low = name.lower()
    if any(k in low for k in ATTENTION_NAMES):
        return "attention"
    if any(k in low for k in GEMM_NAMES):
        return "gemm"
    return "other"


def profile(ctx: Context) -> None:
    ctx.session.numbers["profile"] = profile_step(ctx, "profile", "profile.txt")


def profile_step(ctx: Context, tag: str, table_file: str, top_n: int = 10) -> dict:
    """One denoising step under torch.profiler: device busy time, kernel classes' shares, the top kernels."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    bench = ctx.step()
    bench.once()
    cuda = ctx.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        wall, _ = bench.once()
    events = prof.key_averages()
    if cuda:
        rows = [e for e in events if e.device_type == DeviceType.CUDA]

        def self_us(e) -> float:
            return float(getattr(e, "self_device_time_total", 0) or getattr(e, "self_cuda_time_total", 0))
    else:  # on the CPU the ops themselves are the kernels
        rows = [e for e in events if e.key.startswith("aten::")]

        def self_us(e) -> float:
            return float(e.self_cpu_time_total)

    total = sum(self_us(e) for e in rows) or 1.0
    shares: dict[str, float] = {}
    for e in rows:
        shares[kernel_class(e.key)] = shares.get(kernel_class(e.key), 0.0) + self_us(e)
    busy = total / 1e6 / wall
    ctx.note(f"{tag:<10} one step {wall:.3f} s (profiled), kernels {total / 1e6:.3f} s: device busy {busy:.1%}")
    ctx.note(f"{tag:<10} shares " + ", ".join(f"{k} {v / total:.1%}" for k, v in sorted(shares.items())))
    top = sorted(rows, key=self_us, reverse=True)[:top_n]
    for e in top:
        ctx.note(f"{tag:<10} {self_us(e) / 1e3:9.1f} ms {self_us(e) / total:6.1%} x{e.count:<5} {e.key[:80]}")
    for sort in ("self_device_time_total", "self_cuda_time_total") if cuda else ("self_cpu_time_total",):
        with contextlib.suppress(Exception):  # the sort key's name changed across torch releases
            table = events.table(sort_by=sort, row_limit=40, max_name_column_width=90)
            (ctx.args.out / table_file).write_text(table)
            break
    return {
        "step_s": wall, "kernel_s": total / 1e6, "busy": busy, "shares": {k: v / total for k, v in shares.items()},
        "top": [(e.key, self_us(e) / 1e3, e.count) for e in top],
    }  # fmt: skip


def attention(ctx: Context) -> None:
    """Each kernel as `--attention` sets it (engine.models.attention: the maskless attention; the masked text
    cross-attention stays on SDPA): one step, x0 against SDPA's; then auto's probe and verdict, and a full render on
    the verdict against the default's frames."""
    transformer, device = ctx.models.transformer, ctx.device
    bench = ctx.step()
    numbers: dict = {}
    ctx.session.numbers["attention"] = numbers
    reference = None
    try:
        for name in ATTENTION_KERNELS:
            if (why := att.unusable(name, device)) is not None:
                ctx.note(f"attention  {name:<18} unavailable: {why}")
                numbers[name] = {"error": why}
                continue
            try:
                att.set_attention(transformer, name)
                seconds, (video, audio) = bench.time()
            except Exception as e:  # refuses these shapes, or this GPU
                ctx.note(f"attention  {name:<18} failed: {e.__class__.__name__}: {str(e)[:160]}")
                numbers[name] = {"error": f"{e.__class__.__name__}: {e}"[:300]}
                continue
            if reference is None:
                reference = (seconds, video, audio)
            dv, da = rel(video, reference[1]), rel(audio, reference[2])
            numbers[name] = {"step_s": seconds, "rel_diff_video": dv, "rel_diff_audio": da}
            ctx.note(
                f"attention  {name:<18} step {seconds:7.3f} s  ({reference[0] / seconds:5.2f}x sdpa)  "
                f"x0 vs sdpa: video {dv:.2e}, audio {da:.2e}"
            )
        shape = att._probe_shape(transformer)
        probe = att.probe([n for n in att.KERNELS if att.unusable(n, device) is None], device, shape)
        choice = att.fastest_within(probe, att.ACCURACY_BAR)
        numbers["auto"] = {"probe": probe, "choice": choice, "bar": att.ACCURACY_BAR}
        ctx.note(
            f"attention  auto picks {choice} (bar {att.ACCURACY_BAR}): "
            + ", ".join(
                f"{n} {r['seconds'] * 1e3:.2f} ms rel {r['rel_l2']:.1e}" for n, r in probe.items() if "seconds" in r
            )
        )
        base = ctx.ours["lipsync"]
        if choice != "sdpa" and ctx.session.left() > 2 * base.render:
            att.set_attention(transformer, choice)
            sync(device)
            t0 = time.perf_counter()
            out = Renderer(ctx.models, ctx.args.max_sequence_length).render(base.spec, prepare_inputs(base.spec))
            sync(device)
            seconds, p = time.perf_counter() - t0, psnr(out.frames, base.out.frames)
            numbers["auto"] |= {"render_s": seconds, "sdpa_render_s": base.render, "frames_psnr": p}
            ctx.note(f"attention  lip-sync on {choice}: {seconds:.2f} s vs {base.render:.2f} s, frames {p:.1f} dB")
    finally:
        att.set_attention(transformer, "sdpa")


def fp8(ctx: Context) -> None:
    transformer, device = ctx.models.transformer, ctx.device
    bench = ctx.step()
    numbers: dict = {"scaled_mm": fp8_matmul_ok(device)}
    ctx.session.numbers["fp8"] = numbers
    bf16_s, (video, audio) = bench.time()
    bf16_bytes = _block_linear_bytes(transformer)
    with fp8_block_linears(transformer) as swapped:
        fp8_bytes = _block_linear_bytes(transformer)
        fp8_s, (video8, audio8) = bench.time()
        numbers |= {"layers": swapped, "bf16_step_s": bf16_s, "fp8_step_s": fp8_s,
                    "step_rel_diff_video": rel(video8, video), "step_rel_diff_audio": rel(audio8, audio),
                    "block_linear_gib": {"bf16": bf16_bytes / 2**30, "fp8": fp8_bytes / 2**30}}  # fmt: skip
        how = "torch._scaled_mm" if numbers["scaled_mm"] else "dequantised per layer (no fp8 matmul here)"
        ctx.note(
            f"fp8        {swapped} block Linears, {how}: step {fp8_s:.3f} s vs bf16 {bf16_s:.3f} s "
            f"({bf16_s / fp8_s:.2f}x); weights {bf16_bytes / 2**30:.1f} -> {fp8_bytes / 2**30:.1f} GiB"
        )
        ctx.note(f"fp8        one step's x0 vs bf16: video {rel(video8, video):.2e}, audio {rel(audio8, audio):.2e}")
        numbers["profile"] = profile_step(ctx, "fp8 prof", "profile-fp8.txt", top_n=6)
        base = ctx.ours["lipsync"]
        if ctx.session.left() > 2 * base.render:
            spec = base.spec
            sync(device)
            t0 = time.perf_counter()
            with peak_gib(device, numbers):
                out = Renderer(ctx.models, ctx.args.max_sequence_length).render(spec, prepare_inputs(spec))
            sync(device)
            render = time.perf_counter() - t0
            dl = rel(out.video_latents, base.out.video_latents)
            p = psnr(out.frames, base.out.frames)
            numbers |= {"render_s": render, "bf16_render_s": base.render, "latents_rel_diff": dl, "frames_psnr": p}
            ctx.note(
                f"fp8        lip-sync render {render:.2f} s vs bf16 {base.render:.2f} s; final video latents "
                f"vs bf16 {dl:.2e} (relative L2), frames PSNR {p:.1f} dB vs bf16"
            )


def _block_linear_bytes(transformer) -> int:
    total = 0
    for module in transformer.transformer_blocks.modules():
        if type(module).__name__ in ("Linear", "Fp8Linear"):
            total += sum(p.numel() * p.element_size() for p in module.parameters(recurse=False))
    return total


def vae(ctx: Context) -> None:
    models, device = ctx.models, ctx.device
    vae_model = models.vae
    was_tiled = bool(getattr(vae_model, "use_tiling", False))
    numbers: dict = {}
    ctx.session.numbers["vae"] = numbers
    try:
        for mode in ("audiogen", "lipsync"):
            o = ctx.ours[mode]
            spec = o.spec
            grid = lat.Grid(spec.num_frames, spec.height, spec.width, spec.fps, spec.audio_latent_frames)
            frames = {}
            for tiled in (True, False):
                vae_model.enable_tiling() if tiled else vae_model.disable_tiling()
                row: dict = {}
                key = f"{mode}_{'tiled' if tiled else 'whole'}"
                numbers[key] = row
                try:
                    sync(device)
                    t0 = time.perf_counter()
                    with peak_gib(device, row):
                        frames[tiled] = lat.decode_video(models, o.out.video_latents, grid)
                    sync(device)
                    row["decode_s"] = time.perf_counter() - t0
                except torch.OutOfMemoryError as e:
                    row["error"] = f"OutOfMemoryError: {str(e).splitlines()[0]}"
                    ctx.note(f"vae        {key:<16} out of memory ({str(e).splitlines()[0][:120]})")
                    _free()
                    continue
                ctx.note(f"vae        {key:<16} decode {row['decode_s']:7.3f} s, peak {row.get('peak_gib', 'n/a')} GiB")
            if len(frames) == 2:
                a, b = frames[True], frames[False]
                diff = (a - b).abs()
                numbers[f"{mode}_tiled_vs_whole"] = {"max_abs": float(diff.max()), "mean_abs": float(diff.mean())}
                ctx.note(
                    f"vae        {mode:<16} tiled vs whole: max |diff| {float(diff.max()):.4f}, "
                    f"mean {float(diff.mean()):.5f} (frames in [0, 1])"
                )
            del frames
            _free()
    finally:
        vae_model.enable_tiling() if was_tiled else vae_model.disable_tiling()


def encode(ctx: Context) -> None:
    import av

    o = ctx.ours["lipsync"]
    numbers: dict = {}
    ctx.session.numbers["encode"] = numbers
    clips = {"noise": o.out.frames, "smooth": smooth_frames(*o.out.frames.shape[:3])}
    for content, frames in clips.items():
        for codec in ("x264-medium", "x264-veryfast", "h264_nvenc"):
            path = ctx.work / f"{content}-{codec}.mp4"
            try:
                t0 = time.perf_counter()
                if codec.startswith("x264"):  # the product's own encode (crf 18) at two speed presets
                    write_mp4(path, frames, o.spec.fps, preset=codec.removeprefix("x264-"))
                else:
                    encode_nvenc(path, frames, o.spec.fps)
                seconds = time.perf_counter() - t0
            except (av.error.FFmpegError, ValueError, RuntimeError) as e:
                numbers[f"{content}_{codec}"] = {"error": f"{e.__class__.__name__}: {e}"[:300]}
                ctx.note(f"encode     {content:<6} {codec:<13} unavailable: {e.__class__.__name__}: {str(e)[:150]}")
                continue
            quality = psnr(decode_frames(path, 30), frames[:30])
            mb = path.stat().st_size / 2**20
            numbers[f"{content}_{codec}"] = {"seconds": seconds, "mib": mb, "psnr_first30": quality}
            ctx.note(
                f"encode     {content:<6} {codec:<13} {seconds:7.3f} s for {len(frames)} frames "
                f"({len(frames) / seconds:6.1f} fps), {mb:7.2f} MiB, PSNR {quality:.1f} dB"
            )


def smooth_frames(n: int, height: int, width: int) -> np.ndarray:
    """Frames like a real clip's (gradients and a moving disc), not the random weights' noise, which no encoder
    compresses and every encoder is slowest on."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        cx, cy = width * (0.3 + 0.4 * np.sin(i / 40)), height * (0.5 + 0.3 * np.cos(i / 30))
        disc = ((x - cx) ** 2 + (y - cy) ** 2 < (height / 6) ** 2) * 90.0
        out[i, ..., 0] = np.clip(x / width * 200 + disc, 0, 255)
        out[i, ..., 1] = np.clip(y / height * 180 + 40 * np.sin(i / 25) + 40, 0, 255)
        out[i, ..., 2] = np.clip(120 + 60 * np.sin((x + 3 * i) / 70) - disc / 2, 0, 255)
    return out


def encode_nvenc(path: Path, frames: np.ndarray, fps: float) -> None:
    """H.264 on the GPU's encoder through PyAV, at a constant quality near libx264's crf 18."""
    from fractions import Fraction

    import av

    n, height, width, _ = frames.shape
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as out:
        stream = out.add_stream("h264_nvenc", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "p4", "rc": "vbr", "cq": "19", "b": "0"}
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frames[i]), format="rgb24")
            frame.pts = i
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))


def decode_frames(path: Path, count: int) -> np.ndarray:
    import av

    with av.open(str(path)) as f:
        frames = [fr.to_ndarray(format="rgb24") for _, fr in zip(range(count), f.decode(video=0), strict=False)]
    return np.stack(frames)


def batch(ctx: Context) -> None:
    """Short jobs through the batch runner on the loaded models (a cache hit: the load is not in the ratio)."""
    from ltx2cli.engine.models import loading as model_loading

    models, args = ctx.models, ctx.args
    model_loading.remember(models)
    assert model_loading.load_models(str(models.path)) is models, "the runner would load other models"
    manifest = batch_overlap.write_manifest(
        ctx.work / "batch.yaml", str(batch_overlap.MEDIA), args.batch_jobs, f"{args.width}x{args.height}", None
    )
    text = manifest.read_text().replace("duration: 1.0", f"duration: {args.batch_seconds}")
    manifest.write_text(text)
    # Each of the four job kinds once, untimed: first-shape costs (kernel plans, compiling) are not the overlap's.
    specs, problems = plan_manifests([manifest], {}, output_dir=ctx.work / "warm")
    assert not problems, problems
    renderer = Renderer(models, args.max_sequence_length)
    t0 = time.perf_counter()
    for spec in specs[:4]:
        renderer.render(spec.model_copy(update={"loras": []}), prepare_inputs(spec))
    ctx.note(f"batch      warm-up: one job of each kind {time.perf_counter() - t0:.1f} s (untimed)")
    r = batch_overlap.one_round(
        manifest, ctx.work / "batch", None, model=str(models.path), adjust=lambda s: s.model_copy(update={"loras": []})
    )
    ctx.session.numbers["batch"] = {
        "jobs": args.batch_jobs, "wall_s": r.wall, "pure_renders_s": r.renders, "renders_in_batch_s": r.batch_renders,
        "plan_s": r.plan, "hidden": r.hidden, "ratio": r.ratio, "one_by_one_ratio": r.serial_ratio,
    }  # fmt: skip
    ctx.note(
        f"batch      {args.batch_jobs} jobs ({args.width}x{args.height}, ~{args.batch_seconds:g} s each, fast preset): "
        f"wall {r.wall:.2f} s, pure renders {r.renders:.2f} s (one by one), plan {r.plan:.2f} s"
    )
    ctx.note(
        f"batch      wall / (load 0 + renders) = {r.ratio:.3f} (target <= 1.05); one stage after another "
        f"{r.serial_ratio:.3f}; overlapped: fetch {r.hidden['fetch']:.2f} s, mux {r.hidden['mux']:.2f} s"
    )


def _repeated_blocks(transformer) -> list[torch.nn.Module]:
    return [m for m in transformer.modules() if type(m).__name__ in transformer._repeated_blocks]


@contextlib.contextmanager
def eager_blocks(transformer):
    """Inside: the blocks run eagerly even if compiled in place (their compiled callables are put back on exit)."""
    blocks = _repeated_blocks(transformer)
    saved = [block._compiled_call_impl for block in blocks]
    for block in blocks:
        block._compiled_call_impl = None
    try:
        yield
    finally:
        for block, impl in zip(blocks, saved, strict=True):
            block._compiled_call_impl = impl


@contextlib.contextmanager
def compiled_blocks(transformer, **options):
    """diffusers' regional compile (every repeated block: one graph, reused), undone on exit."""
    transformer.compile_repeated_blocks(**options)
    try:
        yield
    finally:
        for block in _repeated_blocks(transformer):
            block._compiled_call_impl = None
        torch._dynamo.reset()


def compile_phase(ctx: Context) -> None:
    if ctx.models.compiled:
        compiled_already(ctx)
        return
    transformer = ctx.models.transformer
    bench = ctx.step()
    numbers: dict = {}
    ctx.session.numbers["compile"] = numbers
    eager_s, (video, audio) = bench.time()
    numbers["eager_step_s"] = eager_s
    with compiled_blocks(transformer, fullgraph=False, dynamic=False):
        first, _ = bench.once()
        numbers["cold_compile_s"] = first - eager_s
        steady, (video_c, audio_c) = bench.time()
        numbers |= {"step_s": steady, "rel_diff_video": rel(video_c, video), "rel_diff_audio": rel(audio_c, audio)}
        ctx.note(
            f"compile    bf16: first step {first:.1f} s (compile ~{first - eager_s:.1f} s), then {steady:.3f} s vs "
            f"eager {eager_s:.3f} s ({eager_s / steady:.2f}x); x0 vs eager {rel(video_c, video):.2e}"
        )
        if ctx.session.left() > 90 + 6 * eager_s:
            with fp8_block_linears(transformer):
                first8, _ = bench.once()
                steady8, _ = bench.time()
            numbers |= {"fp8_first_step_s": first8, "fp8_step_s": steady8}
            ctx.note(
                f"compile    fp8: first step {first8:.1f} s, then {steady8:.3f} s ({eager_s / steady8:.2f}x eager bf16)"
            )
        else:
            ctx.note("compile    fp8 under compile skipped: not enough budget left")


def compiled_already(ctx: Context) -> None:
    """The models were compiled as ltx2 compiles them (--compile): the step compiled vs eager, and how long a new
    process's compile takes once the on-disk caches are warm (dynamo reset, then the same shape again)."""
    transformer = ctx.models.transformer
    bench = ctx.step()
    steady, (video, _) = bench.time()
    with eager_blocks(transformer):
        eager_s, (video_e, _) = bench.time()
    torch._dynamo.reset()  # forget the compiled code; inductor's and autotuning's on-disk caches stay
    first, _ = bench.once()
    warm = first - steady
    ctx.session.numbers["compile"] = {
        "step_s": steady, "eager_step_s": eager_s, "warm_cache_compile_s": warm, "rel_diff_video": rel(video, video_e)
    }  # fmt: skip
    ctx.note(
        f"compile    step {steady:.3f} s compiled vs {eager_s:.3f} s eager ({eager_s / steady:.2f}x), x0 vs eager "
        f"{rel(video, video_e):.2e}; recompiling from warm on-disk caches ~{warm:.1f} s"
    )


def cudagraphs(ctx: Context) -> None:
    transformer = ctx.models.transformer
    bench = ctx.step()
    eager_s, _ = bench.time()
    with compiled_blocks(transformer, mode="reduce-overhead", dynamic=False):
        first, _ = bench.once()
        steady, _ = bench.time(warmup=2)
    ctx.session.numbers["cudagraphs"] = {"eager_step_s": eager_s, "first_step_s": first, "step_s": steady}
    ctx.note(f"cudagraphs first step {first:.1f} s, then {steady:.3f} s vs eager {eager_s:.3f} s")


def plan24(ctx: Context) -> None:
    """The lip-sync clip again with the memory plan for --plan-vram GiB, the allocator capped to that size."""
    from ltx2cli.engine.memory import placement, residency
    from ltx2cli.engine.memory.estimate import GIB, Clip, folder_configs

    m, spec, gib = ctx.models, ctx.ours["lipsync"].spec, ctx.args.plan_vram
    choice = residency.choose(folder_configs(m.path), [Clip.of(spec)], gib)
    ctx.note(f"plan24     plan {choice.plan.label}: estimated peak {choice.peak / GIB:.2f} GiB (fits: {choice.fits})")
    ctx._step, ctx.ours = None, {"lipsync": ctx.ours["lipsync"]}
    placement.apply(m, choice.plan)  # FP8 quantised where the weights are (the GPU: seconds, not minutes)
    placement.place(m, "prompt")  # everything else to pinned host memory
    _free()
    cuda = m.device.type == "cuda"
    if cuda:
        total = torch.cuda.get_device_properties(m.device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(gib * GIB / total, 1.0), m.device)
    try:
        t0 = time.perf_counter()
        out = Renderer(m, ctx.args.max_sequence_length).render(spec, prepare_inputs(spec))
        sync(m.device)
        seconds = time.perf_counter() - t0
    finally:
        if cuda:
            torch.cuda.set_per_process_memory_fraction(1.0, m.device)
    estimate = choice.peak / GIB
    peak = out.gpu_peak_gib
    ctx.session.numbers["plan24"] = {
        "vram_gib": gib, "plan": choice.as_dict(), "render_s": seconds, "peak_gib": peak, "estimate_gib": estimate,
        "peak_over_estimate": peak / estimate if peak else None, "fallbacks": out.memory_fallbacks,
        "timings": out.timings, "streamed_copies": m.streamed.copies if m.streamed else 0,
    }  # fmt: skip
    measured = f"measured peak {peak:.2f} GiB ({peak / estimate:.2f}x the estimate)" if peak else "no GPU peak"
    ctx.note(f"plan24     render {seconds:.1f} s under a {gib:g} GiB cap, {measured}; {out.memory_fallbacks}")


RUNS: dict[str, Callable[[Context], None]] = {
    "profile": profile, "attention": attention, "fp8": fp8, "vae": vae, "encode": encode, "batch": batch,
    "compile": compile_phase, "cudagraphs": cudagraphs, "plan24": plan24,
}  # fmt: skip
# Seconds each phase is expected to take, from the speed phase's step, render, decode and mux times.
ESTIMATES: dict[str, Callable[[Context], float]] = {
    "profile": lambda c: 3 * c.step_seconds + 5,
    "attention": lambda c: len(ATTENTION_KERNELS) * (c.args.repeats + 1) * c.step_seconds + 15,
    "fp8": lambda c: 2 * (c.args.repeats + 1) * c.step_seconds + 10,
    "vae": lambda c: 4 * sum(o.out.timings["decode_video"] for o in c.ours.values()) + 5,
    "encode": lambda c: 4 * c.ours["lipsync"].mux + 10,
    "batch": lambda c: 2 * c.args.batch_jobs * (c.ours["lipsync"].render * c.args.batch_seconds / c.args.seconds + 1),
    "compile": lambda c: 60 + 2 * (c.args.repeats + 1) * c.step_seconds,
    "cudagraphs": lambda c: 60 + (c.args.repeats + 3) * c.step_seconds,
    "plan24": lambda c: 60 + 2 * c.ours["lipsync"].render,
}


if __name__ == "__main__":
    sys.exit(main())
