"""A prompt timeline (`prompt: [{at, text}, ...]`): the window plan puts a boundary at each prompt change, every
window renders with the encoding of the entry in force over its frames, validate and the sidecar name each
window's prompt, bad timelines are one-line errors before anything renders, and a plain prompt's job keeps its
spec hash (tiny model, 64x96 at 24 fps, the fast preset's 8 steps, as tests/test_windows.py)."""

from __future__ import annotations

import itertools
import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import write_manifest
from media import write_image
from servers import Routes, serve
from test_render_cli import check_mp4

from ltx2cli.engine import loader
from ltx2cli.engine import render as render_module
from ltx2cli.engine.inputs import prepare_inputs
from ltx2cli.engine.render import Renderer
from ltx2cli.errors import EXIT_INVALID
from ltx2cli.jobs.spec import RenderSpec
from ltx2cli.jobs.windows import plan_windows, window_frames
from ltx2cli.plan.resolve import plan_manifests

FPS, SIZE, OVERLAP = 24, (64, 96), 25  # the fast preset's overlap: 3 latent frames = 25 pixel frames
REPO = Path(__file__).resolve().parents[1]
CLIP = {"image": "face.png", "fps": FPS, "resolution": "64x96", "preset": "fast", "seed": 5}


def _manifest(folder: Path, jobs: list[dict], name: str = "jobs.yaml") -> Path:
    write_image(folder / "face.png", SIZE)
    return write_manifest(folder / name, [CLIP | job for job in jobs])


def _added(w: dict) -> range:
    """The frames a window adds (those after the overlap it holds from the window before)."""
    return range(w["start"] + w["overlap"], w["start"] + w["frames"])


# -- a 30-s story in three prompts ---------------------------------------------------------------------------------


def test_a_30_s_story_renders_each_window_with_the_prompt_in_force(cli, tmp_path, monkeypatch):
    """Prompts at 0, 10 and 20 s: a window boundary at each (on the 8-frame grid), each window lies within one entry
    and denoises with exactly that entry's stored encoding, each distinct text is encoded once, validate --json,
    its table, the sidecar and progress name each window's prompt; the MP4 has exactly 30 s of frames and sound."""
    take = uuid.uuid4().hex  # texts new to the session's prompt store: this batch encodes them
    texts = [f"A woman on a beach at dawn, {take}.", f"She walks into a forest, {take}.",
             f"She reaches a city at night, {take}. " + "Neon signs glow in the rain. " * 200]  # fmt: skip
    story = {
        "id": "story",
        "duration": 30,
        "prompt": [{"at": t, "text": x} for t, x in zip((0, 10, 20), texts, strict=True)],
    }
    manifest = _manifest(tmp_path, [story])

    checked = cli("validate", manifest, "--json")
    assert checked.code == 0, checked.err
    planned = checked.json_lines()[0]
    windows = planned["windows"]
    assert planned["window"]["count"] == len(windows) == 5 and planned["output_frames"] == 30 * FPS
    for t in (10, 20):  # a boundary within 4 frames of each change: one window ends there, the next holds its tail
        ends = [(a, b) for a, b in itertools.pairwise(windows) if abs(a["start"] + a["frames"] - t * FPS) <= 4]
        assert len(ends) == 1 and ends[0][1]["start"] == ends[0][0]["start"] + ends[0][0]["frames"] - OVERLAP, ends
    expected = []
    for w in windows:  # the one entry in force over the frames it adds (away from the 4-frame grid rounding)
        in_force = {max(i for i, t in enumerate((0, 10, 20)) if t * FPS <= f) for f in _added(w)
                    if all(abs(f - t * FPS) > 4 for t in (10, 20))}  # fmt: skip
        assert len(in_force) == 1, (w, in_force)
        expected.append(texts[in_force.pop()])
    assert [w["prompt"] for w in windows] == expected and expected[0] == texts[0] and expected[-1] == texts[2]
    table = cli("validate", manifest)
    assert table.code == 0 and "Prompt timeline" in table.out and "5/5" in table.out and texts[1][:20] in table.out

    denoised: list[torch.Tensor] = []  # the text embeddings each window's denoiser was given
    real_denoiser, real_load, renderers = render_module.GuidedDenoiser, loader.load_renderer, []

    def recording(models, prompt, scales, fps):
        denoised.append(prompt.video.detach().cpu().clone())
        return real_denoiser(models, prompt, scales, fps)

    def load(*args, **kwargs):
        renderers.append(real_load(*args, **kwargs))
        return renderers[-1]

    monkeypatch.setattr(render_module, "GuidedDenoiser", recording)
    monkeypatch.setattr(loader, "load_renderer", load)
    r = cli("batch", manifest, "-o", "out", "--model", "tiny")
    assert r.code == 0, r.err
    renderer = renderers[0]
    assert "prompts: 3 encoded" in r.err and renderer.encoded == 3  # 5 windows, 3 distinct texts, each once
    stored = {text: renderer.store.get(text, None).video for text in texts}  # as the batch stored them
    assert not any(torch.equal(stored[a], stored[b]) for a, b in itertools.pairwise(texts))
    assert len(denoised) == 5 and all(
        torch.equal(got, stored[text]) for got, text in zip(denoised, expected, strict=True)
    )

    check_mp4(tmp_path / "out" / "story.mp4", *SIZE, frames=30 * FPS, fps=FPS)  # exact frames; sound as long
    sidecar = json.loads((tmp_path / "out" / "story.json").read_text())
    assert [{k: w[k] for k in ("start", "frames", "overlap", "prompt")} for w in sidecar["windows"]] == [
        {k: w[k] for k in ("start", "frames", "overlap", "prompt")} for w in windows
    ]
    assert [e["text"] for e in sidecar["spec"]["prompt_timeline"]] == texts
    shown = [line for line in r.err.splitlines() if line.startswith("story: window ")]
    assert shown[1] == f"story: window 2/5: {texts[1]}" and all(len(line) <= len("story: ") + 80 for line in shown)
    assert shown[3].startswith(f"story: window 4/5: {texts[2][:40]}") and shown[3].endswith("...")
    assert any(line.startswith("warning: story: prompt[2] is ") and "reads the first 1024" in line
               for line in r.err.splitlines())  # fmt: skip


