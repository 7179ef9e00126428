"""LTX-2 with random weights, for `--model tiny`, the tests and bench/: the tiny model saved in the real diffusers
layout (tiny, tiny_configs, tiny25 for LTX-2.3 / 2.5) and full-size random models made on the device
(random_weights, random_models). The commands and the worker swap `tiny` for its folder before the engine sees
it; nothing in the engine or weights imports this package."""
