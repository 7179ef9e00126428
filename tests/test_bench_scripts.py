"""The bench/ scripts run (their numbers are read by people, not asserted: timings are not tests)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_batch_overlap_bench_runs_and_loads_the_model_once():
    r = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "batch_overlap.py"), "--jobs", "2", "--resolution", "64x96", "--rounds", "1"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert "model loads in the batch  1" in r.stdout, r.stdout + r.stderr
    assert re.search(r"ratio batch wall / \(load \+ pure renders\), median of 1: \d+\.\d{3}", r.stdout), r.stdout
    assert r.returncode in (0, 1) and r.stdout.rstrip().endswith(("PASS", "FAIL"))