# -- parity and the spec hash ------------------------------------------------------------------------------------


def test_a_one_entry_timeline_is_the_plain_prompt_bit_for_bit(tmp_path, tiny_models):
    """One entry at 0 is the plain prompt: the same spec (hash included) and the same frames and sound."""
    jobs = [{"id": "plain", "duration": 0.5, "prompt": "A cat on a wall."},
            {"id": "timeline", "duration": 0.5, "prompt": [{"at": "0%", "text": "A cat on a wall."}]}]  # fmt: skip
    specs, problems = plan_manifests([_manifest(tmp_path, jobs)], output_dir=tmp_path / "out")
    assert not problems, problems
    plain, timeline = (spec.model_copy(update={"loras": []}) for spec in specs)
    assert timeline.prompt_timeline is None and timeline.spec_hash() == plain.spec_hash()
    renderer = Renderer(tiny_models, max_sequence_length=64)
    a, b = (renderer.render(spec, prepare_inputs(spec)) for spec in (plain, timeline))
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio) and a.frames.shape[0] == 12


# Spec hashes of plain-prompt jobs as the code before prompt timelines (commit 412f25c) planned them: the quickstart
# manifest's four modes and three more (a clip of 3 windows, CFG with a negative prompt, the default prompt), with
# the folder they were planned in written as /x. Finished outputs carry these in their journal and sidecar.
HASHES_BEFORE = {
    "talk": "cc927153add1241e",
    "hum": "48634eb2508954ce",
    "talk-smile": "674cf0b5568f8520",
    "turn": "53e1e6fe37307e45",
    "long": "9237f25ea3767a1f",
    "guided": "9fcad017c969110e",
    "plain": "04e72b3632b4b35e",
}
MORE_JOBS = [
    {"id": "long", "image": "media/portrait.png", "duration": 25, "prompt": "A long walk on the beach."},
    {"id": "guided", "image": "media/portrait.png", "duration": 1, "prompt": "p", "negative_prompt": "n",
     "preset": "quality"},
    {"id": "plain", "image": "media/portrait.png", "duration": 0.5},
]  # fmt: skip


def test_plain_prompt_jobs_keep_their_spec_hash(tmp_path):
    """So a batch rerun after the upgrade skips every output it had finished, windowed clips included."""
    jobs = tmp_path / "jobs"
    shutil.copytree(REPO / "examples" / "jobs", jobs)
    more = jobs / "more.yaml"
    more.write_text(yaml.safe_dump({"defaults": {"resolution": "192x256"}, "jobs": MORE_JOBS}, sort_keys=False))
    specs, problems = plan_manifests([jobs / "quickstart.yaml", more], output_dir=tmp_path / "out")
    assert not problems, problems
    hashes = {}
    for spec in specs:
        assert spec.prompt_timeline is None and spec.negative_prompt_timeline is None
        moved = json.loads(json.dumps(spec.model_dump(mode="json")).replace(str(tmp_path), "/x"))
        hashes[spec.id] = RenderSpec.model_validate(moved).spec_hash()
    assert hashes == HASHES_BEFORE


