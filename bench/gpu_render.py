"""Full-size LTX-2 render speed and memory with random weights made on the GPU, against diffusers' own pipelines.

    python bench/gpu_render.py                                   # full size, cuda, bf16: 10-s 30-fps 768x512
    python bench/gpu_render.py --weights fp8                     # transformer-block Linears in fp8 (_scaled_mm)
    python bench/gpu_render.py --model tiny --device cpu --width 96 --height 64 --seconds 0.5   # a smoke run

Builds every component from the configs (--config-dir, default configs/reference/LTX-2, shipped with ltx2) with random
weights allocated and filled on the device (model load, reported apart), then renders the fast preset (distilled
sigmas, 8 steps, no guidance passes; its LoRAs left out: random weights have none) for a lip-sync clip and an
audio-gen clip through ltx2's Renderer, reporting prompt encoding, per-step transformer time, VAE decode, audio,
mux, total render time, peak memory, achieved TFLOP/s and MFU. Then diffusers runs the same clips on the same
weights and inputs in this process (LTX2DFRPipeline with frozen audio for lip-sync, LTX2ImageToVideoPipeline for
audio-gen) and the speed ratio is printed. A results block is appended to bench/RESULTS.md.

Stage timings synchronise the device at each stage and step boundary (a few syncs per render: negligible against
steps of a second, and what makes the numbers mean the stage rather than the kernels still queued behind it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import platform
import shlex
import sys
import tempfile
import time
import wave
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from ltx2cli.engine.flops import peak_tflops, transformer_flops
from ltx2cli.engine.inputs import Inputs, prepare_inputs
from ltx2cli.engine.models.compile import compile_blocks
from ltx2cli.engine.models.loaded import Models
from ltx2cli.engine.models.loading import default_dtype
from ltx2cli.engine.render import Renderer
from ltx2cli.engine.rendered import Rendered
from ltx2cli.jobs.spec import RenderSpec
from ltx2cli.media.video import VideoWriter
from ltx2cli.plan.resolve import plan_manifests
from ltx2cli.synthetic.random_models import random_models
from ltx2cli.synthetic.random_weights import FP8, WEIGHTED, parameter_count

ROOT = Path(__file__).resolve().parent.parent
IMAGE = ROOT / "examples" / "jobs" / "media" / "portrait.png"
RESULTS = ROOT / "bench" / "RESULTS.md"
PROMPT = "A woman talks to the camera in a bright studio, soft light, natural head movement."
VOICE_RATE = 16000


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    lines: list[str] = []
    models = build(args, lines)
    with tempfile.TemporaryDirectory(prefix="ltx2-gpu-bench-") as tmp:
        speed(models, args, Path(tmp), lines)
    if not args.no_results:
        append_results(args.results, lines, argv)
    return 0


def build(args: argparse.Namespace, lines: list[str]) -> Models:
    """The models with random weights on the device (model load, reported apart from the renders)."""
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu" and args.model == "full" and not args.config_dir:
        raise SystemExit(
            "full-size LTX-2 takes ~64 GiB of weights: this benchmark is for a GPU. For a smoke run on the CPU: "
            "--model tiny --device cpu --width 96 --height 64 --seconds 1"
        )
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, None: default_dtype(str(device))}[args.dtype]
    if args.threads:
        torch.set_num_threads(args.threads)
    say(lines, f"device        {device_name(device)}  ({dtype}, weights {args.weights or 'as dtype'})")
    say(lines, f"versions      {versions()}")
    t0 = time.perf_counter()
    models = random_models(config_dir(args), device=device, dtype=dtype, seed=0, weights=args.weights)
    sync(device)
    say(lines, f"model load    {time.perf_counter() - t0:8.2f} s  (random weights made on {device}; not in renders)")
    counts = {name: parameter_count(getattr(models, name)) / 1e9 for name in WEIGHTED}
    say(lines, "params        " + ", ".join(f"{k} {v:.3g} B" for k, v in counts.items()))
    if device.type == "cuda":
        say(lines, f"weights       {torch.cuda.memory_allocated(device) / 2**30:8.2f} GiB resident")
    if args.vae_tiling:  # ltx2 decodes whole (it fits: +17 GiB for a 10-s 768x512 clip, and is 1.25x faster)
        models.vae.enable_tiling()
        say(lines, "vae           tiled decode (both sides)")
    if args.compile:
        compile_blocks(models)  # what `ltx2 batch` does on a GPU; the warm-up renders hold the compiling
        say(lines, "compile       transformer blocks (torch.compile, regional); warm-up renders include compiling")
    return models


def speed(models: Models, args: argparse.Namespace, work: Path, lines: list[str]) -> dict[str, Ours]:
    """Our fast-preset renders of both clips, then diffusers' pipelines on the same weights and inputs."""
    ours = render_ours(models, args, work, lines)
    if not args.no_diffusers:
        render_diffusers(models, args, ours, lines)
    return ours


