"""Shards: which share of a manifest this process renders, and the partition every shard agrees on.

The index and count come from `--shard I/N` (counting from 1) or, with `--shard auto`, from the engine that started
the task (its own variables, counting from 0). The partition balances estimated cost (jobs.cost), not job count,
and is a pure function of the manifests: every shard computes it alone and all agree, whatever order the
manifests list their jobs in.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import UsageError
from ..jobs.cost import render_cost
from ..jobs.spec import RenderSpec, SpecPreview
from ..storage.sources import is_remote

Shard = tuple[int, int]  # (I, N): shard I of N, counting from 1


@dataclass(frozen=True)
class Engine:
    name: str
    index: str  # the variable holding this task's index, from 0
    count: str  # the variable holding the number of tasks


ENGINES = (
    # Kubernetes sets no count: the Job's `completions` is given to the pods as LTX2_SHARD_COUNT.
    Engine("Kubernetes Indexed Job", "JOB_COMPLETION_INDEX", "LTX2_SHARD_COUNT"),
    Engine("Google Cloud Batch", "BATCH_TASK_INDEX", "BATCH_TASK_COUNT"),
    Engine("AWS Batch array job", "AWS_BATCH_JOB_ARRAY_INDEX", "AWS_BATCH_JOB_ARRAY_SIZE"),
    Engine("Slurm job array", "SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT"),
)


def parse_shard(text: str, env: Mapping[str, str] | None = None) -> Shard:
    """'I/N' (from 1) -> (I, N); 'auto' -> the engine's index and count in `env`."""
    if text.strip().lower() == "auto":
        return engine_shard(env if env is not None else {})
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise UsageError(
            f"--shard {text!r}: use I/N, e.g. 1/4 (shard I of N, counting from 1), or auto (from the batch engine)"
        ) from None
    if not 1 <= i <= n:
        raise UsageError(f"--shard {text!r}: I must be between 1 and N")
    return i, n


def engine_shard(env: Mapping[str, str]) -> Shard:
    """This task's (I, N) from the variables of the engine that started it (Kubernetes, Google Cloud Batch, AWS
    Batch, Slurm), whose indexes count from 0."""
    found = [e for e in ENGINES if e.index in env]
    if not found:
        names = ", ".join(e.index for e in ENGINES)
        raise UsageError(f"--shard auto: no batch engine's task index in the environment (looked for {names})")
    if len(found) > 1:
        names = " and ".join(f"{e.index} ({e.name})" for e in found)
        raise UsageError(f"--shard auto: {names} are both set: say which shard this is with --shard I/N")
    engine = found[0]
    if engine.index == "SLURM_ARRAY_TASK_ID":
        return _slurm(env)
    if engine.count not in env:
        how = " (set it to the Job's completions)" if engine.count == "LTX2_SHARD_COUNT" else ""
        raise UsageError(f"--shard auto: {engine.index} is set but {engine.count} is not{how}")
    return _shard(engine, _int(env, engine.index), _int(env, engine.count))


def _slurm(env: Mapping[str, str]) -> Shard:
    """Slurm's index is the array's own (--array=3-7 runs 3..7): from 0 only for a dense array with step 1."""
    engine = ENGINES[-1]
    missing = [v for v in ("SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX", engine.count) if v not in env]
    if missing:
        raise UsageError(f"--shard auto: SLURM_ARRAY_TASK_ID is set but not {' or '.join(missing)}")
    low, high, count = (_int(env, v) for v in ("SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX", engine.count))
    step = _int(env, "SLURM_ARRAY_TASK_STEP") if "SLURM_ARRAY_TASK_STEP" in env else 1
    if step != 1:
        raise UsageError(
            f"--shard auto: a Slurm array with step {step} (SLURM_ARRAY_TASK_STEP) leaves gaps between task ids: "
            "submit --array=0-N with step 1, or pass --shard I/N"
        )
    if high - low + 1 != count:
        raise UsageError(
            f"--shard auto: the Slurm array runs {count} tasks (SLURM_ARRAY_TASK_COUNT) between ids {low} and {high}: "
            "a sparse array has no index from 0; submit --array=0-N, or pass --shard I/N"
        )
    return _shard(engine, _int(env, engine.index) - low, count)