# -- the window plan ---------------------------------------------------------------------------------------------


def test_the_window_plan_ends_a_window_at_each_prompt_change():
    size = window_frames(10.0, FPS)
    assert plan_windows(721, FPS, 10.0, 3, []) == plan_windows(721, FPS, 10.0, 3)  # no change: today's plan
    for cuts, bounds in (
        ([240, 480], [241, 481]),
        ([100], [97]),
        ([37, 300, 301, 600], [33, 297, 601]),
        ([700], [697]),
    ):  # 301 shares 300's boundary; 37 is the earliest that leaves window 1 room for the overlap
        windows = plan_windows(721, FPS, 10.0, 3, cuts)
        assert windows[0].start == 0 and windows[-1].start + windows[-1].frames == 721
        assert all(w.frames % 8 == 1 and w.frames <= size and w.start % 8 == 0 for w in windows)
        for a, b in itertools.pairwise(windows):
            assert b.start == a.start + a.frames - OVERLAP and b.overlap == OVERLAP
        ends = [w.start + w.frames for w in windows[:-1]]
        assert set(bounds) <= set(ends) and all(min(abs(c - e) for e in ends) <= 4 for c in cuts), (cuts, ends)
    short = plan_windows(97, FPS, 10.0, 3, [48])  # a 4-s clip whose prompt changes renders in two windows
    assert [(w.start, w.frames) for w in short] == [(0, 49), (24, 73)]
    assert plan_windows(97, FPS, 10.0, 3, [12]) == plan_windows(97, FPS, 10.0, 3)  # no room before the overlap


def test_a_change_without_a_boundary_is_said_and_rendered_with_the_middle_entry(cli, tmp_path):
    jobs = [{"id": "early", "duration": 4, "prompt": [{"at": 0, "text": "a"}, {"at": 0.5, "text": "b"}]},
            {"id": "close", "duration": 30, "prompt": [{"at": 0, "text": "a"}, {"at": 10, "text": "b"},
                                                       {"at": 10.1, "text": "c"}]}]  # fmt: skip
    r = cli("validate", _manifest(tmp_path, jobs), "--json")
    assert r.code == 0, r.err
    early, close = r.json_lines()
    assert early["window"] is None and [w["prompt"] for w in early["windows"]] == ["b"]  # frame 48 of 0-95: b
    assert "job 'early': window 1 (frames 0-95) adds frames of prompt[0], prompt[1]: no window boundary" in r.err
    assert [w["prompt"] for w in close["windows"]] == ["a", "c", "c", "c"]
    assert "job 'close': prompt[1] (at 10 s) is used by no window" in r.err


def test_the_negative_prompt_changes_windows_only_where_cfg_uses_it(cli, tmp_path):
    """quality guides with CFG, so its negative prompt's change at 8 s ends a window; fast never encodes the
    negative prompt, so the same timeline leaves its plan as a plain clip's."""
    negative = [{"at": 0, "text": "blurry"}, {"at": 8, "text": "dark"}]
    jobs = [{"id": f"{preset}-{kind}", "duration": 20, "preset": preset, "negative_prompt": given}
            for preset in ("quality", "fast") for kind, given in (("timeline", negative), ("plain", "blurry"))]  # fmt: skip
    r = cli("validate", _manifest(tmp_path, jobs), "--json")
    assert r.code == 0, r.err
    got = {line["id"]: line["windows"] for line in r.json_lines()}
    ends = [w["start"] + w["frames"] for w in got["quality-timeline"][:-1]]
    assert 193 in ends and 193 not in [w["start"] + w["frames"] for w in got["quality-plain"][:-1]]  # 8 s: frame 192
    assert got["quality-timeline"][0]["negative_prompt"] == "blurry"
    assert {w["negative_prompt"] for w in got["quality-timeline"][1:]} == {"dark"}
    strip = [{k: v for k, v in w.items() if k != "negative_prompt"} for w in got["fast-timeline"]]
    assert strip == got["fast-plain"]


# -- bad timelines -----------------------------------------------------------------------------------------------

