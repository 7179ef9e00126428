"""The LTX-2 engine: a RenderSpec and loaded models -> frames and sound. Sampling and conditions live here
(sampler, schedule, guidance, conditions, latents, inputs, prompts, render, two_stage, windowed renders and their
checkpoints, loader); the loaded models in engine.models, memory plans in engine.memory. Hands batch a Rendered
clip."""
