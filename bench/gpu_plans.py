"""Every memory plan measured on one card (issue 26, items 2 and 3): the studio's volume rendered through `ltx2 batch
--model ROOT --vram N` under a per-process memory cap of N GiB, phase by phase against the estimate.

    python bench/gpu_volume.py --size full --root /tmp/volume --runs warm        # writes the volume (~45 GB)
    python bench/gpu_plans.py --size full --root /tmp/volume --caps full,48,32,24 --recovery --switch
    python bench/gpu_plans.py --size tiny --device cpu --root /tmp/volume --caps 80,24      # the CPU smoke run

For each cap, one child process (bench/capped.py: `torch.cuda.set_per_process_memory_fraction` first, then the
CLI) renders the fast preset's 10-s lip-sync, 5-s audio-gen and 30-s lip-sync (3 windows), with the preset's
distilled and camera LoRAs from the volume. Each job's sidecar holds the plan's estimate per phase
(`memory_plan.phases_gib`) and, on a GPU, the measured peaks (`gpu_phases`: torch's max_memory_allocated and
max_memory_reserved between placements, engine.memory.peaks) with the phases' seconds: the table below puts them
side by side, reserved over estimate per phase.

--recovery: the 10-s lip-sync again under the leanest plan's cap cut to just below its measured denoise reserve,
so the out-of-memory retry really runs: it renders (the sidecar's `memory_fallbacks` says what was given up) or
fails alone as E_OOM. --switch: the RunPod worker's path (residency.start_plan, then fit_request per request) on a
worker sized for 80 GiB: a 768x512 request, then a 1920x1088 one whose plan is leaner; the reserved peak across the
switch says whether both copies of the blocks were ever held. The tiny size runs it all on a CPU (no caps, no
GPU peaks: the plans and estimates only).
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import yaml

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import gpu_volume  # noqa: E402
from gpu_render import IMAGE, PROMPT, write_voice  # noqa: E402

PHASES = ("prompt", "condition", "denoise", "decode")
# The three clips per size: (id, voice seconds or None, audio-gen seconds or None, resolution)
CLIPS = {
    "full": [("lipsync10", 10.0, None, "768x512"), ("audiogen5", None, 5.0, "768x512"),
             ("lipsync30", 30.0, None, "768x512")],
    "tiny": [("lipsync10", 0.3, None, "64x96"), ("audiogen5", None, 0.3, "64x96"), ("lipsync30", 2.0, None, "64x96")],
}  # fmt: skip
TINY_WINDOW_S = 1.0  # the tiny size's long clip is 2 s: 1-s windows (overlap 1) make it three, as 30 s the full one


def write_jobs(work: Path, size: str) -> tuple[Path, Path]:
    """The manifest of the three clips, and a presets folder (the tiny size's fast preset with 1-s windows)."""
    presets = work / "presets"
    presets.mkdir(parents=True, exist_ok=True)
    preset = "fast"
    if size == "tiny":
        from ltx2cli.jobs.presets import builtin_dir

        fast = yaml.safe_load((builtin_dir() / "fast.yaml").read_text())
        windows = {"name": "fastwin", "window_seconds": TINY_WINDOW_S, "window_overlap": 1}
        (presets / "fastwin.yaml").write_text(yaml.safe_dump(fast | windows))
        preset = "fastwin"
    jobs = []
    for job_id, voice, seconds, resolution in CLIPS[size]:
        job = {"id": job_id, "image": str(IMAGE), "prompt": PROMPT, "preset": preset, "seed": 1}
        job["resolution"] = resolution
        if voice is not None:
            job["audio"] = str(write_voice(work / f"{job_id}.wav", voice))
        else:
            job["duration"] = seconds
        jobs.append(job)
    manifest = work / "plans.yaml"
    manifest.write_text(yaml.safe_dump({"jobs": jobs}))
    return manifest, presets


def run_capped(cap: str, argv: list[str], out: Path, device: str) -> dict:
    """bench/capped.py CAP -- ltx2 ARGS in a child with its own cache; its rc, seconds and stderr."""
    env = gpu_volume.child_env(out, device)
    cmd = [sys.executable, str(BENCH / "capped.py"), cap, "--", *argv]
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    child = subprocess.run(cmd, capture_output=True, text=True, env=env)
    (out / "stderr.log").write_text(child.stderr)
    return {"rc": child.returncode, "seconds": time.monotonic() - t0, "command": shlex.join(cmd),
            "stdout": child.stdout, "stderr": child.stderr}  # fmt: skip


def batch_argv(manifest: Path, out: Path, root: Path, presets: Path, vram: str, only: str | None = None) -> list[str]:
    argv = ["batch", str(manifest), "-o", str(out), "--model", str(root), "--vram", vram, "--json", "--force"]
    return argv + ["--presets-dir", str(presets)] + (["--only", only] if only else [])


def jobs_of(out: Path, run: dict) -> dict[str, dict]:
    """Each job's result line and sidecar, by id."""
    results = [json.loads(ln) for ln in run["stdout"].splitlines() if ln.startswith("{")]
    jobs = {}
    for r in results:
        if "id" not in r or "summary" in r:
            continue
        sidecar = out / f"{r['id']}.json"
        jobs[r["id"]] = {"result": r, "sidecar": json.loads(sidecar.read_text()) if sidecar.is_file() else {}}
    return jobs


def rows(cap: str, jobs: dict[str, dict]) -> list[dict]:
    """One row per job and phase: estimate, measured allocated and reserved peaks, seconds."""
    out = []
    for job_id, j in jobs.items():
        side, result = j["sidecar"], j["result"]
        plan = side.get("memory_plan") or {}
        measured = side.get("gpu_phases") or {}
        timings = side.get("timings") or result.get("timings") or {}
        decode = (timings.get("decode_audio") or 0) + (timings.get("decode_video") or 0) or None
        seconds = {"prompt": timings.get("prompt"), "condition": timings.get("conditioning"),
                   "denoise": timings.get("denoise"), "decode": decode}  # fmt: skip
        for phase in PHASES:
            m = measured.get(phase) or {}
            out.append({
                "cap": cap, "job": job_id, "status": result.get("status"), "code": result.get("code"),
                "plan": plan.get("plan"), "phase": phase, "estimate_gib": (plan.get("phases_gib") or {}).get(phase),
                "allocated_gib": m.get("allocated_gib"), "reserved_gib": m.get("reserved_gib"),
                "seconds": seconds[phase], "fallbacks": side.get("memory_fallbacks") or [],
            })  # fmt: skip
    return out


def recovery(rows_: list[dict], manifest: Path, root: Path, presets: Path, work: Path, device: str) -> dict:
    """The leanest capped plan's lip-sync again, capped just below its own measured denoise reserve."""
    capped = [r for r in rows_ if r["cap"] != "full" and r["job"] == "lipsync10" and r["phase"] == "denoise"]
    if not capped:
        return {"skipped": "no capped lip-sync ran"}
    leanest = min(capped, key=lambda r: float(r["cap"]))
    if leanest["reserved_gib"] is None:
        return {"skipped": "no GPU: a cap below the measured peak needs one", "plan": leanest["plan"]}
    cap = f"{leanest['reserved_gib'] - 0.5:.2f}"
    out = work / "recovery"
    run = run_capped(cap, batch_argv(manifest, out, root, presets, leanest["cap"], "lipsync10"), out, device)
    job = jobs_of(out, run).get("lipsync10", {})
    result, side = job.get("result", {}), job.get("sidecar", {})
    return {"cap_gib": float(cap), "vram": leanest["cap"], "plan": leanest["plan"], "status": result.get("status"),
            "code": result.get("code"), "fallbacks": side.get("memory_fallbacks"), "rc": run["rc"],
            "lessons": side.get("memory_lessons")}  # fmt: skip


SWITCH = """
import json, sys, time, torch
from pathlib import Path
from ltx2cli.engine.loader import load_renderer
from ltx2cli.engine.memory import residency
from ltx2cli.jobs.presets import DEFAULT_PRESET, load_presets
from ltx2cli.plan.resolve import plan_manifests
from ltx2cli.weights.source import resolve_model
root, manifest, presets_dir, gib = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), float(sys.argv[4])
presets = load_presets([presets_dir])[0]
room = residency.worker_budget(resolve_model(str(root)), str(gib))  # as the worker sizes itself (_budget)
start = residency.start_plan(room, presets.lookup(DEFAULT_PRESET), 10.0)
renderer = load_renderer(str(root), start, "off", None, print)
renderer.models.room = room
specs, problems = plan_manifests([manifest], presets_dirs=[presets_dir])
assert not problems, problems
cuda = torch.cuda.is_available()
out = {"start_plan": start.plan.label, "requests": []}
for spec in specs:
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    before = renderer.models.plan.label
    choice, why = residency.fit_request(room, renderer.models, spec)
    row = {"id": spec.id, "plan_before": before, "plan": choice.plan.label if choice else None, "refused": why,
           "switch_s": time.perf_counter() - t0}
    if cuda:
        row |= {"switch_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
                "switch_allocated_gib": torch.cuda.max_memory_allocated() / 2**30}
    out["requests"].append(row)
print("SWITCH " + json.dumps(out))
"""


def switch(root: Path, presets: Path, work: Path, device: str, size: str) -> dict:
    """A worker sized for 80 GiB: a 768x512 request, then one whose plan is leaner (the worker's own path)."""
    big = "1920x1088" if size == "full" else "192x288"
    jobs = [{"id": "first", "image": str(IMAGE), "prompt": PROMPT, "preset": "fast", "duration": 1.0},
            {"id": "leaner", "image": str(IMAGE), "prompt": PROMPT, "preset": "fast", "duration": 10.0 if size == "full"
             else 1.0, "resolution": big}]  # fmt: skip
    manifest = work / "switch.yaml"
    manifest.write_text(yaml.safe_dump({"jobs": jobs}))
    out = work / "switch"
    out.mkdir(parents=True, exist_ok=True)
    vram = "80"  # the tiny size plans with full-size Gemma estimates (a ComfyUI file has no config): 80 fits it
    argv = ["-c", SWITCH, str(root), str(manifest), str(presets), vram]
    env = gpu_volume.child_env(out, device)
    run = subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=env)
    (out / "stderr.log").write_text(run.stderr + run.stdout)
    line = next((ln for ln in run.stdout.splitlines() if ln.startswith("SWITCH ")), None)
    return json.loads(line.removeprefix("SWITCH ")) if line else {"failed": run.stderr[-2000:]}