def render_ours(models: Models, args: argparse.Namespace, work: Path, lines: list[str]) -> dict[str, Ours]:
    specs = plan_clips(args, work)
    renderer = Renderer(models, max_sequence_length=args.max_sequence_length)  # warm-up only
    # First-call costs (kernel selection, allocator growth, compiling each clip shape) are not steady state.
    for _ in range(args.warmup):
        for spec in specs.values() if models.compiled else [specs["lipsync"]]:
            t0 = time.perf_counter()
            renderer.render(spec, prepare_inputs(spec))
            sync(models.device)
            what = "untimed render" + (", compiling its shape" if models.compiled else "")
            say(lines, f"warm-up       {spec.id:<9} {time.perf_counter() - t0:8.2f} s  ({what})")
    # A fresh Renderer per clip: its prompt cache is empty, so prompt encoding is inside the timed render.
    return {
        mode: run_ours(Renderer(models, args.max_sequence_length), spec, work, models.device, lines)
        for mode, spec in specs.items()
    }


def render_diffusers(models: Models, args: argparse.Namespace, ours: dict[str, Ours], lines: list[str]) -> None:
    """diffusers' pipelines on each of our clips; the seconds land in `ours[mode].diffusers`."""
    for mode, o in ours.items():
        theirs = run_diffusers(models, o.spec, prepare_inputs(o.spec), args.max_sequence_length, models.device)
        o.diffusers = theirs
        say(
            lines,
            f"diffusers     {mode:<9} {theirs:8.2f} s  ({diffusers_name(mode)}; ours {o.render:.2f} s)"
            f"  speed ratio {theirs / o.render:.2f}x",
        )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    return parser(__doc__).parse_args(argv)


