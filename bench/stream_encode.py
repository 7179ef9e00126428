"""Streamed decode -> encode on the CPU (tiny model): end to end (prompt .. finished MP4) over render (prompt .. last
decoded chunk) for one lip-sync clip, today's order vs streamed, in the same process with the same functions.

- today: `Renderer.render` decodes every chunk of the clip, then `write_mp4` encodes the frames and muxes the voice;
- streamed: `Renderer.render(video=VideoWriter)` hands each decoded chunk to the encoder thread, which encodes it
  while the next chunk decodes; `finish` waits for the encoder's tail and muxes the voice.

    python bench/stream_encode.py                              # 10 s, 512x768, 30 fps
    python bench/stream_encode.py --resolution 256x384 --rounds 3

The render gets one torch thread by default, standing in for the GPU; the host's other cores are x264's (as on a
GPU host, where the decode runs on the GPU and x264 on the CPU). Each round renders today's way, then streamed;
the medians are printed. The ratio is end to end / render: 1.0 would be an encode hidden entirely.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import wave
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

MEDIA = Path(__file__).resolve().parent.parent / "examples" / "jobs" / "media"


@dataclass
class Run:
    path: str  # "today" or "streamed"
    render: float  # prompt .. last decoded chunk (Rendered.timings["render"])
    decode_video: float
    end_to_end: float  # prompt .. MP4 renamed into place
    encode_busy: float  # the encoder thread's seconds converting and encoding frames
    tail: float  # end to end - render: what the encode adds after the render

    @property
    def ratio(self) -> float:
        return self.end_to_end / self.render


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resolution", default="512x768", help="WxH (default 512x768)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=1, help="today then streamed, this many times; medians count")
    parser.add_argument("--render-threads", type=int, default=1, help="torch CPU threads for the render (default 1)")
    parser.add_argument("--json", type=Path, help="also write the runs here")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.render_threads)
    from ltx2cli.engine.inputs import prepare_inputs
    from ltx2cli.engine.memory import decode_spans as ds
    from ltx2cli.engine.models.loading import load_models
    from ltx2cli.engine.render import Renderer
    from ltx2cli.synthetic.tiny import tiny_model_dir

    renderer = Renderer(load_models(str(tiny_model_dir()), device="cpu"), max_sequence_length=64)
    runs: list[Run] = []
    with tempfile.TemporaryDirectory(prefix="ltx2-stream-bench-") as tmp:
        work = Path(tmp)
        spec = plan_clip(work, args.resolution, args.seconds, args.fps)
        warm = plan_clip(work, args.resolution, 1.0, args.fps, "warm")
        renderer.render(warm, prepare_inputs(warm))  # the prompt encoded, first-call costs paid: not timed
        chunks = len(ds.decode_spans((spec.num_frames - 1) // 8 + 1))
        print(f"clip      {spec.output_frames} frames {spec.width}x{spec.height} @ {spec.fps:g} fps, lip-sync, "
              f"fast preset, tiny model; {chunks} decode chunks; torch threads {torch.get_num_threads()}")  # fmt: skip
        for n in range(args.rounds):
            for path in ("today", "streamed"):
                runs.append(one_run(renderer, spec, prepare_inputs(spec), work / f"{path}{n}.mp4", path))
                print(row(runs[-1]), flush=True)
    print("medians")
    medians = {}
    for path in ("today", "streamed"):
        mine = [r for r in runs if r.path == path]
        medians[path] = {k: statistics.median(getattr(r, k) for r in mine) for k in ("render", "end_to_end", "ratio")}
        m = medians[path]
        print(f"{path:<9} render {m['render']:7.2f} s  end to end {m['end_to_end']:7.2f} s  ratio {m['ratio']:.3f}")
    gain = medians["today"]["end_to_end"] - medians["streamed"]["end_to_end"]
    print(f"streamed saves {gain:.2f} s end to end ({gain / medians['today']['end_to_end']:.1%})")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) | {"ratio": r.ratio} for r in runs], indent=2) + "\n")
    return 0


def one_run(renderer, spec, inputs, mp4: Path, path: str) -> Run:
    from ltx2cli.media.video import VideoWriter, write_mp4

    t0 = time.perf_counter()
    if path == "today":
        out = renderer.render(spec, inputs)
        t1 = time.perf_counter()
        write_mp4(mp4, out.frames, spec.fps, out.audio, out.sample_rate)
        busy = time.perf_counter() - t1  # write_mp4 waits for its own encoder: all of it is encode
    else:
        video = VideoWriter(mp4, spec.fps, spec.width, spec.height)
        out = renderer.render(spec, inputs, video=video)
        video.finish(out.audio, out.sample_rate)
        busy = video.busy
    end = time.perf_counter() - t0
    render = out.timings["render"]
    return Run(path, render, out.timings["decode_video"], end, busy, end - render)


def row(r: Run) -> str:
    return (
        f"{r.path:<9} render {r.render:7.2f} s (decode {r.decode_video:6.2f})  end to end {r.end_to_end:7.2f} s  "
        f"encoder busy {r.encode_busy:6.2f} s  tail {r.tail:6.2f} s  ratio {r.ratio:.3f}"
    )


def plan_clip(work: Path, resolution: str, seconds: float, fps: int, name: str = "clip"):
    """A lip-sync job on the example portrait with `seconds` of a speech-like voice (its sound is muxed as is)."""
    import yaml

    from ltx2cli.plan.resolve import plan_manifests

    voice = work / f"{name}.wav"
    write_voice(voice, seconds)
    job = {"id": name, "image": str(MEDIA / "portrait.png"), "audio": str(voice), "fps": fps,
           "resolution": resolution, "preset": "fast", "seed": 1, "prompt": "a person talks to the camera"}  # fmt: skip
    manifest = work / f"{name}.yaml"
    manifest.write_text(yaml.safe_dump([job]), encoding="utf-8")
    specs, problems = plan_manifests([manifest], output_dir=work / "out")
    assert not problems, problems
    return specs[0].model_copy(update={"loras": []})


def write_voice(path: Path, seconds: float, rate: int = 44100) -> None:
    """A voiced harmonic series under a syllable envelope, 16-bit mono."""
    t = np.arange(round(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(140 * (1 + 0.08 * np.sin(2 * np.pi * 1.3 * t))) / rate
    voiced = sum(a * np.sin(k * phase) for k, a in ((1, 0.5), (2, 0.3), (3, 0.2)))
    signal = 0.4 * np.abs(np.sin(2 * np.pi * 3.1 * t)) * voiced
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((np.clip(signal, -1, 1) * 32767).astype("<i2").tobytes())


if __name__ == "__main__":
    raise SystemExit(main())