def table(rows_: list[dict]) -> list[str]:
    def f(v: float | None, fmt: str = "6.2f") -> str:
        return "   n/a" if v is None else format(v, fmt)

    lines = ["cap    job        plan                                          phase      estimate  allocated  reserved"
             "  res/est   seconds"]  # fmt: skip
    for r in rows_:
        ratio = r["reserved_gib"] / r["estimate_gib"] if r["reserved_gib"] and r["estimate_gib"] else None
        lines.append(
            f"{r['cap']:<6} {r['job']:<10} {str(r['plan'])[:45]:<45} {r['phase']:<10} {f(r['estimate_gib'])}    "
            f"{f(r['allocated_gib'])}    {f(r['reserved_gib'])}    {f(ratio, '5.2f')}   {f(r['seconds'], '7.2f')}"
            + (f"  {r['status']} {r['code'] or ''}" if r["status"] != "done" else "")
        )
    return lines


def main() -> int:
    parser = gpu_volume.volume_parser(__doc__)
    parser.add_argument("--caps", default="full,48,32,24", help="GiB per run, richest first; full = the whole card")
    parser.add_argument("--recovery", action="store_true", help="also the out-of-memory retry under a tight cap")
    parser.add_argument("--switch", action="store_true", help="also the worker's plan switch between requests")
    args = parser.parse_args()
    root, work = args.root.resolve(), args.root.resolve().parent / (args.root.name + "-plans")
    work.mkdir(parents=True, exist_ok=True)
    if not (root / gpu_volume.CHECKPOINT).is_file():
        gpu_volume.write_volume(root, work, args.size, args.device)
    manifest, presets = write_jobs(work, args.size)
    caps = [c.strip() for c in args.caps.split(",") if c.strip()]
    all_rows, runs = [], {}
    for cap in caps:
        out = work / f"cap-{cap}"
        vram = "auto" if cap == "full" else cap
        run = run_capped(cap, batch_argv(manifest, out, root, presets, vram), out, args.device)
        runs[cap] = {"rc": run["rc"], "seconds": run["seconds"], "command": run["command"]}
        all_rows += rows(cap, jobs_of(out, run))
        if run["rc"] not in (0, 1):
            print(run["stderr"][-4000:], file=sys.stderr)
    extra = {}
    if args.recovery:
        extra["recovery"] = recovery(all_rows, manifest, root, presets, work, args.device)
    if args.switch:
        extra["switch"] = switch(root, presets, work, args.device, args.size)
    device = gpu_volume.torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "CPU"
    lines = [f"device        {device}", f"date          {dt.date.today()}",
             f"versions      torch {gpu_volume.torch.__version__}, python {platform.python_version()}",
             f"command       python bench/gpu_plans.py {shlex.join(sys.argv[1:])}",
             *(f"cap {c:<6}    rc {r['rc']}, {r['seconds']:.1f} s (load + 3 jobs)" for c, r in runs.items()),
             *table(all_rows), *(f"{k:<13} {json.dumps(v)}" for k, v in extra.items())]  # fmt: skip
    block = "```\n" + "\n".join(lines) + "\n```\n"
    print(block, end="")
    (work / "results.json").write_text(json.dumps({"runs": runs, "rows": all_rows, **extra}, indent=1))
    if args.record:
        with open(BENCH / "RESULTS.md", "a") as f:
            f.write(f"\n## Every memory plan measured ({args.size}, {dt.date.today()})\n\n{block}")
    done = all(r["status"] == "done" for r in all_rows)
    return 0 if done and all(r["rc"] == 0 for r in runs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