def _int(env: Mapping[str, str], name: str) -> int:
    try:
        return int(env[name])
    except ValueError:
        raise UsageError(f"--shard auto: {name}={env[name]!r} is not a whole number") from None


def _shard(engine: Engine, index: int, count: int) -> Shard:
    if count < 1 or not 0 <= index < count:
        raise UsageError(
            f"--shard auto: task index {index} ({engine.index}) of {count} tasks ({engine.count}) is out of range "
            f"(0 to {count - 1})"
        )
    return index + 1, count


def shard_text(shard: Shard) -> str:
    """'I/N', as --shard takes it."""
    return f"{shard[0]}/{shard[1]}"


def shard_tag(shard: Shard) -> str:
    """'shard-I-of-N': in the names of the files each shard writes for itself into a shared output folder."""
    return f"shard-{shard[0]}-of-{shard[1]}"


def per_shard(path: Path, shard: Shard | None) -> Path:
    """`path` with the shard's tag before its suffix (index.html -> index.shard-2-of-4.html); unsharded, or the
    only shard of 1 (the whole batch: the same journal as without --shard), itself."""
    if shard is None or shard[1] == 1:
        return path
    return path.with_name(f"{path.stem}.{shard_tag(shard)}{path.suffix}")


# -- the partition ------------------------------------------------------------------------------------------------


def partition(costs: Mapping[str, int], n: int) -> list[list[str]]:
    """Job ids of each of n shards, longest processing time first: by cost (largest first, then id), each job to
    the least-loaded shard (ties: the lowest index). Integer costs keep the loads exact on every machine."""
    shards: list[list[str]] = [[] for _ in range(n)]
    loads = [(0, i) for i in range(n)]  # a heap of (load, shard index)
    for job, cost in sorted(costs.items(), key=lambda kv: (-kv[1], kv[0])):
        load, i = heapq.heappop(loads)
        shards[i].append(job)
        heapq.heappush(loads, (load + cost, i))
    return shards


def job_costs(view: list[SpecPreview]) -> dict[str, int]:
    """Each job's estimated cost (jobs.cost.render_cost). A job whose length or size is not known (a preview: it
    depends on a remote input) weighs the median of the others (1 when none is known): a guess, but the same guess
    on every shard."""
    known = {s.id: render_cost(s) for s in view if isinstance(s, RenderSpec)}
    guess = statistics.median_low(known.values()) if known else 1
    return {s.id: known.get(s.id, guess) for s in view}


def cost_view(specs: list[SpecPreview], unfetched: Callable[[], list[SpecPreview]] | None) -> list[SpecPreview]:
    """The specs the partition weighs: as planned WITHOUT fetching any remote input (`unfetched`, the planner run
    with no cache). What a remote input decides (a lip-sync's length from gs:// audio, an `auto` size from a URL
    image) is known on a shard whose fetch worked and not on one whose fetch failed; weighing it would let two
    shards disagree on the partition, rendering some jobs twice and others never. Without remote inputs the two
    plans are the same and `specs` is used as it is."""
    if unfetched is None or not any(_remote_inputs(s) for s in specs):
        return specs
    ids = {s.id for s in specs}
    return [s for s in unfetched() if s.id in ids]


def _remote_inputs(spec: SpecPreview) -> bool:
    return any(is_remote(x) for x in [spec.audio or "", *(k.image for k in spec.keyframes)])


@dataclass(frozen=True)
class Share:
    """One shard's part of the partition."""

    shard: Shard
    ids: list[str]  # its jobs, in manifest order
    cost: int  # their estimated cost
    total: int  # every shard's together

    @property
    def fraction(self) -> float:
        return self.cost / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, object]:
        return {"shard": shard_text(self.shard), "jobs": len(self.ids), "cost": self.cost,
                "total_cost": self.total, "cost_share": round(self.fraction, 4)}  # fmt: skip


def share(specs: list[SpecPreview], shard: Shard, unfetched: Callable[[], list[SpecPreview]] | None = None) -> Share:
    """Shard `shard`'s jobs of `specs` (see cost_view for `unfetched`)."""
    costs = job_costs(cost_view(specs, unfetched))
    mine = set(partition(costs, shard[1])[shard[0] - 1])
    ids = [s.id for s in specs if s.id in mine]
    return Share(shard, ids, sum(costs[i] for i in ids), sum(costs.values()))
