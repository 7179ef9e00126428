"""docs/scale-out.md's examples work as written: the YAML and JSON parse, every `ltx2` command line in them parses with
ltx2's own options, and each engine's variables (as that engine sets them for the example's tasks) give the shards
1..N of N with `--shard auto`; the Slurm script runs under bash with the array's variables."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
from pathlib import Path

import typer
import yaml

from ltx2cli.batch.shards import parse_shard
from ltx2cli.cli import app

DOC = Path(__file__).resolve().parent.parent / "docs" / "scale-out.md"
README = Path(__file__).resolve().parent.parent / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)


def parses(argv: list[str]) -> None:
    """`ltx2 ARGV` parses: the command exists and takes every option given, each value of its type."""
    assert argv[0] == "ltx2", argv
    command = typer.main.get_command(app)
    sub = command.commands[argv[1]]  # type: ignore[attr-defined]
    sub.make_context(argv[1], list(argv[2:]))


def shell_commands(script: str) -> list[list[str]]:
    """The `ltx2 ...` command lines of a shell block (continuations joined, comments and `srun` dropped)."""
    lines = script.replace("\\\n", " ").splitlines()
    found = []
    for line in lines:
        words = shlex.split(line, comments=True)
        words = words[1:] if words[:1] == ["srun"] else words
        if words[:1] == ["ltx2"]:
            found.append(words)
    return found


def test_every_ltx2_command_line_in_the_doc_parses():
    commands = [c for block in blocks("bash") for c in shell_commands(block)]
    assert {c[1] for c in commands} >= {"batch", "report"} and len(commands) >= 4
    for argv in commands:
        parses(argv)
    assert any("--endpoint" in c and "--stage" in c for c in commands)
    assert any("--gpus" in c for c in commands)


def test_the_kubernetes_indexed_job_gives_every_pod_its_shard():
    (job,) = [doc for block in blocks("yaml") for doc in yaml.safe_load_all(block) if doc.get("kind") == "Job"]
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    (container,) = spec["template"]["spec"]["containers"]
    parses(container["command"])
    assert container["command"][container["command"].index("--shard") + 1] == "auto"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["LTX2_SHARD_COUNT"]) == spec["completions"]
    n = spec["completions"]
    shards = [parse_shard("auto", env | {"JOB_COMPLETION_INDEX": str(i)}) for i in range(n)]
    assert shards == [(i + 1, n) for i in range(n)]


def test_the_cloud_batch_job_gives_every_task_its_shard():
    (job,) = [json.loads(block) for block in blocks("json")]
    (group,) = job["taskGroups"]
    (runnable,) = group["taskSpec"]["runnables"]
    parses(runnable["container"]["commands"])
    n = group["taskCount"]
    assert group["parallelism"] == n
    shards = [parse_shard("auto", {"BATCH_TASK_INDEX": str(i), "BATCH_TASK_COUNT": str(n)}) for i in range(n)]
    assert shards == [(i + 1, n) for i in range(n)]


def test_the_slurm_array_script_runs_each_task_as_its_shard(tmp_path):
    (script,) = [b for b in blocks("bash") if b.startswith("#!/bin/bash") and "#SBATCH --array" in b]
    first, last = (int(v) for v in re.search(r"#SBATCH --array=(\d+)-(\d+)\n", script).groups())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text('#!/bin/sh\nexec "$@"\n')
    record = tmp_path / "argv"
    (bin_dir / "ltx2").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {record}\nenv | grep ^SLURM_ >> {record}\n')
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    (tmp_path / "job.sh").write_text(script)
    n = last - first + 1
    for task in range(first, last + 1):
        env = {"SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": str(first), "SLURM_ARRAY_TASK_MAX": str(last),
               "SLURM_ARRAY_TASK_COUNT": str(n), "SLURM_ARRAY_TASK_STEP": "1"}  # fmt: skip
        subprocess.run(
            ["bash", str(tmp_path / "job.sh")], check=True, env=os.environ | env | {"PATH": f"{bin_dir}:/usr/bin:/bin"}
        )
        lines = record.read_text().splitlines()
        argv = ["ltx2", *[line for line in lines if not line.startswith("SLURM_")]]
        parses(argv)
        seen = dict(line.split("=", 1) for line in lines if line.startswith("SLURM_"))
        assert parse_shard(argv[argv.index("--shard") + 1], seen) == (task - first + 1, n)


def test_the_readme_points_past_one_gpu():
    text = README.read_text(encoding="utf-8")
    assert "## Past one GPU" in text and "docs/scale-out.md" in text
