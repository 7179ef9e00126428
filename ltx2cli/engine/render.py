"""One render, every mode: RenderSpec -> frames and sound, through one sampler.

Modes only differ in the state handed to `sample`:
- the first frame's image replaces latent frame 0 (mask 1 - strength);
- every other keyframe is appended as one frame of guide tokens at its exact pixel frame (its RoPE time),
  mask 1 - strength, removed before decoding;
- lip-sync audio is encoded and FROZEN (mask 0: timestep 0, never stepped); audio-gen audio is generated.

Here: the Renderer (prompts, the one-pass render, a stage of the sampler). Beside it: the inputs (engine.inputs),
what comes back (engine.rendered), the two-stage steps (engine.two_stage) and clips of several windows
(engine.window_render).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..jobs.guidance import Scales
from ..jobs.job import LoraRef
from ..jobs.loras import stage2_loras
from ..jobs.spec import RenderSpec
from ..jobs.windows import Window
from . import latents as lat
from .conditions import Condition, clip_tokens, streams
from .guidance import GuidedDenoiser, Prompt
from .inputs import Inputs
from .memory.decode_spans import decode_spans
from .memory.peaks import PhasePeaks, finish_peaks
from .memory.placement import place
from .memory.retry import decode_with_fallback, denoise_with_fallback, tiled_vae
from .models.loaded import Models
from .prompts import PromptStore
from .rendered import DEFAULT_STEPS, FramesOut, OnStage, OnStep, Rendered, Steps, lap, step_count, to_u8
from .sampler import State, noised, sample
from .schedule import dev_sigmas, fixed_sigmas
from .two_stage import half_grid, shrink, upsample
from .window_render import render_windows, spec_windows

if TYPE_CHECKING:
    from ..media.video import VideoWriter

PROMPT_CACHE = 32  # encoded prompts kept (on the CPU; about 30 MB each for the real model)


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
        self._prompts: OrderedDict[tuple[str, str, str | None, str], Prompt] = OrderedDict()

    def prompt(self, text: str, negative: str | None, loras: Sequence[LoraRef] = ()) -> Prompt:
        """Connector outputs for text (and negative, for CFG) with the LoRAs of `loras` that adapt the text
        connectors; cached in memory (on the CPU) and in the store."""
        p = self._cached(text, negative, loras)
        device = self.models.device
        return Prompt(p.video.to(device), p.audio.to(device), p.mask.to(device))

    def encode_prompts(self, prompts: list[tuple], refused: set | None = None) -> int:
        """Encode every (text, negative) or (text, negative, a job's LoRAs) not encoded yet, in one text-encoder
        phase; how many were encoded. With `refused`, an entry the encoder raises on is added to it and the rest go
        on (its job meets the error again when it renders, and fails alone)."""
        before = self.encoded
        for entry in dict.fromkeys(prompts):
            try:
                self._cached(*entry)
            except Exception:
                if refused is None:
                    raise
                refused.add(entry)
        return self.encoded - before

    def tokens_over(self, text: str) -> int:
        """How many of text's tokens the text encoder does not read (it reads max_sequence_length of them)."""
        count = len(self.models.tokenizer(text, verbose=False).input_ids)  # verbose: its own warning says less
        return max(0, count - self.max_sequence_length)

    def _cached(self, text: str, negative: str | None, loras: Sequence[LoraRef] = ()) -> Prompt:
        adapted = self.models.connector_lora_key(list(loras))  # "" unless a LoRA adapts the text connectors
        key = (self.models.prompt_identity, text, negative, adapted)  # a plan may quantise Gemma between jobs
        if key not in self._prompts:
            p = self.store.get(text, negative, adapted) if self.store else None
            if p is None:
                self.models.use_connector_loras(list(loras))
                p = self._encode(text, negative)
                self.encoded += 1
                if self.store:
                    self.store.put(text, negative, p, adapted)
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
        video: VideoWriter | None = None,
    ) -> Rendered:
        """Render one job. `noise` = (video, audio) packed initial noise overrides the seeded draw (parity tests);
        `resume`: a folder where a clip of several windows keeps its finished ones (engine.window_checkpoint), so a
        killed render goes on from its last finished window; there, `stop()` true after a window ends the render
        (StoppedBetweenWindows) instead of waiting for the whole clip. `video`: the MP4 the frames are encoded into
        as each chunk is decoded (Rendered.video; the caller finishes it with the sound); without it, the frames
        come back in Rendered.frames."""
        m, timings, notes = self.models, {}, []
        lessons = m.lessons.notes  # what earlier jobs' out-of-memory retries gave up: this one renders without it
        PhasePeaks.start(m, "prompt")  # then each placement begins the next phase: their peaks go in the sidecar
        stage = on_stage or (lambda _name: None)
        start = time.perf_counter()
        stage("prompt")
        grid = lat.Grid(spec.num_frames, spec.height, spec.width, spec.fps, spec.audio_latent_frames)
        scales = Scales.from_spec(spec.guidance)
        windows = spec_windows(spec)
        self.encode_prompts([(*p, tuple(spec.loras)) for p in prompts_of(spec)])  # every window's, in one phase
        prompt = self.prompt(*prompt_of(spec, windows[0]), spec.loras)
        timings["prompt"] = lap(start)
        stage("denoise")
        generator = torch.Generator("cpu").manual_seed(spec.seed)
        if len(windows) > 1:

            def denoise(
                w: Window, grid: lat.Grid, conditions: list[Condition], steps: Steps, notes: list[str]
            ) -> State:
                here = self.prompt(*prompt_of(spec, w), spec.loras)  # the prompt in force over this window
                return self._denoise(spec, grid, conditions, here, scales, generator, steps, timings, notes)

            rendered = render_windows(
                m, spec, inputs, windows, generator, denoise, self._decode_chunks, on_step, stage, timings, resume,
                stop, video,
            )  # fmt: skip
            rendered.timings["render"] = lap(start)
            rendered.memory_lessons = lessons
            return rendered
        steps = Steps(on_step, step_count(spec))
        state = self._denoise(spec, grid, inputs.conditions(), prompt, scales, generator, steps, timings, notes, noise)

        stage("decode")
        place(m, "decode")
        t0 = time.perf_counter()  # the sound first (a small decode): the MP4 names its format before any frame
        if inputs.soundtrack is not None:
            audio_out, rate = inputs.soundtrack
        else:
            wave, rate = lat.decode_audio(m, state.audio.x)
            audio_out = wave.cpu().numpy()
        if video is not None:
            video.sound_format(rate, audio_out.shape[0])
        timings["decode_audio"] = lap(t0)

        t0 = time.perf_counter()
        out = FramesOut(spec.output_frames, video)
        for chunk in self._decode_chunks(clip_tokens(state.video.x, grid), grid, notes):
            out.append(to_u8(chunk))  # the encoder takes it while the next chunk decodes
        timings["decode_video"] = lap(t0)
        timings["render"] = lap(start)
        phases, peak = finish_peaks(m)
        rendered = Rendered(out.frames(), audio_out, rate, state, timings, grid.video_tokens, notes, peak)
        rendered.memory_lessons, rendered.video, rendered.gpu_phases = lessons, video, phases
        return rendered

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
            timings["upsample"] = lap(t0)
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

    def _decode_chunks(self, base: torch.Tensor, grid: lat.Grid, notes: list[str]) -> Iterator[torch.Tensor]:
        """Base-grid tokens -> float frames in [0, 1] on the device, chunk after chunk in order (memory.decode_spans),
        tiled when the memory plan says so; a chunk that runs out of memory is decoded again tiled, and so are the
        chunks after it."""
        m = self.models
        place(m, "decode")
        latent = lat.video_latent(m, base, grid)
        tiled = m.plan is not None and m.plan.tiled_decode
        for span in decode_spans(grid.frames):
            part = latent[:, :, span.start : span.stop]
            retries = len(notes)
            with tiled_vae(m.vae) if tiled else nullcontext():
                frames = decode_with_fallback(m.vae, lambda part=part: lat.decode_latent(m, part), notes)
            tiled = tiled or len(notes) > retries
            yield frames[span.keep]

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
        timings[name + "conditioning"] = lap(t0)
        place(m, "denoise")
        t0 = time.perf_counter()
        denoiser, done = GuidedDenoiser(m, prompt, scales, grid.fps), steps.done

        def denoise() -> State:
            steps.done = done  # a retry starts the progress count where this stage began
            return sample(denoiser, state, sigmas.to(device), callback=steps.callback)

        state = denoise_with_fallback(m, denoise, [] if notes is None else notes)
        timings[name + "denoise"] = lap(t0)
        return state


def prompt_of(spec: RenderSpec, window: Window | None = None) -> tuple[str, str | None]:
    """(text, negative) a render encodes for `window` (its first by default): the entries of the spec's prompt
    timelines in force there (jobs.windows.window_prompt); the negative only where CFG uses it."""
    text, negative = spec.prompt_at((window or spec_windows(spec)[0]).prompt_frame)
    return text, negative if Scales.from_spec(spec.guidance).uses_cfg else None


def prompts_of(spec: RenderSpec) -> list[tuple[str, str | None]]:
    """Every distinct (text, negative) a render encodes: one per window at most."""
    return list(dict.fromkeys(prompt_of(spec, w) for w in spec_windows(spec)))