BAD = [
    ([{"at": 0, "text": "a"}, {"at": 31, "text": "b"}], "prompt[1].at: 31 s is past the end of the 30-s clip"),
    ([{"at": 0, "text": "a"}, {"at": "100%", "text": "b"}], 'prompt[1].at: must be seconds from the clip\'s start or'),
    ([{"at": 0, "text": "a"}, {"at": 20, "text": "b"}, {"at": 10, "text": "c"}],
     "prompt[2].at: 10 s is not after prompt[1] (20 s): times must increase"),
    ([{"at": 0, "text": "a"}, {"at": 10, "text": ""}], "prompt[1].text: must not be empty"),
    ([{"at": 0, "text": "a"}, {"at": 10, "text": " "}], "prompt[1].text: must not be empty or only spaces"),
    ([{"at": 2, "text": "a"}], "prompt[0].at: the first entry must be at 0 (the clip's start), got 2 s"),
    ([{"at": 0, "text": "a"}, {"at": 10, "text": "b"}, {"at": 10.01, "text": "c"}],
     "prompt[2].at: 10.01 s falls on frame 240, as prompt[1] (10 s) does"),
    ([{"at": 0, "text": "a"}, {"at": "soon", "text": "b"}], "prompt[1].at: must be seconds"),
    ([{"at": 0, "txt": "a"}], "prompt[0].txt: unknown field; did you mean 'text'?"),
    ([], "prompt: needs at least 1 item(s), got 0"),
]  # fmt: skip


@pytest.mark.parametrize("prompt, words", BAD, ids=[b[1].split(":")[0] + ":" + b[1].split(":")[1][:24] for b in BAD])
def test_a_bad_timeline_is_a_one_line_error_and_nothing_renders(cli, tmp_path, prompt, words):
    r = cli("batch", _manifest(tmp_path, [{"id": "bad", "duration": 30, "prompt": prompt}]), "-o", "out",
            "--model", "tiny")  # fmt: skip
    assert r.code == EXIT_INVALID, r.err
    errors = [line for line in r.err.splitlines() if line.startswith("error: jobs.yaml:")]
    assert errors and all("job 'bad': prompt" in e for e in errors) and any(words in e for e in errors), r.err
    assert not (tmp_path / "out").exists() and "loaded" not in r.err and "Traceback" not in r.err


def test_the_cli_prompt_option_takes_one_text(cli, tmp_path):
    """--prompt is one text: a timeline written there is refused (a manifest takes it), words in brackets are not."""
    write_image(tmp_path / "face.png", SIZE)
    for option, value in (("--prompt", '[{"at": 0, "text": "a"}, {"at": 1, "text": "b"}]'),
                          ("--negative-prompt", "[{at: 0, text: blurry}]")):  # fmt: skip
        r = cli("audiogen", "face.png", option, value, "-d", "2", "-r", "64x96", "--model", "tiny", "-o", "x.mp4")
        assert r.code == EXIT_INVALID and len(r.err.strip().splitlines()) == 1, r.err
        assert r.err.startswith(f"error: {option} takes one text, got a list") and "manifest" in r.err
    assert not (tmp_path / "x.mp4").exists()
    from ltx2cli.commands.render import ClipOptions

    assert ClipOptions(prompt="[slow motion] a cat").job("face.png")["prompt"] == "[slow motion] a cat"


# -- the RunPod worker ---------------------------------------------------------------------------------------------


def test_the_worker_takes_a_timeline_in_prompt(gcs, tmp_path):
    """A request's `prompt` (or the original `prompt_positive`) may be the same list; a bad one is one E_INPUT line
    naming the entry as the client wrote it."""
    from ltx2cli.jobs.presets import load_presets
    from ltx2cli.storage.fetch import InputCache
    from ltx2cli.worker import handler as rp
    from ltx2cli.worker.config import Config

    face = write_image(tmp_path / "face.png", SIZE).read_bytes()

    class Media(Routes):
        routes = {"/face.png": lambda h: h.send_body(face, "image/png")}
        hits: dict = {}

    env = {"LTX2_GCS_BUCKET": "ltx2-test", "LTX2_ALLOW_PRIVATE_URLS": "1", "LTX2_MAX_DURATION": "30"}
    worker = rp.Worker(Config.from_env(env), renderer=None, presets=load_presets()[0])
    timeline = [{"at": 0, "text": "a beach"}, {"at": "50%", "text": "a forest"}]
    with serve(Media) as media:
        request = {"image_url": f"{media}/face.png", "duration": 30, "fps": FPS, "prompt": timeline}
        spec, error = worker.plan({"id": "tl", "input": request}, InputCache(tmp_path / "in", worker.config.policy))
        assert error == "" and [e.frame for e in spec.prompt_timeline] == [0, 15 * FPS] and spec.window.count == 4
        bad = {"image_url": f"{media}/face.png", "duration": 30, "prompt_positive": timeline[::-1]}
        got = worker.handle({"id": "bad", "input": bad})
    first = "prompt_positive[0].at the first entry must be at 0 (the clip's start), got 50%"
    order = "prompt_positive[1].at 0 s is not after prompt_positive[0] (50%): times must increase"
    assert got == {"error": f"E_INPUT: {first}; {order}"}, got
