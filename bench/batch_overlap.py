"""Batch overlap on the tiny model: does a 20-job batch cost only (model load + the renders themselves)?

Inputs are fetched over loopback HTTP and outputs uploaded to gcp-storage-emulator (gs://), so every stage of a
real batch runs. The batch goes through `plan_manifests` + `run_jobs`, exactly as `ltx2 batch` does; the reference
renders the same jobs in the same process with `render_job`, one stage after another (the RunPod handler's path).

    python bench/batch_overlap.py            # 20 jobs
    python bench/batch_overlap.py --jobs 4   # a quick look

Prints the model loads (must be 1), load time, the sum of pure render times (timings["render"]: prompt, denoise,
decode), the wall time of plan + run, and the ratio wall / (load + sum of renders): the target is <= 1.15.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

from ltx2cli import storage
from ltx2cli.engine import models as engine_models
from ltx2cli.output import Output
from ltx2cli.plan import plan_manifests
from ltx2cli.runner import RunOptions, render_job, run_jobs
from ltx2cli.storage import default_input_cache

MEDIA = Path(__file__).resolve().parent.parent / "examples" / "jobs" / "media"
BUCKET = "ltx2-bench"
TARGET = 1.15


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--resolution", default="192x256")
    parser.add_argument(
        "--render-threads",
        type=int,
        default=1,
        help="torch CPU threads for rendering; the other cores stand in for the host CPU beside a GPU (default 1)",
    )
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.render_threads)
    t_import = time.perf_counter()
    import ltx2cli.engine.render  # noqa: F401 - torch, diffusers, transformers: part of loading, timed apart

    t_import = time.perf_counter() - t_import

    with tempfile.TemporaryDirectory(prefix="ltx2-bench-") as tmp, media_server() as media, gcs_emulator():
        work = Path(tmp)
        manifest = write_manifest(work / "jobs.yaml", media, args.jobs, args.resolution)
        loads = count_loads()

        t0 = time.perf_counter()
        cache = default_input_cache(work / "cache")
        specs, problems = plan_manifests([manifest], {}, output_dir=work / "out", cache=cache)
        assert not problems, problems
        t_plan = time.perf_counter() - t0
        run = run_jobs(specs, "tiny", Output("quiet"), RunOptions(staging_dir=work / "out", fetch=cache.get))
        wall = time.perf_counter() - t0
        assert all(r.status == "done" for r in run.results), [r.as_dict() for r in run.results if r.error]
        renders = sum(r.timings["render"] for r in run.results)
        hidden = {k: sum(r.timings.get(k, 0.0) for r in run.results) for k in ("fetch", "mux", "upload")}
        n_loads, load = loads.count, loads.seconds
        ratio = wall / (load + renders)  # imports are timed apart: counting them on both sides would flatter

        # Reference: the same jobs, each fetched, rendered, encoded and uploaded before the next starts.
        from ltx2cli.engine.render import Renderer

        renderer = Renderer(engine_models.load_models("tiny"))  # already loaded: a cache hit
        serial_opts = RunOptions(staging_dir=work / "serial", fetch=cache.get)
        t1 = time.perf_counter()
        serial = [render_job(renderer, spec, serial_opts) for spec in specs]
        serial_wall = time.perf_counter() - t1
        serial_renders = sum(r.timings["render"] for r in serial)

    print(f"jobs                      {len(specs)} ({args.resolution}, tiny model, threads {args.render_threads})")
    print(f"model loads               {n_loads}")
    print(f"imports (torch, diffusers) {t_import:6.2f} s  (before the clock starts)")
    print(f"model load                {load:7.2f} s")
    print(f"plan (fetch + probe)      {t_plan:7.2f} s")
    print(f"sum of pure renders       {renders:7.2f} s")
    for k, v in hidden.items():
        print(f"sum of {k:<18} {v:7.2f} s  (overlapped)")
    print(f"batch wall                {wall:7.2f} s  (plan + run)")
    print(f"ratio wall / (load + renders)            {ratio:.3f}  (target <= {TARGET})")
    serial_ratio = (load + serial_wall) / (load + serial_renders)
    print(f"reference: one stage after another       {serial_ratio:.3f}  (same jobs, same process)")
    ok = n_loads == 1 and ratio <= TARGET
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


class count_loads:
    """Wraps load_models to count and time real loads (the process cache is emptied first)."""

    def __init__(self) -> None:
        self.count, self.seconds = 0, 0.0
        engine_models._cache.clear()
        real = engine_models.load_models

        @functools.wraps(real)
        def timed(*args, **kwargs):
            t = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                self.count += 1
                self.seconds += time.perf_counter() - t

        engine_models.load_models = timed


def write_manifest(path: Path, media: str, n: int, resolution: str) -> Path:
    """n jobs cycling through the four modes, every input a URL, every output gs://."""
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
    jobs = [
        {"id": f"job{i:02d}", **kinds[i % 4], "prompt": f"shot {i}", "output": f"gs://{BUCKET}/bench/job{i:02d}.mp4"}
        for i in range(n)
    ]
    path.write_text(yaml.safe_dump({"defaults": {"preset": "fast", "resolution": resolution}, "jobs": jobs}))
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class media_server:
    """examples/jobs/media over loopback HTTP."""

    def __enter__(self) -> str:
        handler = functools.partial(_QuietHandler, directory=str(MEDIA))
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc) -> None:
        self.server.shutdown()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


class gcs_emulator:
    def __enter__(self) -> None:
        import os

        from gcp_storage_emulator.server import create_server

        port = _free_port()
        self.server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
        self.server.start()
        os.environ["STORAGE_EMULATOR_HOST"] = f"http://127.0.0.1:{port}"
        storage.reset_gcs_client()

    def __exit__(self, *exc) -> None:
        self.server.stop()


if __name__ == "__main__":
    sys.exit(main())
