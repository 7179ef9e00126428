"""Shards: the task index from each batch engine's variables, the cost-balanced partition every shard agrees on, and
shard processes sharing one gs:// prefix (kill one mid-job, rerun it) on the tiny model and the GCS emulator."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_manifest
from media import write_audio, write_image
from servers import Routes, serve

from ltx2cli.batch.journal import read_journal
from ltx2cli.batch.shards import ENGINES, job_costs, parse_shard, partition, share
from ltx2cli.errors import UsageError
from ltx2cli.jobs.cost import render_cost
from ltx2cli.jobs.spec import RenderSpec
from ltx2cli.plan.resolve import plan_manifests
from ltx2cli.storage.fetch import default_input_cache

ENGINE_VARS = {v for e in ENGINES for v in (e.index, e.count)} | {
    "SLURM_ARRAY_TASK_MIN", "SLURM_ARRAY_TASK_MAX", "SLURM_ARRAY_TASK_STEP", "LTX2_SHARD"
}  # fmt: skip


def kubernetes(i: int, n: int) -> dict[str, str]:
    return {"JOB_COMPLETION_INDEX": str(i), "LTX2_SHARD_COUNT": str(n)}


def cloud_batch(i: int, n: int) -> dict[str, str]:
    return {"BATCH_TASK_INDEX": str(i), "BATCH_TASK_COUNT": str(n)}


def aws_batch(i: int, n: int) -> dict[str, str]:
    return {"AWS_BATCH_JOB_ARRAY_INDEX": str(i), "AWS_BATCH_JOB_ARRAY_SIZE": str(n)}


def slurm(i: int, n: int, first: int = 1) -> dict[str, str]:
    """`sbatch --array=1-n`: the task ids run from `first`."""
    ids = {"SLURM_ARRAY_TASK_ID": i + first, "SLURM_ARRAY_TASK_MIN": first, "SLURM_ARRAY_TASK_MAX": first + n - 1}
    return {k: str(v) for k, v in ids.items()} | {"SLURM_ARRAY_TASK_COUNT": str(n), "SLURM_ARRAY_TASK_STEP": "1"}


@pytest.mark.parametrize("engine", [kubernetes, cloud_batch, aws_batch, slurm])
def test_each_engine_s_index_counts_from_0_and_shards_from_1(engine):
    assert [parse_shard("auto", engine(i, 3)) for i in range(3)] == [(1, 3), (2, 3), (3, 3)]
    assert parse_shard("AUTO", engine(0, 1) | {"HOME": "/root"}) == (1, 1)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({}, "looked for JOB_COMPLETION_INDEX, BATCH_TASK_INDEX, AWS_BATCH_JOB_ARRAY_INDEX, SLURM_ARRAY_TASK_ID"),
        ({"LTX2_SHARD_COUNT": "3"}, "no batch engine's task index"),  # a count alone is no index
        ({"JOB_COMPLETION_INDEX": "1"}, "JOB_COMPLETION_INDEX is set but LTX2_SHARD_COUNT is not"),
        ({"AWS_BATCH_JOB_ARRAY_INDEX": "1"}, "AWS_BATCH_JOB_ARRAY_SIZE is not"),
        (cloud_batch(0, 2) | slurm(0, 2), "BATCH_TASK_INDEX (Google Cloud Batch) and SLURM_ARRAY_TASK_ID"),
        (slurm(2, 5, first=0) | {"SLURM_ARRAY_TASK_STEP": "2"}, "step 2 (SLURM_ARRAY_TASK_STEP)"),
        (  # --array=1,5,9: three tasks between ids 1 and 9
            {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "9"}
            | {"SLURM_ARRAY_TASK_COUNT": "3"},
            "sparse array",
        ),
        ({"SLURM_ARRAY_TASK_ID": "5"}, "not SLURM_ARRAY_TASK_MIN or SLURM_ARRAY_TASK_MAX or SLURM_ARRAY_TASK_COUNT"),
        (cloud_batch(3, 3), "task index 3 (BATCH_TASK_INDEX) of 3 tasks (BATCH_TASK_COUNT) is out of range (0 to 2)"),
        ({"BATCH_TASK_INDEX": "one", "BATCH_TASK_COUNT": "3"}, "BATCH_TASK_INDEX='one' is not a whole number"),
    ],
)
def test_an_environment_without_one_clear_index_is_a_usage_error(env, says):
    with pytest.raises(UsageError, match=r"^--shard auto: ") as e:
        parse_shard("auto", env)
    assert says in str(e.value)


def test_shard_i_of_n_counts_from_1():
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/4", "5/4", "2", "a/b"):
        with pytest.raises(UsageError, match="--shard"):
            parse_shard(bad)


# -- the cost and the partition -------------------------------------------------------------------------------------


def _plan(folder: Path, jobs: list[dict], name: str = "jobs.yaml", cache=None) -> list:
    write_image(folder / "face.png", (64, 96))
    manifest = write_manifest(folder / name, {"defaults": {"resolution": "64x96"}, "jobs": jobs})
    specs, problems = plan_manifests([manifest], output_dir=folder / "out", cache=cache)
    assert not [p for p in problems if not p.world], problems
    return specs


def test_the_cost_is_latent_tokens_x_steps_x_guidance_passes(tmp_path):
    one, steps, guided, quality, long = _plan(
        tmp_path,
        [
            {"id": "one", "image": "face.png", "duration": 0.3},
            {"id": "steps", "image": "face.png", "duration": 0.3, "steps": 16},
            {"id": "guided", "image": "face.png", "duration": 0.3, "steps": 16, "guidance": {"cfg": 3.0}},
            {"id": "quality", "image": "face.png", "duration": 0.3, "preset": "quality"},
            {"id": "long", "image": "face.png", "duration": 25.0},
        ],
    )
    # 9 frames (2 latent frames) of 3x2 latent tokens, 8 audio latents; the fast preset's 8 steps, one pass
    assert render_cost(one) == (2 * 3 * 2 + 8) * 8 * 1
    assert render_cost(steps) == 2 * render_cost(one) and render_cost(guided) == 2 * render_cost(steps)  # + uncond
    # quality: 40 steps x 4 passes (cond, uncond, STG, isolated) at half the grid (2x1), then 3 refine steps at full
    assert render_cost(quality) == (2 * 2 * 1 + 8) * 40 * 4 + (2 * 3 * 2 + 8) * 3
    assert long.window is not None and long.window.count == 3  # windows overlap: more tokens than one pass would be
    assert render_cost(long) > (long.latent_frames * 6 + long.audio_latent_frames) * 8


MIXED = [  # mixed lengths at 64x96 (the cost of each with 8 steps in brackets)
    {"id": "a", "duration": 0.3},  # 160
    {"id": "b", "duration": 0.6},  # 360
    {"id": "c", "duration": 0.3},  # 160
    {"id": "d", "duration": 1.0},  # 464
    {"id": "e", "duration": 0.6},  # 360
    {"id": "f", "duration": 1.3},  # 560
]


def test_every_shard_computes_the_same_balanced_partition_whatever_the_manifest_order(tmp_path):
    jobs = [{"image": "face.png", "prompt": f"shot {i}", **j} for i, j in enumerate(MIXED * 3)]
    for i, job in enumerate(jobs):
        job["id"] = f"{job['id']}{i}"
    specs = _plan(tmp_path, jobs)
    shuffled = _plan(tmp_path, random.Random(7).sample(jobs, len(jobs)), "shuffled.yaml")
    for n in (1, 2, 3, 4, 7):
        shares = [share(specs, (i, n)) for i in range(1, n + 1)]
        assert [s.ids for s in shares] == [sorted(s.ids, key=[j.id for j in specs].index) for s in shares]
        assert [set(s.ids) for s in shares] == [set(share(shuffled, (i, n)).ids) for i in range(1, n + 1)]
        assert sorted(i for s in shares for i in s.ids) == sorted(j["id"] for j in jobs)  # each job once
        costs = [s.cost for s in shares]
        assert sum(costs) == shares[0].total and max(costs) <= 1.5 * min(costs), costs


def test_lpt_gives_each_job_to_the_least_loaded_shard_ties_to_the_lowest():
    assert partition({"d": 464, "a": 160, "f": 560, "b": 360, "e": 360, "c": 160}, 3) == [
        ["f", "c"],
        ["d", "a"],
        ["b", "e"],
    ]
    assert partition({"x": 1, "y": 1, "z": 1}, 2) == [["x", "z"], ["y"]]
    assert partition({}, 2) == [[], []]


@pytest.fixture
def voice_server(tmp_path):
    write_audio(tmp_path / "voice.wav", 2.0)
    Routes.hits, Routes.routes = {}, {"/voice.wav": lambda h: h.send_body((tmp_path / "voice.wav").read_bytes())}
    with serve(Routes) as url:
        yield url


def test_a_shard_that_cannot_fetch_an_input_agrees_with_one_that_can(tmp_path, voice_server):
    """The partition weighs the plan made without fetching: a remote audio's length, known only where the fetch
    worked, would otherwise move jobs between shards that disagree, rendering some twice and others never."""
    talk = {"id": "talk", "image": "face.png", "audio": f"{voice_server}/voice.wav"}
    jobs = [{"image": "face.png", **j} for j in MIXED] + [talk]

    def planned(cache_dir: str) -> list:
        return _plan(tmp_path, jobs, cache=default_input_cache(tmp_path / cache_dir, 200, 5, False, None))

    fetched = planned("cache-a")
    del Routes.routes["/voice.wav"]  # this machine's fetch fails (404)
    failed = planned("cache-b")
    assert isinstance(next(s for s in fetched if s.id == "talk"), RenderSpec)
    assert not isinstance(next(s for s in failed if s.id == "talk"), RenderSpec)
    assert partition(job_costs(fetched), 3) != partition(job_costs(failed), 3)  # what weighing fetched lengths gives

    def unfetched() -> list:
        return _plan(tmp_path, jobs)

    for i in (1, 2, 3):
        assert share(fetched, (i, 3), unfetched).ids == share(failed, (i, 3), unfetched).ids


# -- shard processes into one gs:// prefix ---------------------------------------------------------------------------

TINY = ("--model", "tiny", "--json")
BUCKET = "ltx2-test"


def _shard_env(engine_env: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ENGINE_VARS}
    return env | engine_env | {"PYTHONUNBUFFERED": "1"}


def _start(manifest: Path, out: Path, engine_env: dict[str, str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ltx2cli", "batch", str(manifest), "-o", str(out), "--shard", "auto", *TINY]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_shard_env(engine_env))


def _lines(stdout: str) -> dict[str, str]:
    return {j["id"]: j["status"] for j in map(json.loads, stdout.splitlines()) if "status" in j}


def _wait_for_done(journal: Path, count: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while sum(e["event"] == "done" for e in read_journal(journal)) < count:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1]
        time.sleep(0.02)


def _renders(out: Path) -> dict[str, int]:
    """Job id -> how many times a journal says it was rendered to the end, over every shard's journal."""
    done: dict[str, int] = {}
    for journal in out.glob("ltx2-journal*.jsonl"):
        for e in read_journal(journal):
            if e["event"] == "done":
                done[e["id"]] = done.get(e["id"], 0) + 1
    return done


