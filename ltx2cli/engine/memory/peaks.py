"""GPU memory per render phase: torch's allocated and reserved peaks between one placement and the next (prompt,
condition, denoise, decode: the phases engine.memory.estimate predicts one by one), so every render's sidecar can
be held against its plan's estimate (`gpu_phases` beside `memory_plan.phases_gib`). Reserved is what the caching
allocator took from the card: what a memory cap (or a smaller card) must hold. On a CPU nothing is recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

GIB = 2**30


@dataclass
class PhasePeaks:
    device: torch.device
    peaks: dict[str, tuple[int, int]] = field(default_factory=dict)  # phase -> (allocated, reserved) bytes
    phase: str | None = None

    @classmethod
    def start(cls, models: Any, phase: str) -> None:
        """Begin recording a render on `models` (a GPU's; elsewhere models.peaks stays None), in `phase`."""
        models.peaks = cls(torch.device(models.device)) if torch.device(models.device).type == "cuda" else None
        if models.peaks is not None:
            models.peaks.enter(phase)

    def enter(self, phase: str) -> None:
        """The phase that ran until now ends (its peaks kept, the larger where it ran before); `phase` begins."""
        self._close()
        torch.cuda.reset_peak_memory_stats(self.device)
        self.phase = phase

    def finish(self) -> dict[str, dict[str, float]]:
        """{phase: {"allocated_gib", "reserved_gib"}}, the render's phases in the order they first ran."""
        self._close()
        self.phase = None
        return {
            p: {"allocated_gib": round(a / GIB, 2), "reserved_gib": round(r / GIB, 2)}
            for p, (a, r) in self.peaks.items()
        }

    def _close(self) -> None:
        if self.phase is None:
            return
        now = (torch.cuda.max_memory_allocated(self.device), torch.cuda.max_memory_reserved(self.device))
        before = self.peaks.get(self.phase, (0, 0))
        self.peaks[self.phase] = (max(now[0], before[0]), max(now[1], before[1]))


def phase_entered(models: Any, phase: str) -> None:
    """Called by placement.place at each phase boundary, with or without a memory plan."""
    if getattr(models, "peaks", None) is not None:
        models.peaks.enter(phase)


def finish_peaks(models: Any) -> tuple[dict[str, dict[str, float]], float | None]:
    """(per-phase peaks, the render's allocated peak in GiB) of the render that began with PhasePeaks.start;
    ({}, None) on a CPU."""
    peaks, models.peaks = getattr(models, "peaks", None), None
    if peaks is None:
        return {}, None
    phases = peaks.finish()
    return phases, max((p["allocated_gib"] for p in phases.values()), default=None)
