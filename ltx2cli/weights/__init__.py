"""Weights on disk, whatever their layout: finding what --model names (source) and a job's LoRA files (lora_files),
reading headers, telling the release (versions), the Lightricks single-file layout and its configs, building
components from configs (components) and loading them (single_file, text_encoder, upscaler), FP8 layers (fp8),
and whether a job's LoRAs and upsampler fit the weights (fit). Hands modules and facts to the engine; imports
nothing from it."""
