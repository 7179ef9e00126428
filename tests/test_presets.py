import pytest
from conftest import write_manifest

from ltx2cli.jobs.presets import load_presets


def test_builtin_presets_load_cleanly():
    presets, problems = load_presets()
    assert problems == []
    assert list(presets.presets) == ["fast", "balanced", "quality"]
    assert presets.lookup("HIGH").name == "balanced" and presets.lookup("ultra").name == "quality"
    fast = presets.lookup("fast")
    assert fast.sigmas == [1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0]
    assert fast.full_guidance.cfg == 1.0 and fast.num_steps == 8 and not fast.two_stage
    assert presets.lookup("quality").stage2_sigmas == [0.909375, 0.725, 0.421875, 0.0]


def test_presets_command_lists_table_and_json(cli):
    r = cli("presets")
    assert r.code == 0
    for name in ("fast", "balanced", "quality", "high", "ultra", "built-in"):
        assert name in r.out
    r = cli("presets", "--json")
    assert [p["name"] for p in r.json_lines()] == ["fast", "balanced", "quality"]


def test_presets_show_resolves_values(cli):
    r = cli("presets", "show", "high")
    assert r.code == 0
    assert "name: balanced" in r.out and "audio_cfg: 1.0" in r.out and "num_steps: 8" in r.out
    (shown,) = cli("presets", "show", "quality", "--json").json_lines()
    assert shown["guidance"]["cfg"] == 3.0 and shown["steps"] == 40
    r = cli("presets", "show", "warp")
    assert r.code == 2 and "unknown preset 'warp'; valid: fast" in r.err


@pytest.fixture
def user_presets(tmp_path):
    d = tmp_path / "my-presets"
    d.mkdir()
    (d / "draft.yaml").write_text("description: quick look\nsteps: 4\nresolution: 512x512\naliases: [preview]\n")
    (d / "fast.yaml").write_text("description: my fast\nsteps: 6\nresolution: 640x384\n")
    return d


def test_user_presets_add_and_replace(cli, user_presets, media, tmp_path):
    r = cli("presets", "--json", "--presets-dir", user_presets)
    by_name = {p["name"]: p for p in r.json_lines()}
    assert {"draft", "fast", "balanced", "quality"} <= set(by_name)
    assert by_name["fast"]["steps"] == 6 and by_name["fast"]["file"].endswith("my-presets/fast.yaml")
    m = write_manifest(
        tmp_path / "j.jsonl", [{"id": "a", "image": "media/face.png", "duration": 1, "preset": "preview"}]
    )
    (job,) = cli("validate", m, "--json", "--presets-dir", user_presets).json_lines()
    assert (job["preset"], job["steps"], job["sigmas"], job["loras"]) == ("draft", 4, None, [])


def test_presets_dir_from_environment(cli, user_presets, monkeypatch):
    monkeypatch.setenv("LTX2_PRESETS_DIR", str(user_presets))
    assert cli("presets", "show", "draft").code == 0


@pytest.mark.parametrize(
    "text, words",
    [
        ("steps: 4\nsigmas: [1.0, 0.0]\n", "exactly one of steps or sigmas"),
        ("steps: 4\nresolution: 500x500\n", "multiples of 32"),
        ("sigmas: [1.0, 0.5, 0.7, 0.0]\n", "decrease strictly"),
        ("steps: 4\nloras: [{name: ltx-video-lora}]\n", "unknown LoRA"),
        ("steps: 4\nguidance: {cfgg: 2}\n", "guidance.cfgg"),
        ("steps: [oops\n", "not valid YAML"),
        ("steps: 4\ntwo_stage: true\n", "stage2_sigmas"),
        ("sigmas: [.nan, 0.0]\n", "finite"),  # NaN compares false, so the schedule check alone lets it through
        ("steps: 4\nguidance: {cfg: .inf}\n", "finite"),
    ],
)
def test_broken_user_preset_is_reported(cli, tmp_path, text, words):
    d = tmp_path / "bad-presets"
    d.mkdir()
    (d / "broken.yaml").write_text(text)
    r = cli("presets", "--presets-dir", d)
    assert r.code == 2 and "broken.yaml" in r.err and words in r.err, r.err
    assert "Traceback" not in r.err


def test_missing_presets_dir(cli, tmp_path):
    r = cli("presets", "--presets-dir", tmp_path / "nope")
    assert r.code == 2 and "presets directory does not exist" in r.err
