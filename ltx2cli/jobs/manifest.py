"""Manifests (YAML, JSON, JSONL) -> raw job dicts that remember where each field was written.

Accepted shapes: a list of jobs; a mapping with `jobs:` and optional `defaults:`; a single job;
a RunPod request `{"id": ..., "input": {...}}` wherever a job may stand. Every problem is collected
with file:line, job id and field, so one run reports all of them.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import Problem
from .job import ALIASES, KEYFRAME_ALIASES

Path_ = tuple[str | int, ...]  # a field's path inside the document, e.g. ("jobs", 2, "keyframes", 0)

SUFFIXES = {".yaml": "yaml", ".yml": "yaml", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}
MANIFEST_TYPES = ", ".join(SUFFIXES)  # for messages and help, so they name every suffix read
RUNPOD_ENVELOPE = {"id", "input", "webhook", "policy", "s3Config"}
CLI = "command line"
DEFAULTS: Path_ = ("defaults",)  # where a manifest's `defaults:` mapping is in its document


@dataclass
class RawJob:
    """One job's merged fields (canonical names) and how to point at each of them."""

    file: Path
    index: int  # 1-based position in its manifest
    data: dict[str, Any]
    origins: dict[str, Path_ | None] = field(default_factory=dict)  # key -> document path; None = CLI
    lines: dict[Path_, int] = field(default_factory=dict)
    written_as: dict[Path_, str] = field(default_factory=dict)  # canonical path -> key the user typed

    @property
    def base_dir(self) -> Path:
        return self.file.parent

    @property
    def label(self) -> str:
        jid = self.data.get("id")
        return str(jid) if jid not in (None, "") else f"#{self.index}"

    def where(self, path: Path_ = ()) -> str:
        """file:line of a field path given relative to the job (canonical names)."""
        if path and path[0] in self.origins:
            origin = self.origins[path[0]]
            if origin is None:
                return CLI
            return self.at(origin + tuple(path))
        return self.at(self.origins.get("", ()) + tuple(path))

    def at(self, doc_path: Path_) -> str:
        return _at(self.file, self.lines, doc_path)

    def field_name(self, path: Path_) -> str:
        """The field as the user typed it (an alias where they used one)."""
        return _dotted(tuple(self.written_as.get(tuple(path[: i + 1]), part) for i, part in enumerate(path)))

    def problem(self, path: Path_, message: str) -> Problem:
        return Problem(self.where(path), message, job=self.label, field=self.field_name(path) or None)

    def from_defaults(self, key: str) -> bool:
        return self.origins.get(key) == DEFAULTS

    def value_problem(self, path: Path_, message: str) -> Problem:
        """A problem with a field's value alone, not with the job around it: one set in the manifest's `defaults:`
        is that mapping's, named there with no job (and said once for all its jobs)."""
        if not (path and self.from_defaults(str(path[0]))):
            return self.problem(path, message)
        return Problem(self.where(path), message, field=_dotted(DEFAULTS) + "." + self.field_name(path))


@dataclass
class _Layer:
    """One mapping of job fields (a job's own, or a manifest's `defaults:`) with ltx2's names."""

    path: Path_  # where it is in the document
    data: dict[str, Any] = field(default_factory=dict)
    written_as: dict[Path_, str] = field(default_factory=dict)  # canonical path -> key the user typed
    twice: list[tuple[Path_, str]] = field(default_factory=list)  # a field under both names: (path, key typed 2nd)

    def twice_problems(self, file: Path, lines: dict[Path_, int], job: str | None) -> list[Problem]:
        """One problem per field given under both its names; job None: the manifest's defaults."""
        problems = []
        for path, key in self.twice:
            name = path[-1]
            alias = key if key != name else self.written_as[path]  # whichever of the two came first
            message = f"given twice (as {name!r} and its alias {alias!r}); keep one"
            where = _at(file, lines, self.path + path[:-1] + (key,))
            field_path = path if job is not None else self.path + path  # defaults.image
            problems.append(Problem(where, message, job=job, field=_dotted(field_path)))
        return problems


