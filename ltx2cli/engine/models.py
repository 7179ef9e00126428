"""The loaded LTX-2 components as one `Models` object: what the rest of ltx2 renders with. It encodes prompts,
moves Gemma on and off the GPU, and switches LoRAs; engine.model_loading loads it, once per process."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModelError
from ..jobs import LoraRef
from .model_loras import is_distilled_lora, lora_file

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
    identity: str  # model folder name + hash of its configs: recorded with every render
    loaded_loras: dict[str, str] = field(default_factory=dict)  # LoraRef.key -> adapter name
    compiled: bool = False  # transformer blocks compiled in place (engine.compile)
    version: str = "2.0"  # weights.versions: the LTX-2 release these weights are
    distilled: bool = False  # a distilled checkpoint: the distilled LoRA is already in its weights
    plan: Any = None  # engine.residency.Plan this process follows (None: everything stays where it loaded)
    where: dict[str, str] = field(default_factory=dict)  # component -> "gpu" | "host", kept by placement.place
    streamed: Any = None  # engine.streaming.StreamedBlocks: transformer blocks copied in for each forward
    room: Any = None  # engine.residency.Budget of a long-lived process (the worker) planning each request
    _fp8_adapters: dict[str, Any] = field(default_factory=dict)  # LoraRef.key -> adapter (FP8 blocks only)
    _lora_hooks: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        from ..weights.versions import VERSIONS

        if VERSIONS[self.version].bos_prepended:  # once, at load: every encoding of this model starts with BOS
            from ..weights.text_encoder import prepend_bos

            prepend_bos(self.pipe.tokenizer)

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
    def cross_timestep(self) -> bool:
        """LTX-2.3 models modulate a2v/v2a with the other stream's sigma; LTX-2.0 with their own timestep."""
        return not self.pipe.transformer.config.use_prompt_embeddings

    @property
    def perturbed_attn(self) -> bool:
        """STG only changes anything in transformers built with perturbable self-attention (LTX-2.3)."""
        return bool(self.pipe.transformer.config.get("perturbed_attn", False))

    @property
    def keyframe_embedding(self) -> bool:
        """The transformer adds a learned embedding to tokens the sampler marks as single-pixel-frame (LTX-2.5)."""
        return bool(self.pipe.transformer.config.get("use_keyframes_abs_pos_embedding", False))

    @property
    def fp8_blocks(self) -> bool:
        """The transformer blocks' Linears are FP8 (engine.fp8.Fp8Linear): peft cannot wrap them (engine.lora_hooks)."""
        from .fp8 import Fp8Linear

        return any(isinstance(m, Fp8Linear) for m in self.pipe.transformer.transformer_blocks.modules())

    def text_encoder_to_device(self) -> None:
        """Gemma on the GPU to encode prompts: the plan's prompt phase, or (no plan) Gemma back if it was moved."""
        from .placement import place

        if self.plan is not None:
            place(self, "prompt")
        elif self.where.get("text_encoder") == "host":
            self.pipe.text_encoder.to(self.device)
            self.where["text_encoder"] = "gpu"

    @property
    def text_encoder_offloadable(self) -> bool:
        """Gemma sits on a GPU and could move to the CPU to make room."""
        return self.where.get("text_encoder", "gpu") == "gpu" and str(self.device) != "cpu"

    def offload_text_encoder(self) -> None:
        """Move Gemma (the biggest component after the transformer) to CPU once prompts are encoded."""
        if self.text_encoder_offloadable:
            from .placement import HOST, move

            move(self.pipe.text_encoder, HOST)
            self.where["text_encoder"] = "host"
            import torch

            torch.cuda.empty_cache()

    def applied_loras(self, loras: list[LoraRef]) -> list[LoraRef]:
        """The LoRAs of `loras` that set_loras applies: not those at strength 0, nor the distilled LoRA on a
        distilled checkpoint (its weights have it already)."""
        return [lo for lo in loras if lo.strength != 0 and not (self.distilled and is_distilled_lora(lo))]

    def set_loras(self, loras: list[LoraRef]) -> None:
        """Activate exactly these LoRAs at their strengths (each file is read once per process)."""
        active = self.applied_loras(loras)
        if self.fp8_blocks:
            self._set_fp8_loras(active)
            return
        names, weights = [], []
        for lora in active:
            if lora.key not in self.loaded_loras:
                name = f"lora{len(self.loaded_loras)}"
                file = lora_file(self.path, lora, self.version)
                try:
                    with warnings.catch_warnings():  # peft warns on every adapter after the first: expected here
                        warnings.filterwarnings("ignore", message="Already found a `peft_config`")
                        self.pipe.load_lora_weights(str(file), adapter_name=name)
                except Exception as e:  # a broken or mismatched file: say which
                    raise ModelError(f"cannot load LoRA {file}: {e.__class__.__name__}: {e}") from e
                self.loaded_loras[lora.key] = name
            names.append(self.loaded_loras[lora.key])
            weights.append(float(lora.strength))
        if not self.loaded_loras:
            return
        if names:
            self.pipe.enable_lora()
            self.pipe.set_adapters(names, adapter_weights=weights)
        else:
            self.pipe.disable_lora()

    def _set_fp8_loras(self, active: list[LoraRef]) -> None:
        """peft cannot wrap FP8 layers: the adapters go on as forward hooks (engine.lora_hooks)."""
        from .lora_hooks import attach, read_adapter

        for handle in self._lora_hooks:
            handle.remove()
        adapters = []
        for lora in active:
            if lora.key not in self._fp8_adapters:
                file = lora_file(self.path, lora, self.version)
                try:
                    self._fp8_adapters[lora.key] = read_adapter(file, self.dtype, self.device)
                except Exception as e:  # a broken or mismatched file: say which
                    raise ModelError(f"cannot load LoRA {file}: {e.__class__.__name__}: {e}") from e
            adapters.append((self._fp8_adapters[lora.key], float(lora.strength)))
        try:
            self._lora_hooks = attach(self.pipe.transformer, adapters)
        except AttributeError as e:  # a module the transformer does not have
            raise ModelError(f"cannot apply LoRA: {e}") from e
