"""A job's prompt and negative prompt planned: one text, or a timeline (jobs.job.PromptEntry) whose entries are
placed on the clip's frames and checked against it: the first at 0, each after the one before on a frame of its
own, none past the clip's last frame. And which prompt changes get no window boundary (jobs.windows), said as a
warning naming the entry and the window that renders it."""

from __future__ import annotations

from ..jobs.job import PromptEntry
from ..jobs.spec import SpecPreview, TimedPromptPreview, in_force
from ..jobs.timeline import Timeline
from ..jobs.windows import Window, snap
from .context import Resolver


def planned(
    r: Resolver, field: str, given: str | list[PromptEntry] | None, default: str, tl: Timeline | None
) -> tuple[str, list[TimedPromptPreview] | None]:
    """(the text in force from the clip's start, the timeline when it has 2+ entries): a timeline of one entry is
    that plain text, so it hashes and renders as the plain prompt does. Its problems go to `r`."""
    if given is None or isinstance(given, str):
        return default if given is None else given, None
    duration = tl.duration if tl else None
    entries = [TimedPromptPreview(at=e.at, frame=_frame(e.at, tl), text=e.text) for e in given]
    for i in range(len(entries)):
        before = r.raw.field_name((field, i - 1))  # as the job wrote it (prompt_positive[0] in a RunPod request)
        problem = _problem(i, entries, tl) or (_order(before, i, entries, duration) if i else None)
        if problem:
            r.fail((field, i, "at"), problem)
    return entries[0].text, entries if len(entries) > 1 else None


def window_warnings(spec: SpecPreview, windows: list[Window]) -> list[str]:
    """A warning for each window that adds frames of more than one entry of a timeline (no boundary fits between
    them: too close together, or to the clip's start or end; it renders with the entry in force at the middle of
    the frames it adds), and for each entry no window renders with."""
    assert spec.output_frames is not None
    warnings = []
    for field, timeline in spec.timelines().items():
        starts = [snap(entry.frame or 0) if i else 0 for i, entry in enumerate(timeline)]  # as windows can begin
        used = set()
        for w in windows:
            first, end = w.start + w.overlap, min(w.start + w.frames, spec.output_frames)
            held = [i for i, s in enumerate(starts) if s < end and (i + 1 == len(starts) or starts[i + 1] > first)]
            used.add(chosen := in_force(timeline, w.prompt_frame))
            if len(held) > 1:
                names = ", ".join(f"{field}[{i}]" for i in held)
                warnings.append(
                    f"window {w.index + 1} (frames {first}-{end - 1}) adds frames of {names}: no window boundary "
                    f"fits between them; it renders with {field}[{chosen}], in force at the middle of its frames"
                )
        warnings += [
            f"{field}[{i}] (at {_shown(entry.at)}) is used by no window: too close to its neighbours, or to the "
            "clip's start or end, for a window of its own (each window adds 8 frames or more)"
            for i, entry in enumerate(timeline)
            if i not in used
        ]
    return warnings


def _problem(i: int, entries: list[TimedPromptPreview], tl: Timeline | None) -> str | None:
    """What is wrong with entry i's time alone: the first not at 0, or one past the clip's last frame."""
    at = entries[i].at
    if i == 0 and at not in (0.0, "0%"):
        return f"the first entry must be at 0 (the clip's start), got {_shown(at)}"
    if tl is None or entries[i].frame is None or entries[i].frame < tl.output_frames:
        return None
    if _seconds(at, tl.duration) >= tl.duration:
        return f"{_shown(at)} is past the end of the {tl.duration:g}-s clip"
    return f"{_shown(at)} is past the clip's last frame (frame {tl.last_frame}, at {tl.last_frame / tl.fps:.3f} s)"


def _order(name: str, i: int, entries: list[TimedPromptPreview], duration: float | None) -> str | None:
    """What is wrong with entry i's time against the entry before it (`name`): not later, or on the same frame."""
    before, entry = entries[i - 1], entries[i]
    named = f"{name} ({_shown(before.at)})"
    if _not_after(before.at, entry.at, duration):
        return f"{_shown(entry.at)} is not after {named}: times must increase"
    if entry.frame is not None and entry.frame == before.frame:
        return f"{_shown(entry.at)} falls on frame {entry.frame}, as {named} does: each entry needs a frame of its own"
    return None


def _frame(at: float | str, tl: Timeline | None) -> int | None:
    """The output frame an entry is in force from: its time, rounded to the nearest frame."""
    return round(_seconds(at, tl.duration) * tl.fps) if tl else None


def _seconds(at: float | str, duration: float) -> float:
    return float(at[:-1]) / 100 * duration if isinstance(at, str) else at


def _not_after(before: float | str, at: float | str, duration: float | None) -> bool:
    """Whether `at` does not come after `before`; seconds against a share of a clip whose length is not known yet
    (remote audio not fetched) cannot be told: checked once it is."""
    if duration is None and isinstance(before, str) != isinstance(at, str):
        return False
    return _seconds(at, duration or 1.0) <= _seconds(before, duration or 1.0)


def _shown(at: float | str) -> str:
    return at if isinstance(at, str) else f"{at:g} s"
