"""The LTX-2 engine: models, conditioning, sampler, render."""
