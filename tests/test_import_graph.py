"""ltx2cli's imports run one way, down the rooms a job travels through (README, "How the code is laid out"), and no
modules import each other. Every import counts: at the top of a module, inside a function (lazy: it only defers
the cost, the modules still depend on each other) and under `if TYPE_CHECKING:` (an annotation is a dependency
too). There is no exception to document: data flows one way (manifest -> job -> spec -> runner -> engine ->
writer -> sink)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "ltx2cli"


def import_graph(package: Path) -> dict[str, set[str]]:
    """module -> the package's modules it imports anywhere in its source (`from . import x` names x)."""
    root = package.parent
    files = {}
    for f in package.rglob("*.py"):
        parts = f.relative_to(root).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, f in files.items():
        here = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = ".".join(here[: len(here) - node.level + 1] + [node.module or ""]).strip(".")
                base = base if node.level else node.module or ""
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            graph[name] |= {t for t in targets if t in files and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path a -> ... -> a) through each group of modules that import each other."""
    found, done = [], set()
    for start in sorted(graph):
        stack, path, on_path = [(start, iter(sorted(graph[start])))], [start], {start}
        while stack:
            node, nexts = stack[-1]
            nxt = next(nexts, None)
            if nxt is None:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
            elif nxt in on_path:
                cycle = path[path.index(nxt) :] + [nxt]
                if not any(set(cycle) <= set(c) for c in found):
                    found.append(cycle)
            elif nxt not in done:
                stack.append((nxt, iter(sorted(graph[nxt]))))
                path.append(nxt)
                on_path.add(nxt)
    return found


# The rooms, top to bottom: a module may import its own room and any room on a lower line, nothing else (the
# rooms on one line do not import each other). "base" is the top-level modules every room may use.
LAYERS = (
    ("cli",),  # cli.py, __main__.py: the `ltx2` command
    ("commands", "worker"),  # the CLI's commands; the RunPod worker
    ("batch", "synthetic"),  # runs a batch of planned jobs; the random-weight models (--model tiny, tests, bench)
    ("plan",),  # a job -> an exact RenderSpec (presets, inputs probed, LoRAs, output)
    ("engine",),  # sampling and conditions: a RenderSpec + loaded models -> frames and sound
    ("engine.models",),  # the loaded models: building them from weights, LoRA hooks, compile
    ("engine.memory",),  # memory plans: estimates, residency, placement, streaming, chunking
    ("weights",),  # weight files: finding, naming, reading, checking and loading every layout
    ("storage",),  # where inputs come from and outputs go: local paths, URLs, gs://
    ("media",),  # decoding and encoding images, sound and video
    ("jobs",),  # what a user asks for: jobs, manifests, specs, presets, LoRAs, releases
    ("base",),  # errors, cache, output, the version
)
BASE = ("errors", "cache", "output")


def room(module: str) -> str:
    """The room of a module: its package under ltx2cli (engine's two subpackages are rooms of their own)."""
    parts = module.split(".")[1:]
    if not parts or parts[0] in BASE:
        return "base"
    if parts[0] in ("cli", "__main__"):
        return "cli"
    if parts[0] == "engine" and len(parts) > 1 and parts[1] in ("models", "memory"):
        return f"engine.{parts[1]}"
    return parts[0]


def allowed() -> dict[str, set[str]]:
    """room -> the rooms it may import."""
    rank = {r: i for i, line in enumerate(LAYERS) for r in line}
    return {r: {r} | {o for o in rank if rank[o] > rank[r]} for r in rank}


def violations(graph: dict[str, set[str]]) -> list[str]:
    may = allowed()
    return sorted(
        f"{a} -> {b} ({room(a)} may not import {room(b)})"
        for a, targets in graph.items()
        for b in targets
        if room(b) not in may.get(room(a), set())
    )


def test_ltx2cli_has_no_import_cycles():
    graph = import_graph(PACKAGE)
    assert len(graph) > 50 and "ltx2cli.batch.runner" in graph["ltx2cli.commands.batch"]  # the graph is really read
    assert cycles(graph) == []


def test_imports_run_down_the_rooms():
    graph = import_graph(PACKAGE)
    assert {room(m) for m in graph} == {r for line in LAYERS for r in line}  # every room is in the table, and used
    assert violations(graph) == []
    rooms = {room(a): set() for a in graph}
    for a, targets in graph.items():
        rooms[room(a)] |= {room(b) for b in targets} - {room(a)}
    assert cycles(rooms) == []


def test_the_house_shows_its_rooms():
    top = sorted(p.name for p in PACKAGE.iterdir() if p.suffix == ".py")
    assert top == ["__init__.py", "__main__.py", "cache.py", "cli.py", "errors.py", "output.py"]
    assert len(list((PACKAGE / "engine").glob("*.py"))) <= 20
    graph = import_graph(PACKAGE)
    engine = [m for m in graph if m.startswith("ltx2cli.engine")]
    assert not [(m, t) for m in engine for t in graph[m] if t.startswith("ltx2cli.synthetic")]
    weights = [m for m in graph if m.startswith("ltx2cli.weights")]
    assert not [(m, t) for m in weights for t in graph[m] if t.startswith("ltx2cli.engine")]
    for init in PACKAGE.rglob("__init__.py"):  # each package says what it is for, and re-exports nothing
        tree = ast.parse(init.read_text(encoding="utf-8"))
        if init.parent != PACKAGE:
            assert ast.get_docstring(tree), f"{init} has no docstring"
            assert not [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)], init


def test_an_import_up_the_rooms_is_found_lazy_or_not(tmp_path):
    pkg = tmp_path / "ltx2cli"
    for sub in ("jobs", "engine", "engine/memory", "batch"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "jobs" / "spec.py").write_text("def f():\n    from ..engine import render\n")  # lazy, still up
    (pkg / "engine" / "render.py").write_text("from .memory import plans\nfrom ..jobs import spec\n")  # down: fine
    (pkg / "engine" / "memory" / "plans.py").write_text("from ..render import x\n")  # memory -> engine: up
    (pkg / "batch" / "runner.py").write_text("from ..engine import render\n")
    assert violations(import_graph(pkg)) == [
        "ltx2cli.engine.memory.plans -> ltx2cli.engine.render (engine.memory may not import engine)",
        "ltx2cli.jobs.spec -> ltx2cli.engine (jobs may not import engine)",
        "ltx2cli.jobs.spec -> ltx2cli.engine.render (jobs may not import engine)",
    ]


def test_a_lazy_or_type_only_import_back_is_a_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from .sub import b\n")
    (pkg / "sub" / "b.py").write_text("def f():\n    from ..c import g\n")
    (pkg / "c.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    (pkg / "d.py").write_text("import pkg.a\n")  # into the cycle, not part of it
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]]
