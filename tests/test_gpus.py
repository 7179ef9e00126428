"""`ltx2 batch --gpus`: one shard process per GPU, a merged report, a dead GPU's share finished by a rerun. Run on the
CPU with the test-only LTX2_FAKE_GPUS (two shard processes of the tiny model)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
from conftest import write_manifest
from media import write_image

from ltx2cli.batch.gpus import FAKE_GPUS_ENV, gpu_shards, pick_gpus, visible_gpus
from ltx2cli.batch.journal import read_journal
from ltx2cli.errors import UsageError


@pytest.mark.parametrize(
    ("env", "visible"),
    [
        ({"CUDA_VISIBLE_DEVICES": "3,5,7"}, ["3", "5", "7"]),
        ({"CUDA_VISIBLE_DEVICES": "GPU-8f2c,GPU-11aa"}, ["GPU-8f2c", "GPU-11aa"]),
        ({"CUDA_VISIBLE_DEVICES": "0,-1,2"}, ["0"]),  # CUDA stops at the first invalid entry
        ({"CUDA_VISIBLE_DEVICES": ""}, []),
        ({FAKE_GPUS_ENV: "2", "CUDA_VISIBLE_DEVICES": ""}, ["0", "1"]),
    ],
)
def test_the_gpus_this_process_may_use(env, visible):
    assert visible_gpus(env) == visible


def test_gpus_picks_all_a_count_or_devices():
    three = ["3", "5", "7"]
    assert (
        pick_gpus("all", three) == three
        and pick_gpus("2", three) == ["3", "5"]
        and pick_gpus("0,2", three)
        == [
            "3",
            "7",
        ]
    )
    for value, says in [
        ("4", "asks for 4 GPU(s); this machine has 3 (0 to 2)"),
        ("0", "asks for 0 GPU(s)"),
        ("0,0", "distinct device numbers"),
        ("0,3", "distinct device numbers like 0,2; this machine has 3"),
        ("many", "give all, a count N"),
    ]:
        with pytest.raises(UsageError, match="--gpus") as e:
            pick_gpus(value, three)
        assert says in str(e.value)
    with pytest.raises(UsageError, match="no GPU found on this machine"):
        pick_gpus("all", [])
    # machine 2 of 3, two GPUs each: shards 3 and 4 of 6
    assert gpu_shards(["0", "1"], (2, 3)) == [("0", (3, 6)), ("1", (4, 6))]
    assert gpu_shards(["4"], None) == [("4", (1, 1))]


def test_gpus_on_a_machine_without_any_is_a_usage_error(cli, tmp_path, monkeypatch):
    monkeypatch.delenv(FAKE_GPUS_ENV, raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    write_image(tmp_path / "face.png", (64, 96))
    manifest = write_manifest(tmp_path / "jobs.yaml", [{"id": "a", "image": "face.png", "duration": 0.3}])
    r = cli("batch", manifest, "--gpus", "all", "--model", "tiny")
    assert r.code == 2 and "--gpus all: no GPU found on this machine" in r.err, r.err


def _kill_when_started(shard: str, killed: list[int]) -> threading.Thread:
    """Kill -9 this process's child running `--shard <shard>` as soon as it is there."""

    def children() -> dict[int, str]:
        found = {}
        for proc in Path("/proc").iterdir():
            try:
                stat = (proc / "stat").read_text()
                if proc.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == os.getpid():
                    found[int(proc.name)] = (proc / "cmdline").read_bytes().decode().replace("\0", " ")
            except (OSError, ValueError, IndexError):
                continue
        return found

    def run() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not killed:
            for pid, cmdline in children().items():
                if f"--shard {shard} " in cmdline:
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.01)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_two_gpus_render_their_shards_and_a_rerun_finishes_a_dead_one(cli, tmp_path, monkeypatch):
    monkeypatch.setenv(FAKE_GPUS_ENV, "2")  # test-only: two shard processes, on the CPU
    write_image(tmp_path / "face.png", (64, 96))
    jobs = [{"id": f"j{i}", "image": "face.png", "duration": 0.3, "prompt": f"shot {i}"} for i in range(4)]
    manifest = write_manifest(tmp_path / "jobs.yaml", {"defaults": {"resolution": "64x96"}, "jobs": jobs})
    out = tmp_path / "out"

    killed: list[int] = []
    killer = _kill_when_started("2/2", killed)
    first = cli("batch", manifest, "-o", "out", "--gpus", "2", "--model", "tiny", "--json")
    killer.join()
    assert killed and first.code == 1, first.err
    assert "GPU 1 (shard 2/2) died (SIGKILL) with 2 of its 2 jobs unfinished; the other GPUs went on" in first.err
    *lines, summary = first.json_lines()
    assert {j["id"]: j["status"] for j in lines} == {"j0": "done", "j2": "done"}  # equal costs: by id, in turn
    assert summary["jobs"] == 4 and (summary["done"], summary["failed"]) == (2, 0)
    assert summary["gpus"] == [{"gpu": "0", "shard": "1/2", "exit": 0}, {"gpu": "1", "shard": "2/2", "exit": -9}]
    assert "[gpu 0] [1/2] j0: rendering" in first.err  # the processes' progress, each line with its GPU
    sheet = (out / "index.html").read_text()
    assert sheet.count('class="not-run"') == 2 and sheet.count('class="done"') == 2

    rerun = cli("batch", manifest, "-o", "out", "--gpus", "2", "--model", "tiny", "--json")
    assert rerun.code == 0, rerun.err
    *lines, summary = rerun.json_lines()
    assert {j["id"]: j["status"] for j in lines} == {"j0": "skipped", "j1": "done", "j2": "skipped", "j3": "done"}
    assert (summary["jobs"], summary["done"], summary["skipped"], summary["model_loads"]) == (4, 2, 2, 1)
    done = [e["id"] for j in sorted(out.glob("ltx2-journal*.jsonl")) for e in read_journal(j) if e["event"] == "done"]
    assert sorted(done) == ["j0", "j1", "j2", "j3"]  # each rendered once
    assert sorted(p.name for p in out.glob("ltx2-journal*")) == [
        "ltx2-journal.shard-1-of-2.jsonl",
        "ltx2-journal.shard-2-of-2.jsonl",
    ]
    assert sorted(p.stem for p in out.glob("*.mp4")) == ["j0", "j1", "j2", "j3"]
    assert all(json.loads(p.with_suffix(".json").read_text())["spec_hash"] for p in out.glob("*.mp4"))
