"""A job's schema errors (pydantic's ValidationError) -> one Problem per field, each one line: the field's path
without pydantic's union tags, a plain message, the value given, and for an unknown field the likely one meant."""

from __future__ import annotations

import difflib

from pydantic import ValidationError

from .errors import Problem
from .jobs import ALIASES, KEYFRAME_ALIASES, Guidance, Job, Keyframe, LoraRef
from .manifest import RawJob

_FIELDS = {
    "job": set(Job.model_fields) | set(ALIASES),
    "keyframes": set(Keyframe.model_fields) | set(KEYFRAME_ALIASES),
    "loras": set(LoraRef.model_fields),
    "guidance": set(Guidance.model_fields),
}
_ALL_FIELDS = set().union(*_FIELDS.values())


def schema_problems(raw: RawJob, error: ValidationError) -> list[Problem]:
    problems: dict[tuple, Problem] = {}
    for err in error.errors():
        loc = _field_loc(err)
        if loc not in problems:
            problems[loc] = raw.value_problem(loc, _describe(err, loc))
    return list(problems.values())


def _field_loc(err: dict) -> tuple:
    """The field path, without pydantic's union-member tags ('float', "literal['first','last']")."""
    loc, out = err["loc"], []
    for i, part in enumerate(loc):
        last_unknown = i == len(loc) - 1 and err["type"] == "extra_forbidden"
        if not (isinstance(part, int) or part in _ALL_FIELDS or last_unknown):
            break
        out.append(part)
    return tuple(out)


def _describe(err: dict, loc: tuple) -> str:
    kind, msg, value = err["type"], err["msg"], err.get("input")
    if kind == "extra_forbidden":
        scope = (
            "keyframes"
            if "keyframes" in loc[:-1]
            else "loras"
            if "loras" in loc[:-1]
            else ("guidance" if "guidance" in loc[:-1] else "job")
        )
        hint = difflib.get_close_matches(str(loc[-1]), sorted(_FIELDS[scope]), n=1, cutoff=0.6)
        return "unknown field" + (
            f"; did you mean {hint[0]!r}?" if hint else f"; valid: {', '.join(sorted(_FIELDS[scope]))}"
        )
    if kind == "missing":
        return "missing (required)"
    ctx = err.get("ctx") or {}
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s), got {ctx.get('actual_length')}"
    if kind == "too_long":
        return f"allows at most {ctx.get('max_length')} item(s), got {ctx.get('actual_length')}"
    msg = msg.replace(", got a number with a fractional part", "")
    msg = msg.removeprefix("Value error, ").replace("Input should be", "must be")
    if isinstance(value, (str, int, float, bool)) and ", got " not in msg:
        shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "..."
        msg += f", got {shown}"
    return msg
