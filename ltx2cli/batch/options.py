"""RunOptions: how a batch (or the RunPod worker's one request) runs: where files go, resume, the memory plan."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import Failure
from ..storage.sources import Fetch, local_file

if TYPE_CHECKING:
    from .journal import Journal


@dataclass
class RunOptions:
    staging_dir: Path = Path(".")  # where remote outputs are written before upload
    fetch: Fetch = local_file
    debug: bool = False
    journal: Journal | None = None
    force: bool = True  # False: skip jobs the journal (or else the sidecar) lists as finished from the spec (resume)
    # a long clip starts again from its first window, dropping those a stopped run finished (batch --force)
    fresh_windows: bool = False
    # job id -> why its remote inputs could not be had at planning: such a job is a SpecPreview, recorded failed
    unavailable: dict[str, Failure] = field(default_factory=dict)
    fail_fast: bool = False
    thumbs_dir: Path | None = None  # contact-sheet thumbnails are cut from the frames here while they are in memory
    compile: str = "auto"  # engine.models.compile.CompileMode: compile the transformer blocks for this run
    attention: str = "auto"  # engine.models.attention.AttentionChoice: the blocks' attention kernel
    memory: Any = None  # engine.memory.residency.Choice: the memory plan the models follow (None: all stay resident)
