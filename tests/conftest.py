from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from media import write_audio, write_image

from ltx2cli.cli import main


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json_lines(self) -> list[dict]:
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    """Run `ltx2 ARGS...` in-process from tmp_path; returns exit code, stdout, stderr."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("LTX2_PRESETS_DIR", raising=False)

    def run(*args: str) -> Result:
        def arg(a) -> str:  # paths under the working directory are passed as a user would: relative
            return str(a.relative_to(tmp_path)) if isinstance(a, Path) and a.is_relative_to(tmp_path) else str(a)

        with pytest.raises(SystemExit) as exc:
            main([arg(a) for a in args])
        captured = capsys.readouterr()
        return Result(exc.value.code, captured.out, captured.err)

    return run


@pytest.fixture
def media(tmp_path) -> Path:
    """A folder of small real inputs: images in several formats and audio of known length."""
    d = tmp_path / "media"
    d.mkdir()
    write_image(d / "face.png", (96, 64))
    write_image(d / "tall.jpg", (64, 96))
    write_image(d / "end.webp", (96, 64))
    write_audio(d / "voice.wav", 2.0)  # 2.0 s -> 60 output frames at 30 fps
    write_audio(d / "long.wav", 21.0, rate=8000)
    return d


def tiny_job_spec(folder: Path, **job):
    """The spec of one short fast-preset job on a 64x96 face (folder/a.png), `job` overriding; no LoRAs."""
    from ltx2cli.plan.resolve import plan_manifests

    write_image(folder / "a.png", (64, 96))
    base = {"id": "j", "image": str(folder / "a.png"), "fps": 24, "resolution": "64x96", "preset": "fast", "seed": 4,
            "duration": 8 / 24}  # fmt: skip
    specs, problems = plan_manifests([write_manifest(folder / "jobs.yaml", [base | job])])
    assert not problems, problems
    return specs[0].model_copy(update={"loras": []})


def write_manifest(path: Path, jobs) -> Path:
    """jobs: a list (written as JSONL / JSON / YAML by suffix) or raw text."""
    if isinstance(jobs, str):
        path.write_text(jobs, encoding="utf-8")
    elif path.suffix == ".jsonl":
        path.write_text("\n".join(json.dumps(j) for j in jobs) + "\n", encoding="utf-8")
    elif path.suffix == ".json":
        path.write_text(json.dumps(jobs, indent=2), encoding="utf-8")
    else:
        import yaml

        path.write_text(yaml.safe_dump(jobs, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="session", autouse=True)
def _model_cache(tmp_path_factory):
    """One tiny-model cache for the whole session (kept if LTX2_CACHE_DIR is already set, e.g. by a developer)."""
    import os

    if not os.environ.get("LTX2_CACHE_DIR"):
        os.environ["LTX2_CACHE_DIR"] = str(tmp_path_factory.mktemp("ltx2-cache"))
    yield


@pytest.fixture(scope="session")
def tiny_models(_model_cache):
    """The tiny LTX-2 loaded once for the session: float32 on CPU, like every test render."""
    from ltx2cli.engine.models.loading import load_models
    from ltx2cli.synthetic.tiny import tiny_model_dir

    return load_models(str(tiny_model_dir()), device="cpu")


@pytest.fixture
def gcs(monkeypatch):
    """A Cloud Storage emulator on loopback (bucket ltx2-test) that the storage client talks to; yields its URL."""
    from servers import gcs_emulator

    from ltx2cli.storage import fetch as storage

    with gcs_emulator() as url:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", url)
        monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
        storage.reset_gcs_client()
        yield url
    storage.reset_gcs_client()
