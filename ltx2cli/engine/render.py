"""One render, every mode: RenderSpec -> frames and sound, through one sampler.

Modes only differ in the state handed to `sample`:
- the first frame's image replaces latent frame 0 (mask 1 - strength);
- every other keyframe is appended as one frame of guide tokens at its exact pixel frame (its RoPE time),
  mask 1 - strength, removed before decoding;
- lip-sync audio is encoded and FROZEN (mask 0: timestep 0, never stepped); audio-gen audio is generated.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..jobs import LoraRef
from ..loras import stack
from ..media.audio import decode_audio as read_audio
from ..media.audio import fit_length
from ..media.frame_store import FrameStore
from ..media.image import conditioning_frame
from ..media.mel import SAMPLE_RATE
from ..sources import Fetch, local_file
from ..spec import RenderSpec
from . import latents as lat
from .conditions import (
    Condition,
    FirstFrame,
    FrozenAudio,
    GuideFrame,
    HeldAudio,
    HeldFrames,
    Voice,
    clip_tokens,
    streams,
)
from .guidance import GuidedDenoiser, Prompt, Scales
from .memory import decode_with_fallback, denoise_with_fallback, tiled_vae
from .models import Models
from .placement import place
from .prompts import PromptStore
from .sampler import State, noised, sample
from .schedule import dev_sigmas, fixed_sigmas
from .window_checkpoint import FORMAT, StoppedBetweenWindows, WindowCheckpoint, input_key
from .windows import Window, audio_overlap, crossfade, owner, plan_windows

OnStep = Callable[[int, int], None]  # (steps done, total)
OnStage = Callable[[str], None]  # "prompt", "denoise", "decode" as each begins
PROMPT_CACHE = 32  # encoded prompts kept (on the CPU; about 30 MB each for the real model)


@dataclass(frozen=True)
class Inputs:
    """Decoded, resized conditioning media of one job (CPU arrays: can be prepared while another job renders)."""

    first: tuple[np.ndarray, float] | None  # frame-0 image (H, W, 3) uint8 and its strength
    guides: list[tuple[int, np.ndarray, float]]  # (exact pixel frame, image, strength)
    voice: np.ndarray | None  # lip-sync: 16 kHz stereo, padded to the rendered length, for the audio VAE
    soundtrack: tuple[np.ndarray, int] | None  # lip-sync: the original waveform and rate, muxed as it is

    def conditions(self) -> list[Condition]:
        """What a one-pass render of these inputs is conditioned on (engine.conditions)."""
        out: list[Condition] = [FirstFrame(*self.first)] if self.first is not None else []
        out += [GuideFrame(frame, image, strength) for frame, image, strength in self.guides]
        return out + ([Voice(self.voice)] if self.voice is not None else [])


def prepare_inputs(spec: RenderSpec, fetch: Fetch = local_file) -> Inputs:
    first, guides = None, []
    for kf in spec.keyframes:
        frame = conditioning_frame(fetch(kf.image, "image"), spec.width, spec.height, spec.img_compression)
        if kf.frame == 0:
            first = (frame, kf.strength)
        else:
            guides.append((kf.frame, frame, kf.strength))
    voice = soundtrack = None
    if spec.mode == "lipsync":
        path = fetch(spec.audio, "audio")
        voice, _ = read_audio(path, rate=SAMPLE_RATE, channels=2)
        voice = fit_length(voice, round(spec.num_frames / spec.fps * SAMPLE_RATE))
        soundtrack = read_audio(path)
    return Inputs(first=first, guides=guides, voice=voice, soundtrack=soundtrack)


@dataclass
class Rendered:
    frames: np.ndarray | FrameStore  # (output_frames, H, W, 3) uint8; a long clip's on disk
    audio: np.ndarray  # (channels, samples) float32
    sample_rate: int
    state: State | None  # the final sampler state (guide tokens included), normalised latents; None once dropped
    timings: dict[str, float] = field(default_factory=dict)
    base_tokens: int = 0  # video tokens of the clip itself; guide tokens follow
    memory_fallbacks: list[str] = field(default_factory=list)  # what was given up after running out of memory
    gpu_peak_gib: float | None = None  # torch.cuda.max_memory_allocated over the render (weights included)
    windows: list[dict] = field(default_factory=list)  # engine.windows: the windows a long clip was rendered in
    checkpoint: WindowCheckpoint | None = None  # its finished windows on disk: discard once the clip is delivered

    @property
    def video_latents(self) -> torch.Tensor:
        assert self.state is not None
        return self.state.video.x[:, : self.base_tokens]

    @property
    def audio_latents(self) -> torch.Tensor:
        assert self.state is not None
        return self.state.audio.x


class Renderer:
    """Renders specs with one set of loaded models; remembers encoded prompts."""

    def __init__(
        self,
        models: Models,
        max_sequence_length: int = 1024,
        offload_text_encoder: bool = False,
        store: PromptStore | None = None,
    ):
        self.models = models
        self.max_sequence_length = max_sequence_length
        self.offload_text_encoder = offload_text_encoder  # free Gemma's GPU memory between prompt encodings
        self.store = store  # encoded prompts on disk (a batch's); None: in memory only
        self.encoded = 0  # text-encoder runs so far (prompts that were neither in memory nor in the store)
        self._prompts: OrderedDict[tuple[str, str | None], Prompt] = OrderedDict()

    def prompt(self, text: str, negative: str | None) -> Prompt:
        """Connector outputs for text (and negative, for CFG); cached in memory (on the CPU) and in the store."""
        p = self._cached(text, negative)
        device = self.models.device
        return Prompt(p.video.to(device), p.audio.to(device), p.mask.to(device))

    def encode_prompts(self, pairs: list[tuple[str, str | None]]) -> int:
        """Encode every (text, negative) not encoded yet, in one text-encoder phase; how many were encoded."""
        before = self.encoded
        for text, negative in dict.fromkeys(pairs):
            self._cached(text, negative)
        return self.encoded - before

    def _cached(self, text: str, negative: str | None) -> Prompt:
        key = (text, negative)
        if key not in self._prompts:
            p = self.store.get(text, negative) if self.store else None
            if p is None:
                p = self._encode(text, negative)
                self.encoded += 1
                if self.store:
                    self.store.put(text, negative, p)
            self._prompts[key] = p
            if len(self._prompts) > PROMPT_CACHE:
                self._prompts.popitem(last=False)
        self._prompts.move_to_end(key)
        return self._prompts[key]

    def _encode(self, text: str, negative: str | None) -> Prompt:
        m = self.models
        embeds, mask = m.encode_text(text, negative, self.max_sequence_length)
        video, audio, conn_mask = m.connectors(embeds, mask, padding_side=m.tokenizer.padding_side)
        if self.offload_text_encoder:
            m.offload_text_encoder()
        return Prompt(video.cpu(), audio.cpu(), conn_mask.cpu())

    def render(
        self,
        spec: RenderSpec,
        inputs: Inputs,
        on_step: OnStep | None = None,
        noise: tuple | None = None,
        on_stage: OnStage | None = None,
        resume: Path | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> Rendered:
        """Render one job. `noise` = (video, audio) packed initial noise overrides the seeded draw (parity tests);
        `resume`: a folder where a clip of several windows keeps its finished ones (engine.window_checkpoint), so a
        killed render goes on from its last finished window; there, `stop()` true after a window ends the render
        (StoppedBetweenWindows) instead of waiting for the whole clip."""
        m, timings, notes = self.models, {}, []
        if torch.device(m.device).type == "cuda":
            torch.cuda.reset_peak_memory_stats(m.device)
        stage = on_stage or (lambda _name: None)
        start = time.perf_counter()
        stage("prompt")
        grid = lat.Grid(spec.num_frames, spec.height, spec.width, spec.fps, spec.audio_latent_frames)
        scales = Scales.from_spec(spec.guidance)
        prompt = self.prompt(*prompt_of(spec))
        timings["prompt"] = _lap(start)
        stage("denoise")
        generator = torch.Generator("cpu").manual_seed(spec.seed)
        windows = spec_windows(spec)
        if len(windows) > 1:
            rendered = self._render_windows(
                spec, inputs, windows, prompt, scales, generator, on_step, stage, timings, resume, stop
            )
            rendered.timings["render"] = _lap(start)
            return rendered
        steps = Steps(on_step, _step_count(spec))
        state = self._denoise(spec, grid, inputs.conditions(), prompt, scales, generator, steps, timings, notes, noise)

        stage("decode")
        t0 = time.perf_counter()
        frames = self._decode_video(clip_tokens(state.video.x, grid), grid, notes)[: spec.output_frames]
        frames_u8 = _to_u8(frames.cpu().numpy())
        timings["decode_video"] = _lap(t0)

        t0 = time.perf_counter()
        if inputs.soundtrack is not None:
            audio_out, rate = inputs.soundtrack
        else:
            wave, rate = lat.decode_audio(m, state.audio.x)
            audio_out = wave.cpu().numpy()
        timings["decode_audio"] = _lap(t0)
        timings["render"] = _lap(start)
        return Rendered(frames_u8, audio_out, rate, state, timings, grid.video_tokens, notes, _peak_gib(m))

    def _denoise(self, spec, grid, conditions, prompt, scales, generator, steps, timings, notes, noise=None) -> State:
        """The denoised state of one grid: the spec's one or two stages (stage 2 refines the 2x-upsampled
        stage-1 latents)."""
        m = self.models
        if spec.two_stage:
            # Stage 1: the dev schedule with guidance at half size; stage 2 refines the 2x-upsampled latents.
            low = half_grid(grid)
            m.set_loras(spec.loras)
            first = self._stage(
                low, shrink(conditions, low), self._schedule(spec), scales, prompt, generator, steps, timings,
                noise=noise, notes=notes,
            )  # fmt: skip
            t0 = time.perf_counter()
            video_init = upsample(m, first.video.x[:, : low.video_tokens], low, grid)
            audio_init = first.audio.x  # frozen audio conditions hold their own latents over it
            timings["upsample"] = _lap(t0)
            m.set_loras(stage2_loras(spec.loras))
            stage2 = fixed_sigmas(m.scheduler_config, spec.stage2_sigmas or [])
            state = self._stage(
                grid,
                conditions,
                lambda _tokens: stage2,
                Scales(),
                prompt.positive(),
                generator,
                steps,
                timings,
                video_init=video_init,
                audio_init=audio_init,
                name="stage2_",
                notes=notes,
            )
        else:
            m.set_loras(spec.loras)
            state = self._stage(
                grid,
                conditions,
                self._schedule(spec),
                scales,
                prompt,
                generator,
                steps,
                timings,
                noise=noise,
                notes=notes,
            )
        return state

    def _decode_video(self, base: torch.Tensor, grid: lat.Grid, notes: list[str]) -> torch.Tensor:
        """Base-grid tokens -> float frames, tiled when the memory plan says so, retried tiled on running out."""
        m = self.models
        place(m, "decode")
        with tiled_vae(m.vae) if m.plan is not None and m.plan.tiled_decode else nullcontext():
            return decode_with_fallback(m.vae, lambda: lat.decode_video(m, base, grid), notes)

    def _render_windows(
        self, spec, inputs, windows, prompt, scales, generator, on_step, stage, timings, resume=None, stop=None
    ) -> Rendered:
        """A clip longer than one window (engine.windows): each window denoised with the previous one's tail
        held, decoded, cross-faded into the last and streamed to disk; the voice encoded once for the clip. With
        `resume`, each finished window is checkpointed there and a checkpoint of this same render is gone on from."""
        m, notes = self.models, []
        steps = Steps(on_step, _step_count(spec) * len(windows))
        strength = spec.window.strength
        checkpoint = WindowCheckpoint(resume, _render_key(spec, m, inputs)) if resume is not None else None
        saved = checkpoint.load() if checkpoint is not None else None
        if checkpoint is not None:
            frames = checkpoint.frame_store(spec.height, spec.width, spec.output_frames, saved)
        else:
            frames = FrameStore(spec.height, spec.width, limit=spec.output_frames)
        voice = None
        if inputs.voice is not None:
            place(m, "condition")
            voice = lat.encode_audio(m, inputs.voice, spec.audio_latent_frames)  # once: windows get exact slices
        previous = None  # the last window's generated audio latents (its tail is held by the next)
        pending, tail = None, None  # the last window's overlap frames (float, not yet written; uint8, to hold)
        waves: list[np.ndarray] = []  # generated sound, window by window (its overlap cross-faded)
        rate, decode_audio_s, first = 0, 0.0, 0
        if saved is not None:
            generator.set_state(saved.generator)
            pending, waves, rate, first = saved.pending, saved.waves, saved.rate, saved.done
            tail = _to_u8(pending) if pending is not None else None
            previous = saved.previous.to(m.device) if saved.previous is not None else None
            steps.done = _step_count(spec) * first
        for w in windows[first:]:
            stage(f"window {w.index + 1}/{len(windows)}")
            grid = lat.Grid(w.frames, spec.height, spec.width, spec.fps, w.audio_latents)
            conditions = window_conditions(inputs, windows, w, tail, voice, previous, strength)
            state = self._denoise(spec, grid, conditions, prompt, scales, generator, steps, timings, notes)
            t0 = time.perf_counter()
            decoded = self._decode_video(clip_tokens(state.video.x, grid), grid, notes).cpu().numpy()
            nxt = windows[w.index + 1].overlap if w.index + 1 < len(windows) else 0
            if pending is not None:
                decoded[: len(pending)] = crossfade(pending, decoded[: len(pending)])
            body, pending = (decoded[: len(decoded) - nxt], decoded[len(decoded) - nxt :]) if nxt else (decoded, None)
            frames.append(_to_u8(body))
            tail = _to_u8(pending) if pending is not None else None
            timings["decode_video"] = timings.get("decode_video", 0.0) + _lap(t0)
            if voice is None:  # generated sound: decoded window by window, as the frames
                t0 = time.perf_counter()
                wave, rate = lat.decode_audio(m, state.audio.x)
                waves.append(_join_audio(waves, wave.cpu().numpy(), audio_overlap(windows, w) * rate // 25))
                previous = state.audio.x
                decode_audio_s += _lap(t0)
            del state
            if checkpoint is not None:
                checkpoint.save(w.index + 1, generator, frames, pending, previous, waves, rate)
                if stop is not None and stop() and w.index + 1 < len(windows):
                    raise StoppedBetweenWindows(w.index + 1, len(windows))
        if inputs.soundtrack is not None:
            audio_out, rate = inputs.soundtrack
        else:
            audio_out = np.concatenate(waves, axis=1)
        timings["decode_audio"] = round(decode_audio_s, 4)
        plan = [w.as_dict() | ({"resumed": True} if w.index < first else {}) for w in windows]
        return Rendered(frames, audio_out, rate, None, timings, 0, notes, _peak_gib(m), plan, checkpoint)

    def _schedule(self, spec: RenderSpec) -> Callable[[int], torch.Tensor]:
        """Video token count (guide tokens included, as in diffusers) -> sigmas."""
        config = self.models.scheduler_config
        if spec.sigmas:
            return lambda _tokens: fixed_sigmas(config, spec.sigmas)
        return lambda tokens: dev_sigmas(config, spec.steps or DEFAULT_STEPS, tokens)

    def _stage(
        self,
        grid,
        conditions,
        schedule,
        scales,
        prompt,
        generator,
        steps,
        timings,
        *,
        noise=None,
        video_init=None,
        audio_init=None,
        name="",
        notes=None,
    ) -> State:
        """Condition, noise and denoise one pass over `grid`; `*_init` = latents to refine instead of pure noise."""
        m = self.models
        t0 = time.perf_counter()
        place(m, "condition")
        clean = streams(m, grid, conditions, video_init, audio_init)
        video, audio = clean.video, clean.audio
        sigmas = schedule(video.x.shape[1])
        if noise is None:  # packed video (guide tokens included), then packed audio: diffusers' Condition/DFR order
            noise = (torch.randn(video.x.shape, generator=generator), torch.randn(audio.x.shape, generator=generator))
        device = m.device
        state = State(
            video=noised(video, noise[0].to(device), sigmas[0]), audio=noised(audio, noise[1].to(device), sigmas[0])
        )
        timings[name + "conditioning"] = _lap(t0)
        place(m, "denoise")
        t0 = time.perf_counter()
        denoiser, done = GuidedDenoiser(m, prompt, scales, grid.fps), steps.done

        def denoise() -> State:
            steps.done = done  # a retry starts the progress count where this stage began
            return sample(denoiser, state, sigmas.to(device), callback=steps.callback)

        state = denoise_with_fallback(m, denoise, [] if notes is None else notes)
        timings[name + "denoise"] = _lap(t0)
        return state


DEFAULT_STEPS = 30


class Steps:
    """Counts denoising steps across stages for the progress bar."""

    def __init__(self, on_step: OnStep | None, total: int):
        self.on_step, self.total, self.done = on_step, total, 0

    def callback(self, _info: dict) -> None:
        self.done += 1
        if self.on_step is not None:
            self.on_step(self.done, self.total)


def prompt_of(spec: RenderSpec) -> tuple[str, str | None]:
    """(text, negative) a render encodes: the negative only where CFG uses it."""
    return spec.prompt, spec.negative_prompt if Scales.from_spec(spec.guidance).uses_cfg else None


def _step_count(spec: RenderSpec) -> int:
    first = len([s for s in spec.sigmas if s > 0]) if spec.sigmas else spec.steps or DEFAULT_STEPS
    second = len([s for s in spec.stage2_sigmas or [] if s > 0]) if spec.two_stage else 0
    return first + second


def half_grid(grid: lat.Grid) -> lat.Grid:
    """Stage 1's grid: half the latent rows and columns, rounded up (the upsampled result is cropped back)."""
    rows, cols = -(-grid.rows // 2), -(-grid.cols // 2)
    return lat.Grid(grid.num_frames, rows * 32, cols * 32, grid.fps, grid.audio_latents)


def shrink(conditions: list[Condition], grid: lat.Grid) -> list[Condition]:
    """The same conditions with their images cover-fitted to stage 1's size."""
    from PIL import Image

    from ..media.image import fit

    def small(frame: np.ndarray) -> np.ndarray:
        return np.asarray(fit(Image.fromarray(frame), grid.width, grid.height))

    def shrunk(c: Condition) -> Condition:
        if isinstance(c, FirstFrame | GuideFrame):
            return replace(c, image=small(c.image))
        if isinstance(c, HeldFrames):
            return replace(c, frames=np.stack([small(f) for f in c.frames]))
        return c

    return [shrunk(c) for c in conditions]


def upsample(models: Models, tokens: torch.Tensor, low: lat.Grid, grid: lat.Grid) -> torch.Tensor:
    """Stage-1 tokens -> the latent upsampler (it works on raw latents) -> normalised full-size tokens."""
    from diffusers import LTX2ImageToVideoPipeline as P

    if models.upsampler is None:
        from ..errors import ModelError
        from .model_source import UPSAMPLER_DIR

        raise ModelError(
            f"two-stage presets need the latent upsampler ({UPSAMPLER_DIR}/ in a diffusers folder, a spatial "
            f"upscaler in latent_upscale_models/ of a ComfyUI root; model {models.path}); "
            "use a one-stage preset (fast, balanced) or add the upsampler weights"
        )
    vae = models.vae
    latent = P._unpack_latents(tokens, low.frames, low.rows, low.cols)
    latent = P._denormalize_latents(latent, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    big = models.upsampler(latent.to(models.upsampler.dtype)).float()[..., : grid.rows, : grid.cols]
    big = P._normalize_latents(big, vae.latents_mean.float(), vae.latents_std.float(), vae.config.scaling_factor)
    return P._pack_latents(big)


def stage2_loras(loras: list[LoraRef]) -> list[LoraRef]:
    """The refine stage runs the distilled schedule: it needs the distilled LoRA at full strength."""
    return stack(loras, [LoraRef(name="distilled", strength=1.0)])


def spec_windows(spec: RenderSpec) -> list[Window]:
    """The windows a spec renders in: one, unless it is longer than its preset's window."""
    w = spec.window
    if w is None:
        return [Window(0, 0, spec.num_frames, 0, 0, spec.audio_latent_frames)]
    return plan_windows(spec.num_frames, spec.fps, w.seconds, w.overlap)


def window_conditions(
    inputs: Inputs, windows: list[Window], w: Window, tail, voice, previous, strength: float
) -> list[Condition]:
    """Window `w`'s conditions: the first image (first window), the keyframes it owns at their local frames, the
    previous window's tail frames held at `strength`; lip-sync, its exact slice of the clip's voice latents;
    generated sound, the previous window's latents over the overlap, held the same way."""
    out: list[Condition] = [FirstFrame(*inputs.first)] if w.index == 0 and inputs.first is not None else []
    if tail is not None:
        out.append(HeldFrames(tail, strength))
    out += [GuideFrame(f - w.start, image, s) for f, image, s in inputs.guides if owner(windows, f) == w.index]
    if voice is not None:
        out.append(FrozenAudio(voice[:, w.audio_start : w.audio_start + w.audio_latents]))
    elif previous is not None:
        out.append(HeldAudio(previous[:, previous.shape[1] - audio_overlap(windows, w) :], strength))
    return out


def _render_key(spec: RenderSpec, m: Models, inputs: Inputs) -> str:
    """What a window checkpoint must match: the spec, the model and the decoded inputs' contents."""
    images = [inputs.first[0]] if inputs.first is not None else []
    images += [image for _frame, image, _strength in inputs.guides]
    return input_key(FORMAT, spec.spec_hash(), m.identity, inputs.voice, *images)


def _join_audio(waves: list[np.ndarray], wave: np.ndarray, overlap: int) -> np.ndarray:
    """The part of a window's sound (channels, samples) that follows what `waves` holds: its first `overlap`
    samples cross-faded into the previous window's last ones (shortened in place), the rest as it is."""
    if not waves or overlap <= 0:
        return wave
    before = waves[-1]
    n = min(overlap, before.shape[1], wave.shape[1])
    mixed = crossfade(before[:, -n:].T[:, None, None, :], wave[:, :n].T[:, None, None, :])[:, 0, 0, :].T
    waves[-1] = before[:, :-n]
    return np.concatenate([mixed, wave[:, n:]], axis=1)


def _peak_gib(m: Models) -> float | None:
    """torch's peak GPU memory since the render began (weights included); None on a CPU."""
    if torch.device(m.device).type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(m.device) / 2**30, 2)


def _to_u8(frames: np.ndarray) -> np.ndarray:
    return (frames * 255).round().astype(np.uint8)


def _lap(t0: float) -> float:
    return round(time.perf_counter() - t0, 4)