def _at(file: Path, lines: dict[Path_, int], doc_path: Path_) -> str:
    """file:line of a path in the document (the nearest enclosing one with a line)."""
    while doc_path not in lines and doc_path:
        doc_path = doc_path[:-1]
    return f"{file}:{lines.get(doc_path, 1)}"


def _dotted(path: Path_) -> str:
    """("keyframes", 0, "image") -> "keyframes[0].image"."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if out else str(part)
    return out


def read_manifests(paths: list[Path], cli: dict[str, Any] | None = None) -> tuple[list[RawJob], list[Problem]]:
    jobs: list[RawJob] = []
    problems: list[Problem] = []
    for p in paths:
        got, probs = read_manifest(p, cli or {})
        jobs += got
        problems += probs
    return jobs, problems


def read_manifest(path: Path, cli: dict[str, Any]) -> tuple[list[RawJob], list[Problem]]:
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        return [], [Problem(str(path), f"unknown manifest type {path.suffix!r}; use {MANIFEST_TYPES}")]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return [], [Problem(str(path), "manifest not found")]
    except (OSError, UnicodeDecodeError) as e:
        return [], [Problem(str(path), f"cannot read manifest: {e}")]

    problems: list[Problem] = []
    if kind == "jsonl":
        entries, lines, repeated, problems = _parse_jsonl(path, text)
        defaults: _Layer | None = None
    else:
        parsed = _parse_yaml(path, text) if kind == "yaml" else _parse_json(path, text)
        if isinstance(parsed, Problem):
            return [], [parsed]
        doc, lines, repeated = parsed
        shape = _split_document(path, doc, lines)
        if isinstance(shape, Problem):
            return [], [shape]
        defaults, items = shape
        if defaults is not None:  # read once: its problems are its own, not each job's
            problems += defaults.twice_problems(path, lines, None)
        entries = [(i, obj, p) for i, (obj, p) in enumerate(items, start=1)]

    if not entries and not problems:
        problems.append(Problem(str(path), "no jobs in manifest"))
    jobs = []
    for i, obj, doc_path in entries:
        job, probs = _raw_job(path, i, obj, doc_path, lines, defaults, cli)
        problems += probs
        if job is not None:
            problems += _repeated_in_job(job, doc_path, repeated)
            jobs.append(job)
    for key_path in repeated:  # outside every job: a top-level key, one in defaults:
        if not any(key_path[: len(p)] == p for _, _, p in entries):
            problems.append(Problem(_at(path, lines, key_path), "given twice; keep one", field=_dotted(key_path)))
    return jobs, problems


def _repeated_in_job(job: RawJob, doc_path: Path_, repeated: list[Path_]) -> list[Problem]:
    """A key written twice in one of the job's mappings (the parser keeps the last one silently), at the second."""
    inner = job.origins[""]  # a RunPod request's fields are named from inside its input
    problems = []
    for key_path in repeated:
        if key_path[: len(doc_path)] == doc_path:
            field_path = key_path[len(inner) :] if key_path[: len(inner)] == inner else key_path[len(doc_path) :]
            message = "given twice in the same job; keep one"
            problems.append(Problem(job.at(key_path), message, job=job.label, field=_dotted(field_path)))
    return problems


def read_request(request: dict[str, Any], source: str = "request") -> tuple[RawJob | None, list[Problem]]:
    """One already-parsed RunPod request `{"id": ..., "input": {...}}` -> a raw job, as if it were a manifest line."""
    return _raw_job(Path(source), 1, request, (), {}, None, {})


# -- parsing with line numbers ------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, noting each key written twice in one mapping (PyYAML keeps the last one silently)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self.repeated: set[yaml.Node] = set()  # key nodes (by identity) that repeat an earlier key of their mapping

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        # before SafeLoader merges `<<:` keys into the mapping: a merged key a mapping sets again is not a repeat
        seen = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                key = (key_node.tag, key_node.value)
                if key in seen:
                    self.repeated.add(key_node)
                seen.add(key)
        return super().construct_mapping(node, deep)


