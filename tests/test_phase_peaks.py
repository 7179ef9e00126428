"""GPU memory per render phase (engine.memory.peaks): each placement closes the phase that ran and opens the next,
a phase placed twice keeps its larger peak, and a render reports its phases and its overall peak. A CPU has no
such counters: torch.cuda's are played here by a scripted allocator (the device run records the real ones)."""

from __future__ import annotations

import torch
from conftest import tiny_job_spec

from ltx2cli.engine.inputs import prepare_inputs
from ltx2cli.engine.memory import peaks as peaks_module
from ltx2cli.engine.memory.peaks import GIB, PhasePeaks
from ltx2cli.engine.render import Renderer


class ScriptedAllocator:
    """torch.cuda's peak counters: each reset starts a new interval whose peaks are (n GiB, n + 0.5 GiB), n the
    interval's number, unless `script` names them."""

    def __init__(self, script: dict[int, float] | None = None):
        self.interval, self.script = 0, script or {}

    def reset(self, device=None) -> None:
        self.interval += 1

    def allocated(self, device=None) -> int:
        return int(self.script.get(self.interval, self.interval) * GIB)

    def reserved(self, device=None) -> int:
        return self.allocated() + GIB // 2


def _scripted(monkeypatch, allocator: ScriptedAllocator) -> None:
    monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", allocator.reset)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", allocator.allocated)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", allocator.reserved)


def test_each_phase_keeps_its_largest_peak(monkeypatch):
    _scripted(monkeypatch, ScriptedAllocator({1: 3.0, 2: 10.0, 3: 4.0, 4: 2.0}))
    peaks = PhasePeaks(torch.device("cuda"))
    for phase in ("prompt", "denoise", "decode", "denoise"):  # denoise twice (a second stage): 10 stays
        peaks.enter(phase)
    assert peaks.finish() == {
        "prompt": {"allocated_gib": 3.0, "reserved_gib": 3.5},
        "denoise": {"allocated_gib": 10.0, "reserved_gib": 10.5},
        "decode": {"allocated_gib": 4.0, "reserved_gib": 4.5},
    }


def test_a_render_reports_every_phase_and_its_peak(monkeypatch, tiny_models, tmp_path):
    allocator = ScriptedAllocator()
    _scripted(monkeypatch, allocator)
    real_start = PhasePeaks.start.__func__

    def start(cls, models, phase):  # as on a GPU: the tiny models render on the CPU
        real_start(cls, models, phase)
        models.peaks = cls(torch.device("cuda"))
        models.peaks.enter(phase)

    monkeypatch.setattr(PhasePeaks, "start", classmethod(start))
    spec = tiny_job_spec(tmp_path, steps=2)
    out = Renderer(tiny_models, max_sequence_length=64).render(spec, prepare_inputs(spec))
    assert list(out.gpu_phases) == ["prompt", "condition", "denoise", "decode"]
    allocated = [p["allocated_gib"] for p in out.gpu_phases.values()]
    assert allocated == sorted(allocated) and out.gpu_peak_gib == max(allocated)  # scripted: later intervals higher
    assert all(p["reserved_gib"] == p["allocated_gib"] + 0.5 for p in out.gpu_phases.values())
    assert tiny_models.peaks is None  # nothing left recording after the render
    assert peaks_module.finish_peaks(tiny_models) == ({}, None)
