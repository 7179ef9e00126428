"""A job's input media, resolved: where each input is (a remote one fetched when there is a cache), the audio's
length, the keyframes' exact frames and strengths, and the render size (from the first keyframe's image)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..errors import MediaError
from ..jobs.job import Keyframe
from ..jobs.presets import Preset
from ..jobs.spec import KeyframePreview
from ..jobs.timeline import default_positions, keyframe_frame
from ..media import probe
from ..storage import sources
from .context import Resolver, Unavailable

MAX_KEYFRAMES = 9


def source(r: Resolver, path: tuple, value: str, kind: str | None = None) -> tuple[str, Path | None]:
    """(value for the spec, local file to probe or None). A remote value of a `kind` is fetched when
    there is a cache; the spec keeps the URL, and the renderer's cache.get(url) finds the same file."""
    try:
        canonical, local = sources.resolve(value, r.raw.base_dir)
    except ValueError as e:
        r.fail(path, str(e))
        return value, None
    if local is None and kind is not None and r.ctx.cache is not None:
        got = r.ctx.fetch(canonical, kind)
        if isinstance(got, Unavailable):
            r.fail(path, got.message, got.code)
        else:
            local = got
    r.inputs.append(local)
    return canonical, local


def audio_duration(r: Resolver, local: Path, code: str | None) -> float | None:
    """The audio's length; a problem if unreadable or too long (with `code`: a remote file's, the job fails alone)."""
    try:
        seconds = probe.audio_duration(local, max_duration=r.job.max_duration)
    except MediaError as e:
        r.fail(("audio",), str(e), code)
        return None
    if seconds > r.job.max_duration:
        r.fail(
            ("audio",),
            f"audio is {seconds:.2f} s long, over max_duration ({r.job.max_duration:g} s); "
            "trim it or raise max_duration",
            code,
        )
        return None
    return seconds


def keyframes(r: Resolver, output_frames: int | None) -> tuple[list[KeyframePreview], tuple[int, int] | None]:
    """Keyframes with exact frames, sorted; plus the display size of the earliest one's image."""
    job = r.job
    items: list[tuple[tuple, Keyframe]] = []
    if job.image is not None:
        items.append((("image",), Keyframe(image=job.image, position="first", strength=job.img_strength)))
    items += [(("keyframes", i), kf) for i, kf in enumerate(job.keyframes or [])]
    if not items:
        r.fail(("image",), "missing: give image (or keyframes: 1-9 images)")
        return [], None
    if len(items) > MAX_KEYFRAMES:
        r.fail(("keyframes",), f"at most {MAX_KEYFRAMES} keyframes in all (image counts as one), got {len(items)}")
        return [], None

    spread = default_positions(len(items))
    specs: list[tuple[tuple, KeyframePreview, tuple[int, int] | None]] = []
    for (path, kf), default in zip(items, spread, strict=False):
        image_field = path if path == ("image",) else (*path, "image")
        image, local = source(r, image_field, kf.image, "image")
        size = None
        if local is not None:
            try:
                size = probe.image_size(local)
            except MediaError as e:
                r.fail(image_field, str(e), "E_INPUT" if sources.is_remote(image) else None)
        position = kf.position if kf.position is not None else default
        frame = keyframe_frame(position, output_frames) if output_frames is not None else None
        at_start = frame == 0 if frame is not None else position in ("first", 0.0)
        at_end = frame == output_frames - 1 if frame is not None else position in ("last", 1.0)
        strength = kf.strength
        if strength is None:
            strength = job.img_strength if at_start else 1.0 if at_end else 0.8
        specs.append((path, KeyframePreview(image=image, position=position, frame=frame, strength=strength), size))

    if output_frames is not None and len(specs) > output_frames:  # some must share a frame: say it once
        message = f"a {output_frames}-frame clip holds at most {output_frames} keyframes; got {len(specs)}"
        r.fail(("keyframes",), message + (" (image counts as one)" if job.image is not None else ""))
    else:
        _one_per_frame(r, [(path, spec) for path, spec, _ in specs])
    specs.sort(key=lambda s: s[1].frame if s[1].frame is not None else _order(s[1].position))
    first_size = specs[0][2] if specs else None
    return [s for _, s, _ in specs], first_size


def _one_per_frame(r: Resolver, specs: list[tuple[tuple, KeyframePreview]]) -> None:
    seen: dict[Any, tuple] = {}
    for path, spec in specs:
        slot = spec.frame if spec.frame is not None else _order(spec.position)
        if slot in seen:
            other = r.raw.field_name(seen[slot])
            where = f"frame {slot}" if spec.frame is not None else f"position {slot}"
            r.fail(path, f"lands on the same {where} as {other}; two keyframes cannot share a frame")
        seen[slot] = path


def _order(position: str | float) -> float:
    return {"first": 0.0, "last": 1.0}.get(position, position)  # type: ignore[arg-type]


def render_size(
    r: Resolver, preset: Preset | None, image_size: tuple[int, int] | None
) -> tuple[int | None, int | None]:
    job = r.job
    explicit = job.width is not None or job.height is not None
    if explicit and job.resolution != "auto":
        r.fail(("resolution",), "give resolution or width/height, not both")
        return None, None
    if job.resolution != "auto":
        w, _, h = job.resolution.partition("x")
        width, height = int(w), int(h)
        for name, v in (("width", width), ("height", height)):
            if v % 32 or not 64 <= v <= 4096:
                r.fail(("resolution",), f"{name} {v} must be a multiple of 32 between 64 and 4096")
        return width, height
    if preset is None:
        return None, None
    aspect = image_size[0] / image_size[1] if image_size else None
    if job.width is not None and job.height is not None:
        return job.width, job.height
    if job.width is not None:
        return job.width, _grid(job.width / (aspect or preset.size[0] / preset.size[1]))
    if job.height is not None:
        return _grid(job.height * (aspect or preset.size[0] / preset.size[1])), job.height
    if aspect is None:
        return None, None  # remote image not fetched (no cache): sized when the renderer fetches it
    area = preset.size[0] * preset.size[1]
    return _grid(math.sqrt(area * aspect)), _grid(math.sqrt(area / aspect))


def _grid(v: float) -> int:
    """Nearest multiple of 32 within 64..4096."""
    return min(4096, max(64, round(v / 32) * 32))
