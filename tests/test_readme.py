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


def test_readme_first_command_renders_the_quickstart(cli, tmp_path):
    """Command 1's ltx2 part, run as written (from a copy of the examples, so outputs land in tmp_path)."""
    import shlex
    import shutil

    import av

    ltx2_part = _setup_commands()[0].split("&&", 1)[1].split()
    assert ltx2_part[:2] == ["ltx2", "batch"] and "--model" in ltx2_part
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    result = cli(*shlex.split(" ".join(ltx2_part[1:])))
    assert result.code == 0, result.err
    outputs = sorted((tmp_path / "outputs").glob("*.mp4"))
    assert sorted(p.stem for p in outputs) == ["hum", "talk", "talk-smile", "turn"]
    for mp4 in outputs:
        with av.open(str(mp4)) as container:
            assert container.streams.video and container.streams.audio
            assert sum(1 for _ in container.decode(video=0)) > 0
        assert mp4.with_suffix(".json").is_file()