def parser(doc: str) -> argparse.ArgumentParser:
    """The options of a full-size render benchmark (bench/gpu_session.py adds its own)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--model", choices=["full", "tiny"], default="full", help="full-size configs or the tiny model's")
    p.add_argument("--config-dir", type=Path, help="a folder of LTX-2 component configs (overrides --model)")
    p.add_argument("--device", help="cuda (default when available) or cpu")
    p.add_argument("--dtype", choices=["bf16", "fp32"], help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--weights", choices=[FP8], help="fp8: transformer-block Linear weights float8_e4m3fn")
    p.add_argument("--width", type=int, default=768)
    p.add_argument("--height", type=int, default=512)
    p.add_argument("--seconds", type=float, default=10.0, help="lip-sync clip length")
    p.add_argument("--audiogen-seconds", type=float, help="audio-gen clip length (default: --seconds)")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--max-sequence-length", type=int, default=1024, help="prompt tokens (the connectors' input)")
    p.add_argument("--warmup", type=int, default=1, help="untimed lip-sync renders first (default 1)")
    p.add_argument("--vae-tiling", action="store_true", help="tiled VAE decode (default: whole, as ltx2 renders)")
    p.add_argument("--compile", action="store_true", help="torch.compile the transformer blocks (ltx2's batch default)")
    p.add_argument("--no-diffusers", action="store_true", help="skip diffusers' pipelines")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--results", type=Path, default=RESULTS, help="markdown file the results block is appended to")
    p.add_argument("--no-results", action="store_true", help="print only")
    return p


def config_dir(args: argparse.Namespace) -> Path | None:
    if args.config_dir:
        return args.config_dir
    if args.model == "tiny":
        from ltx2cli.synthetic.tiny import tiny_model_dir

        return tiny_model_dir()
    return None  # random_weights finds the reference configs


def plan_clips(args: argparse.Namespace, work: Path) -> dict[str, RenderSpec]:
    """The fast preset for a lip-sync clip (a synthetic voice of --seconds) and an audio-gen clip."""
    import yaml

    voice = write_voice(work / "voice.wav", args.seconds)
    common = {"image": str(IMAGE), "prompt": PROMPT, "preset": "fast", "fps": args.fps, "seed": 1}
    common["resolution"] = f"{args.width}x{args.height}"
    audiogen = args.audiogen_seconds or args.seconds
    jobs = [{"id": "lipsync", "audio": str(voice)} | common, {"id": "audiogen", "duration": audiogen} | common]
    manifest = work / "jobs.yaml"
    manifest.write_text(yaml.safe_dump({"jobs": jobs}))
    specs, problems = plan_manifests([manifest], {}, output_dir=work / "out")
    assert not problems, problems
    # Random weights come without LoRA files; a LoRA adds no matmuls once fused, so speed is unaffected.
    return {s.id: s.model_copy(update={"loras": []}) for s in specs}


def write_voice(path: Path, seconds: float) -> Path:
    """A voice-like 16-kHz stereo WAV: a gliding tone with syllable-rate amplitude (inputs only need the length)."""
    t = np.arange(round(seconds * VOICE_RATE)) / VOICE_RATE
    pitch = 140 + 30 * np.sin(2 * np.pi * 0.7 * t)
    tone = np.sin(2 * np.pi * np.cumsum(pitch) / VOICE_RATE) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2)
    pcm = (np.stack([tone, tone], axis=1) * 0.3 * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(2)
        w.setframerate(VOICE_RATE)
        w.writeframes(pcm.tobytes())
    return path


@dataclass
class Clock:
    """Device-synchronised stage and step marks for one render."""

    device: torch.device
    marks: dict[str, float] = field(default_factory=dict)
    steps: list[float] = field(default_factory=list)

    def stage(self, name: str) -> None:
        sync(self.device)
        self.marks[name] = time.perf_counter()

    def step(self, _done: int, _total: int) -> None:
        sync(self.device)
        self.steps.append(time.perf_counter())


@dataclass
class Ours:
    spec: RenderSpec
    out: Rendered
    render: float  # Renderer.render, prompt to decoded audio (the diffusers pipelines' span)
    mux: float
    steps: list[float]  # seconds per denoising step (the first holds conditioning)
    tflops: float  # achieved in the steps
    peak_gib: float | None  # device peak during the render (None on the CPU)
    diffusers: float | None = None  # diffusers' pipeline on the same clip, seconds


def run_ours(renderer: Renderer, spec: RenderSpec, work: Path, device: torch.device, lines: list[str]) -> Ours:
    models = renderer.models
    t0 = time.perf_counter()
    inputs = prepare_inputs(spec)
    prepare = time.perf_counter() - t0
    reset_peak(device)
    clock = Clock(device)
    # As a batch writes it: x264 encodes each decoded chunk while the next decodes; every frame is also kept (a copy
    # as it passes) for the session's later phases (PSNR, the encode phase), which need the frames themselves.
    video = VideoWriter(work / f"{spec.id}.mp4", spec.fps, spec.width, spec.height, keep=range(spec.output_frames))
    sync(device)
    start = time.perf_counter()
    out = renderer.render(spec, inputs, on_step=clock.step, on_stage=clock.stage, video=video)
    sync(device)
    render = time.perf_counter() - start
    t1 = time.perf_counter()
    video.finish(out.audio, out.sample_rate)
    mux = time.perf_counter() - t1  # what x264 had left after the last chunk, and the sound
    out.frames = np.stack([video.kept[i] for i in range(spec.output_frames)])

    steps = np.diff([clock.marks["denoise"], *clock.steps])  # step 1 also holds conditioning (VAE encodes)
    flops = transformer_flops(
        dict(models.transformer.config),
        out.state.video.x.shape[1],
        out.state.audio.x.shape[1],
        renderer.max_sequence_length,
    ) * len(steps)  # fmt: skip  -- the fast preset runs one pass (no CFG/STG/modality rows) per step
    denoise = float(steps.sum())
    tflops = flops / denoise / 1e12
    peak = peak_tflops(device_name(device)) if device.type == "cuda" else None
    t = out.timings
    tag = f"ours {spec.id:<9}"
    say(lines, f"{tag} clip   {spec.output_frames} frames {spec.width}x{spec.height} @ {spec.fps:g} fps, "
               f"{out.base_tokens} video + {out.state.audio.x.shape[1]} audio tokens, {len(steps)} steps")  # fmt: skip
    say(lines, f"{tag} inputs {prepare:8.3f} s  (decode image/audio on the CPU; before the render)")
    say(lines, f"{tag} prompt {t['prompt']:8.3f} s  (Gemma + connectors)")
    say(lines, f"{tag} steps  {denoise:8.3f} s  per step {fmt_steps(steps)}")
    say(lines, f"{tag} decode {t['decode_video']:8.3f} s  (video VAE)")
    audio = "the voice is muxed as is" if spec.mode == "lipsync" else "audio VAE + vocoder"
    say(lines, f"{tag} audio  {t['decode_audio']:8.3f} s  ({audio})")
    say(lines, f"{tag} mux    {mux:8.3f} s  (H.264 left after the last decoded chunk, + AAC)")
    say(lines, f"{tag} total  {render + mux:8.3f} s  (end to end: render {render:.3f} + mux; model load excluded)")
    say(lines, f"{tag} memory {peak_memory(device)}")
    mfu = f"MFU {tflops / peak:.1%} of {peak:g} TFLOP/s bf16 dense" if peak else "MFU n/a (no known peak)"
    say(lines, f"{tag} speed  {tflops:8.3g} TFLOP/s in the steps ({flops / 1e12:.3g} TFLOP), {mfu}")
    peak_gib = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return Ours(spec, out, render, mux, [float(x) for x in steps], tflops, peak_gib)


def fmt_steps(steps: np.ndarray) -> str:
    rest = f", then mean {steps[1:].mean():.3f} s" if len(steps) > 1 else ""
    return f"first {steps[0]:.3f} s (with conditioning){rest}"


def diffusers_name(mode: str) -> str:
    return "LTX2DFRPipeline, frozen audio" if mode == "lipsync" else "LTX2ImageToVideoPipeline"


def run_diffusers(models: Models, spec: RenderSpec, inputs: Inputs, max_sequence_length: int, device) -> float:
    """diffusers' pipeline for the same clip, weights, sigmas and guidance; seconds for its __call__ (no mux)."""
    from diffusers import LTX2DFRPipeline, LTX2ImageToVideoPipeline
    from PIL import Image

    from ltx2cli.engine.latents import encode_audio

    names = ("vae", "audio_vae", "text_encoder", "tokenizer", "connectors", "transformer", "vocoder")
    parts = {n: getattr(models.pipe, n) for n in names}
    # The sigmas as given (ours use them as they are; diffusers would shift them again with dynamic shifting).
    parts["scheduler"] = type(models.pipe.scheduler).from_config(
        models.scheduler_config, use_dynamic_shifting=False, shift_terminal=None
    )
    image = Image.fromarray(inputs.first[0].round().astype("uint8")) if inputs.first else None  # PIL: 8 bits
    common = dict(
        prompt=spec.prompt, width=spec.width, height=spec.height, num_frames=spec.num_frames, frame_rate=spec.fps,
        sigmas=[s for s in spec.sigmas if s > 0], generator=torch.Generator().manual_seed(spec.seed),
        max_sequence_length=max_sequence_length, output_type="np",
    )  # fmt: skip
    if spec.mode == "lipsync":
        from diffusers.pipelines.ltx2.pipeline_ltx2_condition import LTX2VideoCondition

        pipe = LTX2DFRPipeline(**parts)
        tokens = encode_audio(models, inputs.voice, spec.audio_latent_frames)  # the same frozen latents as ours
        avae = models.audio_vae
        raw = pipe._unpack_audio_latents(
            pipe._denormalize_audio_latents(tokens, avae.latents_mean, avae.latents_std),
            tokens.shape[1],
            avae.config.mel_bins // pipe.audio_vae_mel_compression_ratio,
        )
        kwargs = common | dict(
            conditions=[LTX2VideoCondition(frames=image, index=0, strength=1.0)], audio_latents=raw,
            freeze_audio=True, generate_slots=False,
        )  # fmt: skip
    else:
        pipe = LTX2ImageToVideoPipeline(**parts)
        kwargs = common | dict(
            image=image, guidance_scale=1.0, stg_scale=0.0, modality_scale=1.0, guidance_rescale=0.0,
            audio_guidance_scale=1.0, audio_stg_scale=0.0, audio_modality_scale=1.0, audio_guidance_rescale=0.0,
        )  # fmt: skip
    pipe.set_progress_bar_config(disable=True)
    sync(device)
    t0 = time.perf_counter()
    out = pipe(**kwargs)
    sync(device)
    seconds = time.perf_counter() - t0
    assert np.isfinite(np.asarray(out.frames[0])).all()
    return seconds


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory(device: torch.device) -> str:
    if device.type != "cuda":
        import resource

        return f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB (CPU run)"
    return f"peak {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB allocated (torch.cuda.max_memory_allocated)"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def versions() -> str:
    libs = ", ".join(f"{p} {version(p)}" for p in ("torch", "diffusers", "transformers"))
    cuda = f", CUDA {torch.version.cuda}" if torch.version.cuda else ""
    return f"{libs}{cuda}, Python {platform.python_version()}"


def say(lines: list[str], line: str) -> None:
    print(line, flush=True)
    lines.append(line)


def append_results(path: Path, lines: list[str], argv: list[str] | None) -> None:
    command = shlex.join(["python", "bench/gpu_render.py", *(sys.argv[1:] if argv is None else argv)])
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = f"\n## {stamp}: gpu_render\n\n`{command}`\n\n```\n" + "\n".join(lines) + "\n```\n"
    if not path.exists():
        path.write_text("# Benchmark results\n\nAppended by the bench/ scripts: device, versions, command, numbers.\n")
    with path.open("a") as f:
        f.write(block)
    print(f"appended to {path}")


if __name__ == "__main__":
    sys.exit(main())
