"""The RunPod fan-out's own cost: 20 tiny jobs through a loopback endpoint with 4 real workers.

tests/runpod_plane.py stands in for RunPod's control plane; the workers are ltx2's real worker processes under the
runpod SDK's serverless loop (tiny model), inputs staged and outputs written on gcp-storage-emulator. The client is
`ltx2 batch --endpoint`'s own code (plan_manifests + batch.fanout.run_remote), in this process.

    python bench/fanout_overhead.py              # 20 jobs, 4 workers
    python bench/fanout_overhead.py --jobs 8     # a quick look

Per job, the overhead is (the client has the result - the job was submitted) - the worker's execution (taken ->
result posted, as RunPod's executionTime counts it), printed in its two parts: submitted -> taken (the job waits
for a worker's loop to ask for it) and result posted -> recorded (the client's poll, checks and journal line).
Targets: the client's part under 0.5 s (median), and the batch's wall within 1.15x of sum(execution) / workers.
The runpod SDK's worker loop checks for a free slot once a second while its job runs (rp_scale.py, on RunPod too),
so a worker asks for its next job up to 1 s after it posted a result: the first part, which no client can shorten
(a job queued earlier waits for the same loop), and which the wall pays once per job a worker runs; renders much
shorter than that cannot meet the wall target, so the clips here take a few seconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

TESTS = Path(__file__).resolve().parent.parent / "tests"
sys.path.insert(0, str(TESTS))

from media import write_image  # noqa: E402
from runpod_plane import ControlPlane, start_workers  # noqa: E402
from servers import gcs_emulator  # noqa: E402

from ltx2cli.batch import fanout  # noqa: E402
from ltx2cli.batch.endpoint import Endpoint, Target  # noqa: E402
from ltx2cli.batch.options import RunOptions  # noqa: E402
from ltx2cli.output import Output  # noqa: E402
from ltx2cli.plan.resolve import manifest_jobs, plan_manifests  # noqa: E402
from ltx2cli.storage import fetch as storage  # noqa: E402

BUCKET = "ltx2-bench"
KEY = "bench-key"
OVERHEAD_TARGET_S, WALL_TARGET = 0.5, 1.15


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--resolution", default="128x192")
    parser.add_argument("--duration", type=float, default=1.0, help="seconds of each clip")
    parser.add_argument("--poll", type=float, default=fanout.Fanout.poll_s, help="seconds between status polls")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ltx2-fanout-bench-"))
    manifest = _manifest(work, args.jobs, args.resolution, args.duration)
    with gcs_emulator(BUCKET) as gcs:
        os.environ |= {"STORAGE_EMULATOR_HOST": gcs}
        storage.reset_gcs_client()
        env = {"LTX2_MODEL_DIR": "tiny", "LTX2_GCS_BUCKET": BUCKET, "STORAGE_EMULATOR_HOST": gcs}
        with ControlPlane(api_key=KEY) as plane, start_workers(plane, args.workers, env, logs=work / "workers"):
            wall, seen = _run(plane, manifest, work, args)
            jobs = {j["input"]["id"]: j for j in plane.jobs.values()}
    execution = {i: j["finished"] - j["taken"] for i, j in jobs.items()}
    overhead = {i: (seen[i] - jobs[i]["submitted"]) - execution[i] for i in seen}
    dispatch = {i: jobs[i]["taken"] - jobs[i]["submitted"] for i in seen}  # queue + the SDK loop's next take
    after = {i: seen[i] - jobs[i]["finished"] for i in seen}  # the client's poll, download check and record
    ideal = sum(execution.values()) / args.workers
    median, worst = statistics.median(overhead.values()), max(overhead.values())
    print(f"{len(seen)} jobs, {args.workers} workers, poll {args.poll} s")
    print(f"worker execution per job: median {statistics.median(execution.values()):.2f} s")
    print(f"client overhead per job:  median {median:.3f} s, max {worst:.3f} s (target < {OVERHEAD_TARGET_S} s)")
    print(f"  of which submitted -> taken by a worker: median {statistics.median(dispatch.values()):.3f} s, "
          f"result posted -> recorded by the client: median {statistics.median(after.values()):.3f} s")  # fmt: skip
    print(f"wall {wall:.2f} s vs sum(execution)/{args.workers} = {ideal:.2f} s: ratio {wall / ideal:.3f} "
          f"(target <= {WALL_TARGET})")  # fmt: skip
    client = statistics.median(after.values())
    return 0 if client < OVERHEAD_TARGET_S and wall / ideal <= WALL_TARGET else 1


def _manifest(work: Path, n: int, resolution: str, duration: float) -> Path:
    w, h = (int(v) for v in resolution.split("x"))
    write_image(work / "face.png", (w, h))
    jobs = [{"id": f"j{i:02d}", "image": "face.png", "prompt": f"shot {i}", "seed": i,
             "output": f"gs://{BUCKET}/renders/j{i:02d}.mp4"} for i in range(n)]  # fmt: skip
    defaults = {"resolution": resolution, "duration": duration, "preset": "fast"}
    path = work / "jobs.yaml"
    path.write_text(yaml.safe_dump({"defaults": defaults, "jobs": jobs}))
    return path


def _run(plane: ControlPlane, manifest: Path, work: Path, args: argparse.Namespace) -> tuple[float, dict[str, float]]:
    """The batch as `ltx2 batch --endpoint` runs it; -> (wall seconds, job id -> when the client had its result)."""
    seen: dict[str, float] = {}
    recorded = fanout.Recorder.finished

    def finished(self, spec, result):  # the moment the client records each result, on the plane's clock
        seen[spec.id] = time.monotonic()
        return recorded(self, spec, result)

    fanout.Recorder.finished = finished  # type: ignore[method-assign]
    t0 = time.perf_counter()
    specs, problems = plan_manifests([manifest], {}, output_dir=work / "out")
    assert not problems, problems
    endpoint = Endpoint(Target(plane.endpoint_id, plane.url, KEY))
    fan = fanout.Fanout(endpoint, f"gs://{BUCKET}/stage/", concurrency=args.workers, poll_s=args.poll)
    run = fanout.run_remote(specs, manifest_jobs([manifest]), Output("quiet"), RunOptions(staging_dir=work), fan)
    wall = time.perf_counter() - t0
    assert all(r.status == "done" for r in run.results), [r.as_dict() for r in run.results if r.error]
    return wall, seen


if __name__ == "__main__":
    sys.exit(main())
