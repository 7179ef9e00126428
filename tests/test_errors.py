"""The one error table (errors.ERRORS): every code's exit status and the shape of its CLI line and its RunPod
`error` string, each code once, from the exception that carries it to what the user sees."""

from __future__ import annotations

import pytest
import torch
from conftest import write_manifest

from ltx2cli.batch.endpoint import EndpointError
from ltx2cli.errors import ERRORS, Failure, Ltx2Error, MediaError, ModelError, UsageError, failure
from ltx2cli.jobs.presets import load_presets
from ltx2cli.storage.fetch import StorageError
from ltx2cli.worker import handler as rp
from ltx2cli.worker.config import Config

IO_LINE = "No space left on device: /out/a.mp4 (check the output path, its permissions and free disk space)"
OOM_LINE = "out of GPU memory; try a smaller resolution or duration, or the fast preset"
# code: (the exception, the CLI's exit status, its stderr line, the worker's error)
CASES = {
    "E_USAGE": (
        UsageError("--shard 5/4: I must be between 1 and N"),
        2,
        "--shard 5/4: I must be between 1 and N",
        None,
    ),
    "E_INPUT": (MediaError("face.png: not an image"), 2, "face.png: not an image", None),
    "E_STORAGE": (StorageError("gs://b/x.png: not found"), 1, "gs://b/x.png: not found", None),
    "E_MODEL": (ModelError("model not found: /m"), 1, "model not found: /m", None),
    "E_OOM": (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), 1, OOM_LINE, None),
    "E_IO": (OSError(28, "No space left on device", "/out/a.mp4"), 1, IO_LINE, None),
    "E_ENDPOINT": (EndpointError("job 7 timed out after 4 tries"), 1, "job 7 timed out after 4 tries", None),
    "E_FAILED": (Ltx2Error("it did not work"), 1, "it did not work", None),
    "E_INTERNAL": (
        KeyError("frames"),
        1,
        "unexpected KeyError: 'frames' (run with --debug for the traceback)",
        "E_INTERNAL: unexpected KeyError: 'frames'",  # the CLI's hint is the CLI's: the worker logs its tracebacks
    ),
}


def test_every_code_in_the_table_is_tested():
    assert set(CASES) == set(ERRORS)


@pytest.mark.parametrize("code", CASES)
def test_an_error_that_ends_a_command(code, cli, tmp_path, monkeypatch):
    error, status, line, _ = CASES[code]

    def plan(*args, **kwargs):
        raise error

    monkeypatch.setattr("ltx2cli.commands.validate.plan_manifests", plan)
    r = cli("validate", write_manifest(tmp_path / "jobs.yaml", []))
    assert (r.code, r.err.strip()) == (status, f"error: {line}")
    assert failure(error) == Failure(code, line.removesuffix(" (run with --debug for the traceback)"))


@pytest.mark.parametrize("code", CASES)
def test_an_error_that_ends_a_request(code, monkeypatch):
    error, _, line, api = CASES[code]

    def handle(self, job, progress):
        raise error

    monkeypatch.setattr(rp.Worker, "_handle", handle)
    worker = rp.Worker(Config.from_env({"LTX2_GCS_BUCKET": "ltx2-test"}), renderer=None, presets=load_presets()[0])
    assert worker.handle({"id": "j", "input": {}}) == {"error": api or f"{code}: {line}"}


def test_an_api_error_is_one_line_and_capped():
    text = Failure("E_INPUT", "first\nsecond   third " + "x" * 3000).api()
    assert text.startswith("E_INPUT: first second third x") and "\n" not in text
    assert len(text) == 2000 and text.endswith("…")


def test_a_code_outside_the_table_is_refused():
    with pytest.raises(AssertionError):
        Failure("E_NOPE", "no such code")
