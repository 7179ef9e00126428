"""Batch overlap on the tiny model: does a 20-job batch cost only (model load + the renders themselves)?

Inputs are fetched over loopback HTTP and outputs uploaded to gcp-storage-emulator (gs://), so every stage of a
real batch runs. The batch goes through `plan_manifests` + `run_jobs`, exactly as `ltx2 batch` does; the reference
renders the same jobs in the same process with `render_job`, one stage after another (the RunPod handler's path).

    python bench/batch_overlap.py            # 20 jobs
    python bench/batch_overlap.py --jobs 4   # a quick look

Prints the model loads (must be 1), load time, the sum of pure render times (timings["render"]: prompt, denoise,
decode, measured in the reference run where nothing runs beside them), the batch's wall time (plan + run), and
the ratio wall / (load + sum of pure renders): the target is <= 1.15. Each round runs the batch, then the
reference; the median of the rounds' ratios counts (a shared machine's noise moves single runs by 10-20%).
On a CPU the render gets one thread by default, standing in for the GPU, so the other cores play the host CPU
that encodes and uploads beside it.
"""

from __future__ import annotations

import argparse
import functools
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from ltx2cli.batch.options import RunOptions
from ltx2cli.batch.runner import run_jobs
from ltx2cli.batch.stages import render_job
from ltx2cli.engine.models import loading as model_loading
from ltx2cli.jobs.spec import RenderSpec
from ltx2cli.output import Output
from ltx2cli.plan.resolve import plan_manifests
from ltx2cli.storage import fetch as storage
from ltx2cli.storage.fetch import default_input_cache
from ltx2cli.synthetic.tiny import tiny_model_dir

MEDIA = Path(__file__).resolve().parent.parent / "examples" / "jobs" / "media"
BUCKET = "ltx2-bench"
TARGET = 1.15


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--resolution", default="192x256")
    parser.add_argument("--rounds", type=int, default=3, help="repeat batch + reference; the median ratio counts")
    parser.add_argument(
        "--render-threads",
        type=int,
        default=1,
        help="torch CPU threads for rendering (default 1: the render stands in for a GPU, the other cores for the "
        "host CPU beside it; with every core rendering there is no core left to overlap anything with)",
    )
    args = parser.parse_args()
    import torch

    if args.render_threads:
        torch.set_num_threads(args.render_threads)
    t_import = time.perf_counter()
    import ltx2cli.engine.render  # noqa: F401 - torch, diffusers, transformers: part of loading, timed apart

    t_import = time.perf_counter() - t_import

    rounds: list[Round] = []
    with tempfile.TemporaryDirectory(prefix="ltx2-bench-") as tmp, media_server() as media, gcs_emulator():
        work = Path(tmp)
        manifest = write_manifest(work / "jobs.yaml", media, args.jobs, args.resolution)
        loads = count_loads()
        for n in range(args.rounds):
            rounds.append(one_round(manifest, work / f"round{n}", loads if n == 0 else None))

    first = rounds[0]
    print(f"jobs                      {args.jobs} ({args.resolution}, tiny model, threads {torch.get_num_threads()})")
    print(f"model loads in the batch  {first.loads}")
    print(f"imports (torch, diffusers) {t_import:6.2f} s  (before the clock starts)")
    print(f"model load                {first.load:7.2f} s  (round 1; later rounds find the models loaded)")
    print("round  load+pure renders  renders in batch  fetch  mux    upload  plan  batch wall  ratio  one-by-one")
    for n, r in enumerate(rounds, start=1):
        print(
            f"{n:>5}  {r.load + r.renders:>17.2f}  {r.batch_renders:>16.2f}  {r.hidden['fetch']:>5.2f}  "
            f"{r.hidden['mux']:>5.2f}  {r.hidden['upload']:>6.2f}  {r.plan:>4.2f}  {r.wall:>10.2f}  "
            f"{r.ratio:>5.3f}  {r.serial_ratio:>10.3f}"
        )
    ratio = statistics.median(r.ratio for r in rounds)
    print(f"ratio batch wall / (load + pure renders), median of {len(rounds)}: {ratio:.3f}  (target <= {TARGET})")
    serial = statistics.median(r.serial_ratio for r in rounds)
    print(f"the same jobs one stage after another, median:        {serial:.3f}")
    ok = first.loads == 1 and ratio <= TARGET
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


@dataclass
class Round:
    loads: int
    load: float
    plan: float
    wall: float
    renders: float  # pure: measured in the one-by-one reference, with nothing running beside them
    batch_renders: float
    hidden: dict[str, float]
    serial_wall: float

    @property
    def ratio(self) -> float:  # imports are timed apart: counting them on both sides would flatter
        return self.wall / (self.load + self.renders)

    @property
    def serial_ratio(self) -> float:
        return (self.load + self.serial_wall) / (self.load + self.renders)


