"""The README's promise: its test command is exactly what CI runs, and its examples exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _setup_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    return re.findall(r"```bash\n\s*(python3 -m pip install[^\n]+)\n", readme)


def test_ci_runs_the_readme_test_command():
    commands = _setup_commands()
    assert len(commands) == 2
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci_lines


def test_required_layout():
    for path in ("ltx2cli", "ltx2cli/commands", "configs/presets", "examples/jobs", "tests", "Dockerfile",
                 "pyproject.toml"):  # fmt: skip
        assert (ROOT / path).exists(), path
