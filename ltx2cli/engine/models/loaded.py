"""The loaded LTX-2 components as one `Models` object: what the rest of ltx2 renders with. It encodes prompts,
moves Gemma on and off the GPU, and switches LoRAs; engine.models.loading loads it, once per process."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ...errors import ModelError
from ...jobs.job import LoraRef
from ...weights.lora_files import applied_loras, lora_file
from ..memory.placement import Lessons

PRECISION_COMPONENTS = ("transformer", "text_encoder", "connectors", "vae", "audio_vae", "vocoder")
COMPONENT_NAMES = frozenset(
    {"transformer", "connectors", "vae", "audio_vae", "vocoder", "text_encoder", "tokenizer", "scheduler"}
)


@dataclass
class Models:
    """Every LTX-2 component, loaded once, whatever the weights' source: what the rest of ltx2 renders with.

    `pipe`, the diffusers pipeline holding the components, is this class's own business (its prompt encoding and
    peft's LoRA loader); outside, only tests and benchmarks that compare with diffusers reach into it."""

    path: Path
    pipe: Any
    device: Any
    dtype: Any
    upsampler: Any | None
    weights_identity: str  # the weights: name + fingerprint of configs and tensors (`identity` adds precisions)
    loaded_loras: dict[str, str] = field(default_factory=dict)  # LoraRef.key -> adapter name
    compiled: bool = False  # transformer blocks compiled in place (engine.models.compile)
    attention: str = "sdpa"  # the kernel of the blocks' maskless attention (engine.models.attention), for sidecars
    version: str = "2.0"  # weights.versions: the LTX-2 release these weights are
    distilled: bool = False  # a distilled checkpoint: the distilled LoRA is already in its weights
    plan: Any = None  # engine.memory.residency.Plan this process follows (None: everything stays where it loaded)
    where: dict[str, str] = field(default_factory=dict)  # component -> "gpu" | "host", kept by placement.place
    streamed: Any = None  # engine.memory.streaming.StreamedBlocks: transformer blocks copied in for each forward
    room: Any = None  # engine.memory.residency.Budget of a long-lived process (the worker) planning each request
    lessons: Lessons = field(default_factory=Lessons)  # what out-of-memory retries gave up, for good
    phase: str | None = None  # the render phase placement.place last arranged the components for
    peaks: Any = None  # engine.memory.peaks.PhasePeaks of the render under way on a GPU
    _fp8_adapters: dict[str, Any] = field(default_factory=dict)  # LoraRef.key -> adapter (FP8 blocks only)
    _fp8_active: frozenset[str] = frozenset()  # the keys of _fp8_adapters whose hooks are on now
    _lora_hooks: list[Any] = field(default_factory=list)
    _connector_prints: dict[Path, str] = field(default_factory=dict)  # LoRA file -> fingerprint if it adapts connectors
    _adapters_made: int = 0  # peft adapter names are never reused (forget_loras deletes some)

    def __post_init__(self) -> None:
        from ...jobs.releases import VERSIONS

        if VERSIONS[self.version].bos_prepended:  # once, at load: every encoding of this model starts with BOS
            from ...weights.text_encoder import prepend_bos

            prepend_bos(self.pipe.tokenizer)
        from .av_timesteps import apply_rule

        apply_rule(self.pipe.transformer)  # the a2v/v2a AdaLN timesteps as Lightricks has them, for every release

    def __getattr__(self, name: str) -> Any:
        if name not in COMPONENT_NAMES:
            raise AttributeError(name)
        return getattr(self.pipe, name)

    def encode_text(self, text: str, negative: str | None, max_sequence_length: int) -> tuple[Any, Any]:
        """Gemma's stacked hidden states and mask for text (rows [negative, text] when a negative is given)."""
        import torch

        self.text_encoder_to_device()
        embeds, mask, neg_embeds, neg_mask = self.pipe.encode_prompt(
            prompt=text,
            negative_prompt=negative or "",
            do_classifier_free_guidance=negative is not None,
            max_sequence_length=max_sequence_length,
            device=self.device,
        )
        if negative is not None:
            embeds, mask = torch.cat([neg_embeds, embeds]), torch.cat([neg_mask, mask])
        return embeds, mask

    @property
    def audio_latent_mel_bins(self) -> int:
        """Mel bins of the audio VAE's latents (its input bins over its compression)."""
        return self.audio_vae.config.mel_bins // self.pipe.audio_vae_mel_compression_ratio

    @property
    def scheduler_config(self) -> dict:
        return dict(self.pipe.scheduler.config)

    @property
    def perturbed_attn(self) -> bool:
        """STG only changes anything in transformers built with perturbable self-attention (LTX-2.3)."""
        return bool(self.pipe.transformer.config.get("perturbed_attn", False))

    @property
    def keyframe_embedding(self) -> bool:
        """The transformer adds a learned embedding to tokens the sampler marks as single-pixel-frame (LTX-2.5)."""
        return bool(self.pipe.transformer.config.get("use_keyframes_abs_pos_embedding", False))

    @property
    def precisions(self) -> dict[str, str]:
        """What each component computes in now: the model's dtype, or "fp8" where its Linears are FP8 (loaded so,
        or quantised by a memory plan). Recorded in the sidecar beside `identity`."""
        from ...weights.fp8 import Fp8Linear

        out = dict.fromkeys(PRECISION_COMPONENTS, str(self.dtype).removeprefix("torch."))
        if self.fp8_blocks:
            out["transformer"] = "fp8"
        if any(isinstance(m, Fp8Linear) for m in self.pipe.text_encoder.modules()):
            out["text_encoder"] = "fp8"
        return out

    def identity_of(self, components: tuple[str, ...]) -> str:
        """The weights plus which of `components` run in FP8: outputs of these components made under one such
        identity are the same numbers (the dtype follows the device: bf16 on GPUs, float32 on the CPU)."""
        fp8 = [name for name, p in self.precisions.items() if name in components and p == "fp8"]
        return self.weights_identity + (f"+fp8:{','.join(fp8)}" if fp8 else "")

    @property
    def identity(self) -> str:
        """The weights and the precision every component runs in: recorded with every render, matched by window
        checkpoints. A plan that quantises (or a single file kept in FP8) is another identity than bf16."""
        return self.identity_of(PRECISION_COMPONENTS)

    @property
    def prompt_identity(self) -> str:
        """What encoded prompts depend on: the weights and the text encoder's precision (not the transformer's)."""
        return self.identity_of(("text_encoder", "connectors"))

    @property
    def fp8_blocks(self) -> bool:
        """The transformer blocks' Linears are FP8 (weights.fp8.Fp8Linear): peft cannot wrap them (lora_hooks)."""
        from ...weights.fp8 import Fp8Linear

        return any(isinstance(m, Fp8Linear) for m in self.pipe.transformer.transformer_blocks.modules())

    def text_encoder_to_device(self) -> None:
        """Gemma on the GPU to encode prompts: the followed plan's prompt phase, or (no plan) Gemma back if moved."""
        from ..memory.placement import followed, place

        if followed(self) is not None:
            place(self, "prompt")
        elif self.where.get("text_encoder") == "host":
            self.pipe.text_encoder.to(self.device)
            self.where["text_encoder"] = "gpu"

    @property
    def text_encoder_offloadable(self) -> bool:
        """Gemma sits on a GPU and could move to the CPU to make room."""
        return self.where.get("text_encoder", "gpu") == "gpu" and str(self.device) != "cpu"

    def offload_text_encoder(self) -> None:
        """Move Gemma (the biggest component after the transformer) to CPU once prompts are encoded, and keep it off
        the GPU outside the prompt phase for the rest of this process's jobs (placement.Lessons)."""
        if self.text_encoder_offloadable:
            self.lessons = replace(self.lessons, text_encoder_out=True)
            from ..memory.placement import HOST, move

            move(self.pipe.text_encoder, HOST)
            self.where["text_encoder"] = "host"
            import torch

            torch.cuda.empty_cache()

    def applied_loras(self, loras: list[LoraRef]) -> list[LoraRef]:
        """The LoRAs of `loras` that set_loras applies: not those at strength 0, nor the distilled LoRA on a
        distilled checkpoint (its weights have it already)."""
        return applied_loras(loras, self.distilled)

    def set_loras(self, loras: list[LoraRef]) -> None:
        """Activate exactly these LoRAs at their strengths (each file is read once per process)."""
        active = self.applied_loras(loras)
        if self.fp8_blocks:
            self._set_fp8_loras(active)
            return
        names, weights = [], []
        for lora in active:
            if lora.key not in self.loaded_loras:
                self.loaded_loras[lora.key] = self._load_peft_lora(lora_file(self.path, lora, self.version))
            names.append(self.loaded_loras[lora.key])
            weights.append(float(lora.strength))
        if not self.loaded_loras:
            return
        if names:
            self.pipe.enable_lora()
            self.pipe.set_adapters(names, adapter_weights=weights)
        else:
            self.pipe.disable_lora()

    def forget_loras(self, keep: list[LoraRef]) -> None:
        """Free every loaded LoRA not in `keep`: a long-lived worker plans each request with only that request's
        LoRAs (residency.fit_request), so the adapters of earlier requests must not pile up on the GPU. A batch
        keeps all of its jobs' LoRAs (its plan counts them all) and never calls this."""
        wanted = {lo.key for lo in self.applied_loras(keep)}
        gone = [key for key in self.loaded_loras if key not in wanted]
        if gone:
            self.pipe.delete_adapters([self.loaded_loras.pop(key) for key in gone])
        stale = [key for key in self._fp8_adapters if key not in wanted]
        if stale:
            self._set_fp8_loras([])  # no hook may hold a forgotten adapter
            for key in stale:
                del self._fp8_adapters[key]
        if gone or stale:
            from ..memory.retry import free

            free()

    def use_connector_loras(self, loras: list[LoraRef]) -> None:
        """Before the text connectors encode a prompt: on them exactly the LoRAs of `loras` that adapt them (the
        transformer's LoRAs are set again before each denoise)."""
        self.set_loras(self.connector_loras(loras))

    def connector_loras(self, loras: list[LoraRef]) -> list[LoraRef]:
        """The LoRAs of `loras` that set_loras applies and that adapt the text connectors."""
        return [lo for lo in self.applied_loras(loras) if self._connector_fingerprint(lo)]

    def connector_lora_key(self, loras: list[LoraRef]) -> str:
        """What the LoRAs of `loras` change in an encoded prompt, for its cache key: "" when none adapts the text
        connectors, else each such file's fingerprint and strength."""
        return ",".join(f"{self._connector_fingerprint(lo)}x{float(lo.strength)}" for lo in self.connector_loras(loras))

    def _connector_fingerprint(self, lora: LoraRef) -> str:
        """The fingerprint of the LoRA's file if it adapts a text connector, else "" (from its header, once)."""
        file = lora_file(self.path, lora, self.version)
        if file not in self._connector_prints:
            from ...weights.fingerprint import fingerprint
            from ...weights.header import read_header
            from ...weights.layout import lora_modules

            adapts = any(m.startswith("connectors.") for m in lora_modules(read_header(file).tensors).values())
            self._connector_prints[file] = fingerprint([file]) if adapts else ""
        return self._connector_prints[file]

    @property
    def _lora_roots(self) -> dict[str, Any]:
        """The components LoRAs adapt, by the prefix of layout.lora_module's names."""
        return {"transformer": self.pipe.transformer, "connectors": self.pipe.connectors}

    def _load_peft_lora(self, file: Path) -> str:
        """Load a LoRA file with peft under a new adapter name; a ModelError if any of its layers found no module
        (then nothing of it stays loaded)."""
        from safetensors.torch import load_file

        from ...weights.layout import lora_to_diffusers
        from .lora_hooks import find_module, lora_targets, refuse_unmatched

        def adapted(module: str) -> bool:
            return name in getattr(find_module(self._lora_roots, module), "lora_A", {})

        name = f"lora{self._adapters_made}"
        self._adapters_made += 1
        try:
            tensors = load_file(str(file))
            modules = list(lora_targets(file, tensors).values())
            self._refuse_absent(file, modules)
            with warnings.catch_warnings():  # peft warns on every adapter after the first: expected here
                warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                self.pipe.load_lora_weights(lora_to_diffusers(tensors), adapter_name=name)
            refuse_unmatched(file, modules, adapted)  # a layer peft passed over
        except Exception as e:
            if name in {a for names in self.pipe.get_list_adapters().values() for a in names}:
                self.pipe.delete_adapters(name)  # leave the model as it was
            if isinstance(e, ModelError):
                raise
            raise ModelError(f"cannot load LoRA {file}: {e.__class__.__name__}: {e}") from e  # broken or mismatched
        return name

    def _refuse_absent(self, file: Path, modules: Iterable[str]) -> None:
        """A ModelError naming a module of `modules` (layout.lora_module's names) that the model lacks."""
        from .lora_hooks import find_module, refuse_unmatched

        refuse_unmatched(file, modules, lambda m: find_module(self._lora_roots, m) is not None)

    def fp8_lora_tensors(self) -> Iterator[tuple[str, list[Any], bool]]:
        """(the module it adapts, its A and B, whether its hook is on) for each layer of every FP8 LoRA adapter read
        (they stay, for later jobs, wherever placement.settle_loras puts them)."""
        for key, adapter in self._fp8_adapters.items():
            for module, (down, up, _) in adapter.items():
                yield module, [down, up], key in self._fp8_active

    def _set_fp8_loras(self, active: list[LoraRef]) -> None:
        """peft cannot wrap FP8 layers: the adapters go on as forward hooks (lora_hooks). A file is read into
        host memory and its adapters then go where the components they adapt are (placement.settle_loras): one
        read while the transformer waits off the GPU (the prompt phase) costs it no GPU memory."""
        from ..memory.placement import HOST, settle_loras
        from .lora_hooks import attach, read_adapter

        for handle in self._lora_hooks:
            handle.remove()
        self._lora_hooks, self._fp8_active = [], frozenset()
        adapters = []
        for lora in active:
            if lora.key not in self._fp8_adapters:
                file = lora_file(self.path, lora, self.version)
                try:
                    adapter = read_adapter(file, self.dtype, HOST)
                except ModelError:
                    raise
                except Exception as e:  # a broken or mismatched file: say which
                    raise ModelError(f"cannot load LoRA {file}: {e.__class__.__name__}: {e}") from e
                self._refuse_absent(file, adapter)
                self._fp8_adapters[lora.key] = adapter
            adapters.append((self._fp8_adapters[lora.key], float(lora.strength)))
        self._lora_hooks = attach(self._lora_roots, adapters)
        self._fp8_active = frozenset(lora.key for lora in active)
        settle_loras(self)
