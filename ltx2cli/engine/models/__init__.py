"""The loaded models: Models (loaded) with its placement and LoRA adapters, building it from any weights layout
(loading), peft LoRA hooks (lora_hooks), the audio-video cross-attention timestep rule (av_timesteps) and
torch.compile (compile). Reads files through weights; moves components with engine.memory."""
