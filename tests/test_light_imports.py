"""`ltx2 --help` and `ltx2 validate` must stay fast: no torch, diffusers, runpod or GCS client imported."""

import subprocess
import sys
from pathlib import Path

HEAVY = ("torch", "diffusers", "transformers", "runpod", "google.cloud.storage")
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "jobs"

PROBE = """
import sys
from ltx2cli.cli import main
try:
    main({argv!r})
except SystemExit as e:
    code = e.code
heavy = [m for m in {heavy!r} if m in sys.modules]
print("CODE", code, "HEAVY", heavy, file=sys.stderr)
"""


def _run(argv: list[str]) -> str:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE.format(argv=argv, heavy=HEAVY)], capture_output=True, text=True, timeout=120
    )
    return proc.stderr.strip().splitlines()[-1]


def test_help_imports_nothing_heavy():
    assert _run(["--help"]) == "CODE 0 HEAVY []"


def test_validate_imports_nothing_heavy():
    assert _run(["validate", str(EXAMPLES), "--json"]) == "CODE 0 HEAVY []"


def test_console_script_runs():
    exe = Path(sys.executable).parent / "ltx2"
    proc = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("ltx2 ")
