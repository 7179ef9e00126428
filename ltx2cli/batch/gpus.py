"""`ltx2 batch --gpus`: one shard process per GPU of this machine, each seeing only its own device.

Each process is an ordinary sharded `ltx2 batch --json` (its own journal, resume, contact sheet); the parent streams
their progress lines, prefixed with the GPU, and collects their result lines for one merged report. A process
that dies stops nothing else: its jobs stay unfinished, and rerunning the same command finishes them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, UsageError
from ..output import Output
from .results import JobResult, result_from_record
from .shards import Shard, shard_text

# TEST-ONLY: pretend this machine has this many GPUs, so tests can run `--gpus` shard processes on a CPU. Nothing
# but the test suite should set it: the processes it starts render on whatever device they find.
FAKE_GPUS_ENV = "LTX2_FAKE_GPUS"
CUDA_DEVICES_ENV = "CUDA_VISIBLE_DEVICES"


def visible_gpus(env: Mapping[str, str]) -> list[str]:
    """The GPUs this process may use, each as a CUDA_VISIBLE_DEVICES entry, found without initialising CUDA here:
    CUDA_VISIBLE_DEVICES when set (CUDA ignores the entries from the first invalid one on), else `nvidia-smi -L`."""
    if FAKE_GPUS_ENV in env:
        return [str(i) for i in range(int(env[FAKE_GPUS_ENV]))]
    if CUDA_DEVICES_ENV in env:
        entries = [d.strip() for d in env[CUDA_DEVICES_ENV].split(",")]
        visible = []
        for d in entries:
            if not d or d.startswith("-"):
                break
            visible.append(d)
        return visible
    try:
        listed = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):  # no driver, no nvidia-smi: no GPU to use
        return []
    return [str(i) for i, _ in enumerate(line for line in listed.splitlines() if line.startswith("GPU "))]


def pick_gpus(value: str, visible: list[str]) -> list[str]:
    """--gpus all | N (the first N) | a list of device numbers like 0,2 -> the CUDA_VISIBLE_DEVICES entry of each
    shard process."""
    if not visible:
        raise UsageError(
            f"--gpus {value}: no GPU found on this machine (nvidia-smi -L lists none, or {CUDA_DEVICES_ENV} hides "
            "them); without --gpus the batch renders on what there is"
        )
    there = f"this machine has {len(visible)} (0 to {len(visible) - 1})"
    if value.strip().lower() == "all":
        return visible
    if value.strip().isdigit():
        n = int(value)
        if not 1 <= n <= len(visible):
            raise UsageError(f"--gpus {value}: asks for {n} GPU(s); {there}")
        return visible[:n]
    try:
        picked = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        picked = []
    if not picked or len(set(picked)) != len(picked) or not all(0 <= i < len(visible) for i in picked):
        raise UsageError(f"--gpus {value!r}: give all, a count N, or distinct device numbers like 0,2; {there}")
    return [visible[i] for i in picked]


def gpu_shards(devices: list[str], shard: Shard | None) -> list[tuple[str, Shard]]:
    """(device, shard) per process: device k runs shard k of len(devices); under --shard I/N (several machines of
    several GPUs each), machine I's devices run shards (I-1)*G+1 .. I*G of N*G."""
    i, n = shard or (1, 1)
    g = len(devices)
    return [(d, ((i - 1) * g + k + 1, n * g)) for k, d in enumerate(devices)]


@dataclass
class ShardProcess:
    gpu: str
    shard: Shard
    process: subprocess.Popen
    results: list[dict[str, Any]] = field(default_factory=list)  # its --json job lines
    summary: dict[str, Any] | None = None  # its --json summary line

    def job_results(self) -> list[JobResult]:
        """Its job lines read back as results (as `ltx2 report` reads a journal's lines)."""
        results = []
        for line in self.results:
            result = result_from_record({**line, "event": line.get("status")})
            result.local, result.gpu_peak_gib = line.get("local"), line.get("gpu_peak_gib")
            results.append(result)
        return results

    @property
    def label(self) -> str:
        return f"GPU {self.gpu} (shard {shard_text(self.shard)})"

    def trouble(self, interrupted: bool) -> str | None:
        """How the process ended when it did not finish its share normally (exit 0 or 1, or 130 when stopped
        with Ctrl-C), else None."""
        code = self.process.returncode
        if interrupted and code in (EXIT_INTERRUPTED, -signal.SIGINT, -signal.SIGTERM):
            return None  # stopped as asked: the interrupted run's summary says so
        if code < 0:
            return f"died ({signal.Signals(-code).name})"
        if code not in (EXIT_OK, EXIT_FAILED) or self.summary is None:
            return f"stopped with exit code {code}" + ("" if self.summary else " before its summary")
        return None


def run_shard_processes(
    commands: list[tuple[str, Shard, list[str]]], out: Output, env: Mapping[str, str]
) -> tuple[list[ShardProcess], bool]:
    """Start each (device, shard, command) with only that device visible; stream their progress to stderr, each
    line prefixed with the GPU, and their job lines to stdout (--json); wait for all. Ctrl-C (SIGINT) and SIGTERM
    are passed on to every process (each in its own process group, so a terminal's Ctrl-C reaches them once, from
    here). -> the processes, and whether this one was interrupted."""
    lock = threading.Lock()
    procs: list[ShardProcess] = []
    readers: list[threading.Thread] = []
    for device, shard, command in commands:
        child_env = {**env, CUDA_DEVICES_ENV: device, "PYTHONUNBUFFERED": "1"}
        popen = subprocess.Popen(
            command, env=child_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, process_group=0
        )
        proc = ShardProcess(device, shard, popen)
        procs.append(proc)
        readers += [
            threading.Thread(target=_read_results, args=(proc, out, lock), daemon=True),
            threading.Thread(target=_read_progress, args=(proc, out, lock), daemon=True),
        ]
    for reader in readers:
        reader.start()
    interrupted = False

    def forward(signum: int, frame: Any) -> None:
        nonlocal interrupted
        interrupted = True
        for proc in procs:
            if proc.process.poll() is None:
                proc.process.send_signal(signum)

    on_main = threading.current_thread() is threading.main_thread()  # elsewhere no signal can be handled
    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)} if on_main else {}
    try:
        for proc in procs:
            proc.process.wait()
        for reader in readers:
            reader.join()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return procs, interrupted


def _read_results(proc: ShardProcess, out: Output, lock: threading.Lock) -> None:
    assert proc.process.stdout is not None
    for line in proc.process.stdout:
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):  # not a result line: show it with the progress
            _show(proc, line, out, lock)
            continue
        if record.get("summary"):
            proc.summary = record
        else:
            proc.results.append(record)
            with lock:
                out.result(record)


def _read_progress(proc: ShardProcess, out: Output, lock: threading.Lock) -> None:
    assert proc.process.stderr is not None
    for line in proc.process.stderr:
        _show(proc, line, out, lock)


def _show(proc: ShardProcess, line: str, out: Output, lock: threading.Lock) -> None:
    text = line.rstrip("\n")
    if not text:
        return
    with lock:
        if text.startswith("error:"):
            out.stderr.print(f"[gpu {proc.gpu}] {text}", style="red", markup=False)
        else:
            out.log(f"[gpu {proc.gpu}] {text}")


def shard_command(args: list[str], shard: Shard) -> list[str]:
    """The `ltx2` command line (`args`: everything after `ltx2`, without --gpus / --shard / --json) that runs one
    shard of it as a process of this Python."""
    return [sys.executable, "-m", "ltx2cli", *args, "--shard", shard_text(shard), "--json"]