def _parse_yaml(path: Path, text: str) -> tuple[Any, dict[Path_, int], list[Path_]] | Problem:
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else 1
        return Problem(f"{path}:{line}", f"not valid YAML: {e.problem or e.context}")
    except yaml.YAMLError as e:
        return Problem(str(path), f"not valid YAML: {e}")
    finally:
        loader.dispose()
    lines: dict[Path_, int] = {}
    repeated: list[Path_] = []
    if node is not None:
        _yaml_lines(node, (), lines, loader.repeated, repeated)
    return data, lines, repeated


def _yaml_lines(
    node: yaml.Node, path: Path_, out: dict[Path_, int], repeats: set[yaml.Node], repeated: list[Path_]
) -> None:
    """Each path's line into out; the path of each key node in repeats into repeated."""
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else str(k.start_mark)
            out[path + (key,)] = k.start_mark.line + 1  # a repeated key: its last line, as the value kept
            if k in repeats:
                repeated.append(path + (key,))
            _yaml_lines(v, path + (key,), out, repeats, repeated)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _yaml_lines(item, path + (i,), out, repeats, repeated)


def _parse_json(path: Path, text: str) -> tuple[Any, dict[Path_, int], list[Path_]] | Problem:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        return Problem(f"{path}:{e.lineno}", f"not valid JSON: {e.msg} (column {e.colno})")
    lines: dict[Path_, int] = {}
    scanner = _JsonLines(text)
    scanner.scan(0, (), lines)
    return data, lines, scanner.repeated


class _JsonLines:
    """Line of every value in already-valid JSON (json gives values, not positions), and the keys written twice in
    one object (json keeps the last one silently)."""

    _ws = re.compile(r"[ \t\n\r]*")

    def __init__(self, text: str, first_line: int = 1):
        self.text = text
        self.newlines = [m.start() for m in re.finditer("\n", text)]
        self.decoder = json.JSONDecoder()
        self.first_line = first_line
        self.repeated: list[Path_] = []

    def line(self, idx: int) -> int:
        return bisect.bisect_left(self.newlines, idx) + self.first_line

    def skip(self, idx: int) -> int:
        return self._ws.match(self.text, idx).end()

    def scan(self, idx: int, path: Path_, out: dict[Path_, int]) -> int:
        t = self.text
        idx = self.skip(idx)
        out.setdefault(path, self.line(idx))
        opener = t[idx]
        if opener not in "{[":
            return self.decoder.raw_decode(t, idx)[1]
        closer = "}" if opener == "{" else "]"
        idx = self.skip(idx + 1)
        n = 0
        while t[idx] != closer:
            if opener == "{":
                key, end = self.decoder.raw_decode(t, idx)
                if path + (key,) in out:
                    self.repeated.append(path + (key,))
                out[path + (key,)] = self.line(idx)
                idx = self.skip(end) + 1  # past ':'
                idx = self.scan(idx, path + (key,), out)
            else:
                idx = self.scan(idx, path + (n,), out)
                n += 1
            idx = self.skip(idx)
            if t[idx] == ",":
                idx = self.skip(idx + 1)
        return idx + 1


def _parse_jsonl(
    path: Path, text: str
) -> tuple[list[tuple[int, Any, Path_]], dict[Path_, int], list[Path_], list[Problem]]:
    """-> ([(ordinal, object, its document path)], lines, keys written twice, problems). The document path is the
    line's number, so a job's problems point at its own line past blank and # lines; a malformed line keeps its
    ordinal, so ids stay put."""
    docs, lines, repeated, problems = [], {}, [], []
    ordinal = 0
    for n, line in enumerate(text.splitlines(), start=1):
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        ordinal += 1
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as e:
            problems.append(Problem(f"{path}:{n}", f"not valid JSON: {e.msg} (column {e.colno})"))
            continue
        scanner = _JsonLines(s, first_line=n)
        scanner.scan(0, (n,), lines)
        repeated += scanner.repeated
        docs.append((ordinal, obj, (n,)))
    return docs, lines, repeated, problems


