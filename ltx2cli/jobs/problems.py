"""A job's schema errors (pydantic's ValidationError) -> one Problem per field, each one line: the field's path
without pydantic's union tags, a plain message, the value given, and for an unknown field the likely one meant."""

from __future__ import annotations

import datetime
import difflib

from pydantic import ValidationError

from ..errors import Problem
from .job import ALIASES, KEYFRAME_ALIASES, PROMPT_TAGS, Guidance, Job, Keyframe, LoraRef, PromptEntry
from .manifest import SUFFIXES, RawJob

_FIELDS = {
    "job": set(Job.model_fields) | set(ALIASES),
    "keyframes": set(Keyframe.model_fields) | set(KEYFRAME_ALIASES),
    "loras": set(LoraRef.model_fields),
    "guidance": set(Guidance.model_fields),
    "prompt": set(PromptEntry.model_fields),  # a timeline's entries (prompt, negative_prompt)
}
_ALL_FIELDS = set().union(*_FIELDS.values())
# what each nested mapping looks like, for a value that is not one
_MAPPINGS = {
    "Keyframe": "{image: a.png, position: first, strength: 1.0}",
    "LoraRef": "{name: distilled, strength: 0.6} or {path: my-lora.safetensors}",
    "Guidance": "{cfg: 3.0, stg: 1.0}",
    "PromptEntry": "{at: 10, text: The camera turns to the sea.}",
}
TIMELINES = ("prompt", "negative_prompt")  # fields that may hold a prompt timeline
TIMELINE_HINT = 'a prompt timeline is a list of {at: SECONDS or "NN%", text: ...}, the first at 0'


def schema_problems(raw: RawJob, error: ValidationError) -> list[Problem]:
    problems: dict[tuple, Problem] = {}
    from_yaml = SUFFIXES.get(raw.file.suffix.lower()) == "yaml"
    for err in error.errors():
        loc = _field_loc(err)
        if loc not in problems:
            problems[loc] = raw.value_problem(loc, _describe(err, loc, from_yaml))
    return list(problems.values())


def _field_loc(err: dict) -> tuple:
    """The field path, without pydantic's union-member tags ('float', "literal['first','last']")."""
    loc, out = err["loc"], []
    for i, part in enumerate(loc):
        if part in PROMPT_TAGS and out and out[-1] in TIMELINES:
            continue  # the discriminated prompt's tag: prompt[1].text, not prompt.timeline[1].text
        last_unknown = i == len(loc) - 1 and err["type"] == "extra_forbidden"
        if not (isinstance(part, int) or part in _ALL_FIELDS or last_unknown):
            break
        out.append(part)
    return tuple(out)


def _describe(err: dict, loc: tuple, from_yaml: bool) -> str:
    kind, msg, value = err["type"], err["msg"], err.get("input")
    if kind == "extra_forbidden":
        scope = (
            "prompt"
            if any(part in TIMELINES for part in loc[:-1])
            else "keyframes"
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
    if kind == "string_too_short":
        n = ctx.get("min_length")
        return "must not be empty" if n == 1 else f"must be at least {n} characters long"
    if kind == "string_type":
        hint = f"; {TIMELINE_HINT}" if len(loc) == 1 and loc[0] in TIMELINES and isinstance(value, list) else ""
        return _not_a_string(value, from_yaml) + hint
    if kind == "model_type" and ctx.get("class_name") in _MAPPINGS:
        return f"must be a mapping such as {_MAPPINGS[ctx['class_name']]}, got {_shown(value)}"
    msg = msg.replace(", got a number with a fractional part", "")
    msg = msg.removeprefix("Value error, ").replace("Input should be", "must be")
    if isinstance(value, (str, int, float, bool)) and ", got " not in msg:
        msg += f", got {_shown(value)}"
    return msg


def _not_a_string(value: object, from_yaml: bool) -> str:
    """YAML reads some bare words as other things than text (`2024-01-01` a date, `no` a boolean): say so."""
    if from_yaml and isinstance(value, bool):
        words = "yes/on/true" if value else "no/off/false"
        return f"must be a string; YAML read a bare {words} as the boolean {str(value).lower()}, quote it"
    if from_yaml and isinstance(value, datetime.date):
        return f"must be a string; YAML read {value} as a date, quote it"
    if from_yaml and isinstance(value, (int, float)):
        return f"must be a string; YAML read {value!r} as a number, quote it"
    return f"must be a string, got {_shown(value)}"


def _shown(value: object) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, (list, dict)):
        return "a list" if isinstance(value, list) else "a mapping"
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."