def one_round(
    manifest: Path,
    work: Path,
    loads: count_loads | None,
    model: str | None = None,
    adjust: Callable[[RenderSpec], RenderSpec] = lambda spec: spec,
) -> Round:
    """The batch as `ltx2 batch` runs it (plan + run_jobs), then the same jobs through render_job one by one.

    `adjust` edits each planned spec (the GPU session drops LoRAs its random weights do not have)."""
    t0 = time.perf_counter()
    cache = default_input_cache(work.parent / "cache")  # shared by the rounds, as a real cache would be
    specs, problems = plan_manifests([manifest], {}, output_dir=work / "out", cache=cache)
    assert not problems, problems
    specs = [adjust(spec) for spec in specs]
    plan = time.perf_counter() - t0
    model = model or str(tiny_model_dir())
    run = run_jobs(specs, model, Output("quiet"), RunOptions(staging_dir=work / "out", fetch=cache.get))
    wall = time.perf_counter() - t0
    assert all(r.status == "done" for r in run.results), [r.as_dict() for r in run.results if r.error]
    n_loads, load = (loads.count, loads.seconds) if loads else (0, 0.0)  # later rounds find the models loaded
    hidden = {k: sum(r.timings.get(k, 0.0) for r in run.results) for k in ("fetch", "mux", "upload")}

    from ltx2cli.engine.render import Renderer

    renderer = Renderer(model_loading.load_models(model))  # already loaded: a cache hit
    t1 = time.perf_counter()
    serial = [render_job(renderer, spec, RunOptions(staging_dir=work / "serial", fetch=cache.get)) for spec in specs]
    serial_wall = time.perf_counter() - t1
    return Round(
        loads=n_loads,
        load=load,
        plan=plan,
        wall=wall,
        renders=sum(r.timings["render"] for r in serial),
        batch_renders=sum(r.timings["render"] for r in run.results),
        hidden=hidden,
        serial_wall=serial_wall,
    )


class count_loads:
    """Wraps load_models to count and time real loads (the process cache is emptied first)."""

    def __init__(self) -> None:
        self.count, self.seconds = 0, 0.0
        model_loading._cache.clear()
        real = model_loading.load_models

        @functools.wraps(real)
        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                self.count += 1
                self.seconds += time.perf_counter() - t

        model_loading.load_models = timed


def write_manifest(
    path: Path, media: str, n: int, resolution: str, outputs: str | None = f"gs://{BUCKET}/bench"
) -> Path:
    """n jobs cycling through the four modes, inputs under `media` (a URL or a folder), outputs under `outputs`
    (None: the batch's local output folder)."""
    kinds = [
        {"image": f"{media}/portrait.png", "audio": f"{media}/voice.ogg"},
        {"image": f"{media}/portrait.png", "duration": 1.0},
        {
            "keyframes": [{"image": f"{media}/portrait.png"}, {"image": f"{media}/smile.jpg", "position": "last"}],
            "audio": f"{media}/voice.ogg",
        },
        {
            "keyframes": [
                {"image": f"{media}/portrait.png"},
                {"image": f"{media}/smile.jpg", "position": 0.5},
                {"image": f"{media}/turn.webp", "position": "last"},
            ],
            "duration": 1.0,
        },
    ]
    jobs = [{"id": f"job{i:02d}", **kinds[i % 4], "prompt": f"shot {i}"} for i in range(n)]
    if outputs is not None:
        for job in jobs:
            job["output"] = f"{outputs}/{job['id']}.mp4"
    path.write_text(yaml.safe_dump({"defaults": {"preset": "fast", "resolution": resolution}, "jobs": jobs}))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    """A server in its own process on loopback, as the real ones are on other machines (in this process their
    Python would hold the GIL the renderer needs, which no real deployment pays)."""

    def __init__(self, *command: str):
        self.port = _free_port()
        self.command = [c.replace("{port}", str(self.port)) for c in command]

    def __enter__(self) -> str:
        self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return f"http://127.0.0.1:{self.port}"
            time.sleep(0.1)
        raise RuntimeError(f"{self.command[0]} did not start")

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def media_server() -> _Server:
    """examples/jobs/media over loopback HTTP."""
    return _Server(sys.executable, "-m", "http.server", "-b", "127.0.0.1", "-d", str(MEDIA), "{port}")


class gcs_emulator(_Server):
    def __init__(self) -> None:
        emulator = Path(sys.executable).with_name("gcp-storage-emulator")
        super().__init__(
            str(emulator), "start", "-H", "127.0.0.1", "--port", "{port}", "--in-memory", "-q",
            "--default-bucket", BUCKET,
        )  # fmt: skip

    def __enter__(self) -> str:
        url = super().__enter__()
        os.environ["STORAGE_EMULATOR_HOST"] = url
        storage.reset_gcs_client()
        return url


if __name__ == "__main__":
    sys.exit(main())