def _split_document(path: Path, doc: Any, lines: dict[Path_, int]):
    """-> (defaults renamed, [(job object, its document path)]) or a Problem."""
    if isinstance(doc, list):
        return None, [(obj, (i,)) for i, obj in enumerate(doc)]
    if isinstance(doc, dict) and "jobs" in doc:
        extra = sorted(set(doc) - {"jobs", "defaults"})
        if extra:
            line = lines.get((extra[0],), 1)
            return Problem(f"{path}:{line}", f"unknown top-level key {extra[0]!r}; valid: jobs, defaults")
        jobs, defaults = doc["jobs"], doc.get("defaults")
        if not isinstance(jobs, list):
            return Problem(f"{path}:{lines.get(('jobs',), 1)}", "jobs must be a list of job mappings")
        if defaults is not None and not isinstance(defaults, dict):
            return Problem(f"{path}:{lines.get(DEFAULTS, 1)}", "defaults must be a mapping of job fields")
        return _layer(defaults, DEFAULTS) if defaults else None, [(obj, ("jobs", i)) for i, obj in enumerate(jobs)]
    if isinstance(doc, dict):
        return None, [(doc, ())]
    if doc is None:
        return None, []
    return Problem(f"{path}:1", "a manifest must be a list of jobs, a mapping with jobs:, or one job")


# -- one job: envelope, aliases, defaults, CLI --------------------------------------------------


def _raw_job(path, index, obj, doc_path, lines, defaults, cli) -> tuple[RawJob | None, list[Problem]]:
    stem = re.sub(r"[^\w.\-]", "_", path.stem).lstrip(".-") or "job"
    auto_id = f"{stem}-{index}"
    job = RawJob(path, index, {"id": auto_id}, lines=lines)
    if isinstance(obj, dict):
        inner = obj.get("input") if isinstance(obj.get("input"), dict) else obj
        job.data["id"] = inner.get("id", obj.get("id", auto_id))
    problems: list[Problem] = []
    if not isinstance(obj, dict):
        job.origins[""] = doc_path
        return None, [job.problem((), f"a job must be a mapping of fields, got {type(obj).__name__}")]

    if isinstance(obj.get("input"), dict):  # a RunPod request: {"id": ..., "input": {...}}
        job.origins[""] = doc_path
        for key in sorted(set(obj) - RUNPOD_ENVELOPE):
            problems.append(
                job.problem((key,), f"unknown key next to 'input'; valid: {', '.join(sorted(RUNPOD_ENVELOPE))}")
            )
        inner = dict(obj["input"])
        if "id" in obj and "id" not in inner:
            inner["id"] = obj["id"]
            job.origins["id"] = doc_path
        obj, doc_path = inner, doc_path + ("input",)

    job.origins[""] = doc_path
    own = _layer(obj, doc_path)
    problems += own.twice_problems(path, lines, job.label)
    layers = [defaults, own] if defaults else [own]
    merged: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.data.items():
            if key == "guidance" and isinstance(value, dict) and isinstance(merged.get(key), dict):
                value = {**merged[key], **value}
            merged[key] = value
            job.origins[key] = layer.path  # the job's own layer comes last and wins, as in `merged`
    for key, value in cli.items():
        if key == "guidance" and isinstance(merged.get(key), dict):
            value = {**merged[key], **value}
        merged[key] = value
        job.origins[key] = None
    merged.setdefault("id", auto_id)
    job.data = merged
    # what the user typed, from the layer each field's value came from
    job.written_as = {p: k for lay in layers for p, k in lay.written_as.items() if job.origins[p[0]] == lay.path}
    return job, problems


def _layer(obj: dict, path: Path_) -> _Layer:
    layer = _Layer(path)
    layer.data = _canonical(obj, layer)
    return layer


def _canonical(obj: dict, layer: _Layer, prefix: Path_ = ()) -> dict[str, Any]:
    """obj with ltx2's names for the original service's keys (a keyframe's too, under prefix); what the user typed
    and the fields given under both names go to layer."""
    aliases = KEYFRAME_ALIASES if prefix else ALIASES
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = aliases.get(key, key)
        path = prefix + (name,)
        if name in out:
            layer.twice.append((path, key))
            continue
        if name != key:
            layer.written_as[path] = key
        if path == ("keyframes",) and isinstance(value, list):
            value = [_canonical(kf, layer, (name, i)) if isinstance(kf, dict) else kf for i, kf in enumerate(value)]
        out[name] = value
    return out