def test_three_shards_share_one_gs_prefix_and_a_killed_one_finishes_on_rerun(cli, tmp_path, gcs, monkeypatch):
    import av
    from google.cloud import storage

    from ltx2cli.synthetic.tiny import tiny_model_dir

    for var in ENGINE_VARS:
        monkeypatch.delenv(var, raising=False)
    tiny_model_dir()  # built once here, not by three processes racing
    write_image(tmp_path / "face.png", (64, 96))
    defaults = {"resolution": "64x96", "steps": 24, "output": f"gs://{BUCKET}/renders/{{id}}.mp4"}
    jobs = [{"image": "face.png", "prompt": f"shot {j['id']}", **j} for j in MIXED]
    manifest = write_manifest(tmp_path / "jobs.yaml", {"defaults": defaults, "jobs": jobs})

    shares = []  # as `ltx2 validate --shard K/3` plans them
    for k in (1, 2, 3):
        r = cli("validate", manifest, "--shard", f"{k}/3", "--json")
        assert r.code == 0, r.err
        *specs, summary = r.json_lines()
        shares.append(([s["id"] for s in specs], summary["cost"]))
        assert summary["shard"] == f"{k}/3" and summary["jobs"] == len(specs)
    assert [ids for ids, _ in shares] == [["c", "f"], ["a", "d"], ["b", "e"]]  # f, the longest, renders last on 1
    costs = [cost for _, cost in shares]
    assert max(costs) <= 1.5 * min(costs), costs

    out = tmp_path / "out"  # one local folder too: each shard's journal and contact sheet beside the others'
    procs = [_start(manifest, out, cloud_batch(i, 3)) for i in range(3)]
    _wait_for_done(out / "ltx2-journal.shard-1-of-3.jsonl", 1, procs[0])
    procs[0].send_signal(signal.SIGKILL)  # shard 1 has delivered c and is rendering f
    procs[0].wait()
    for k, proc in enumerate(procs[1:], start=1):
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        assert _lines(stdout) == dict.fromkeys(shares[k][0], "done")
    killed = read_journal(out / "ltx2-journal.shard-1-of-3.jsonl")
    assert sorted((e["event"], e["id"]) for e in killed) == [("done", "c"), ("started", "c"), ("started", "f")]

    rerun = _start(manifest, out, cloud_batch(0, 3))
    stdout, stderr = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, stderr
    assert _lines(stdout) == {"c": "skipped", "f": "done"}  # only its unfinished job renders

    assert _renders(out) == dict.fromkeys("abcdef", 1)  # every job rendered exactly once, over all the shards
    assert sorted(p.name for p in out.glob("index*.html")) == [f"index.shard-{k}-of-3.html" for k in (1, 2, 3)]
    assert not [p for p in out.rglob("*") if ".part" in p.name]
    bucket = storage.Client().bucket(BUCKET)
    names = sorted(b.name for b in bucket.list_blobs(prefix="renders/"))
    journals = [f"renders/ltx2-journal.shard-{k}-of-3.jsonl" for k in (1, 2, 3)]  # each shard's, published
    assert names == sorted([f"renders/{j}.{ext}" for j in "abcdef" for ext in ("json", "mp4")] + journals)
    for job in MIXED:
        with av.open(io.BytesIO(bucket.blob(f"renders/{job['id']}.mp4").download_as_bytes())) as video:
            assert sum(1 for _ in video.decode(video=0)) == round(job["duration"] * 30)
    report = cli("report", f"gs://{BUCKET}/renders/", "--json", "--sheet", tmp_path / "sheet")  # one report of all
    assert report.code == 0, report.err
    *jobs, summary = report.json_lines()
    statuses = {j["id"]: j["status"] for j in jobs}  # c: skipped by shard 1's rerun, its newest event
    assert statuses == dict.fromkeys("abcdef", "done") | {"c": "skipped"} and summary["journals"] == 3

    # A Slurm array (ids from 1) and a Kubernetes Indexed Job give each task the same share
    for k, (ids, _) in enumerate(shares):
        for env in (slurm(k, 3), kubernetes(k, 3)):
            with monkeypatch.context() as m:
                for name, value in env.items():
                    m.setenv(name, value)
                r = cli("validate", manifest, "--shard", "auto", "--json")
            assert r.code == 0 and [s["id"] for s in r.json_lines()[:-1]] == ids, r.err
