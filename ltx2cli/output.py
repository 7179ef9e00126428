"""One output object: results to stdout, everything else to stderr; --json / --quiet pick the mode."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from rich.console import Console

Mode = Literal["human", "json", "quiet"]


class Output:
    def __init__(self, mode: Mode = "human"):
        self.mode = mode
        self.stdout = Console(highlight=False, soft_wrap=True)
        self.stderr = Console(stderr=True, highlight=False, soft_wrap=True)

    @property
    def human(self) -> bool:
        return self.mode == "human"

    def result(self, obj: dict[str, Any]) -> None:
        """One machine-readable result: a JSON line on stdout in --json mode."""
        if self.mode == "json":
            print(json.dumps(obj, ensure_ascii=False), flush=True)

    def table(self, table: Any) -> None:
        if self.human:
            self.stdout.print(table)

    def log(self, message: str) -> None:
        if self.mode != "quiet":
            self.stderr.print(message, markup=False)

    def warning(self, message: str) -> None:
        if self.mode != "quiet":
            self.stderr.print(f"warning: {message}", style="yellow", markup=False)

    def error(self, message: str) -> None:
        self.stderr.print(f"error: {message}", style="red", markup=False)


def output_mode(json_: bool, quiet: bool) -> Mode:
    return "json" if json_ else "quiet" if quiet else "human"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write under a temp name, then rename: a reader never sees half a sidecar."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.part{path.suffix}")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
