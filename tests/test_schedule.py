"""ltx2's sigmas for every built-in preset and every release against ltx-core's, computed here by definition.

ltx-core (Lightricks/LTX-2 @ 400fd31): `LTX2Scheduler.execute` (components/schedulers.py) for a dev schedule;
`DISTILLED_SIGMA_VALUES` / `STAGE_2_DISTILLED_SIGMA_VALUES` (ltx_pipelines/utils/constants.py) for distilled ones.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from ltx2cli.engine.schedule import dev_sigmas, fixed_sigmas
from ltx2cli.jobs.presets import load_presets

REFERENCE = Path(__file__).resolve().parent.parent / "configs" / "reference"
RELEASES = ("LTX-2", "LTX-2.3", "LTX-2.5")
DISTILLED = [1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0]
STAGE_2 = [0.909375, 0.725, 0.421875, 0.0]


def _mu(tokens: int) -> float:
    slope = (2.05 - 0.95) / (4096 - 1024)
    return tokens * slope + 0.95 - slope * 1024


def ltx_core_sigmas(steps: int, tokens: int) -> torch.Tensor:
    """LTX2Scheduler.execute(steps, latent with `tokens` = prod(latent.shape[2:])) with its defaults: max_shift
    2.05, base_shift 0.95 at 1024..4096 tokens, stretch to terminal 0.1; in float64."""
    sigmas = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
    mu = _mu(tokens)
    sigmas = torch.where(sigmas != 0, math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1)), 0)
    nonzero = sigmas != 0
    one_minus = 1.0 - sigmas[nonzero]
    sigmas[nonzero] = 1.0 - one_minus / (one_minus[-1] / (1.0 - 0.1))
    return sigmas


def _config(release: str) -> dict:
    return json.loads((REFERENCE / release / "scheduler" / "scheduler_config.json").read_text())


def _stage1_tokens(width: int, height: int, two_stage: bool, latent_frames: int) -> int:
    rows, cols = height // 32, width // 32
    if two_stage:  # engine.two_stage.half_grid: half the latent rows and columns, rounded up
        rows, cols = -(-rows // 2), -(-cols // 2)
    return latent_frames * rows * cols


PRESETS = load_presets()[0].presets


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("name", list(PRESETS))
def test_every_presets_sigmas_are_ltx_cores(name, release):
    preset, config = PRESETS[name], _config(release)
    if preset.sigmas is not None:
        assert fixed_sigmas(config, preset.sigmas).tolist() == torch.tensor(DISTILLED).tolist()
        return
    if preset.two_stage:
        assert fixed_sigmas(config, preset.stage2_sigmas).tolist() == torch.tensor(STAGE_2).tolist()
    # every length a clip or window can have (1 to 20 s at up to 60 fps: up to 151 latent frames), the preset's
    # size and smaller ones
    for width, height in (preset.size, (768, 512), (512, 512), (64, 64)):
        for frames in (1, 2, 16, 31, 61, 151):
            tokens = _stage1_tokens(width, height, preset.two_stage, frames)
            ours, theirs = dev_sigmas(config, preset.num_steps, tokens), ltx_core_sigmas(preset.num_steps, tokens)
            diff = (ours.double() - theirs).abs().max().item()
            # float32 (ltx-core's arithmetic too) rounds 1 - sigma of the last step, ~ (steps - 1) / e^mu, by
            # 6e-8 before the stretch divides by it: up to 1e-3 for a 20-s window at 1280x736
            tol = 1e-6 + 2 * 6e-8 * math.exp(_mu(tokens)) / (preset.num_steps - 1)
            assert diff < tol, f"{release} {name} {width}x{height} {frames} latent frames: {diff:.3g}"
