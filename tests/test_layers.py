"""The package's layout rules (docs/architecture.md), checked on the source: every import, at any depth.

Imports run one way: cli -> control -> live -> model / audio / dsp, and eval -> train -> model / dsp.
Within the package no module may import itself back through others, and no module may outgrow a page
count a reader can hold in mind.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lmdm_live"
MAX_LINES = 500

# which layers each layer may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "cli": {"control", "live", "model", "audio", "dsp", "train", "eval"},
    "control": {"live", "model", "audio", "dsp"},
    "live": {"model", "audio", "dsp"},
    "eval": {"train", "model", "dsp"},
    "train": {"model", "dsp"},
    "model": {"dsp"},
    "audio": set(),
    "dsp": set(),
    "package": {"live"},  # lmdm_live/__init__.py: the public names, loaded lazily
}
# the one crossing the rules name: evaluation plays the model through the offline stream
EXCEPTIONS = {("lmdm_live.eval.play", "lmdm_live.live.stream")}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) == 1:
        return "package"
    return parts[1] if parts[1] in ALLOWED else None


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The package modules `module` imports, module- or function-level ("from .x import name" counts as
    importing x.name where that is a module, else x)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "lmdm_live"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            if target.split(".")[0] != "lmdm_live":
                continue
            for a in node.names:
                sub = f"{target}.{a.name}"
                found.add(sub if sub in known else target)
    return {m for m in found if m != module}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: imports_of(m, p, known) for m, p in mods.items()}


def test_every_module_belongs_to_a_layer():
    unassigned = [m for m in modules() if layer(m) is None]
    assert not unassigned, f"modules outside every layer: {unassigned}"


def test_imports_run_one_way():
    wrong = []
    for m, deps in graph().items():
        src = layer(m)
        for d in deps:
            dst = layer(d)
            if dst == src or (m, d) in EXCEPTIONS:
                continue
            if dst not in ALLOWED[src]:
                wrong.append(f"{m} ({src}) -> {d} ({dst})")
    assert not wrong, "imports against the layer direction:\n" + "\n".join(sorted(wrong))


def test_no_import_loops():
    g = graph()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []
    counter = [0]

    def strongconnect(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                loops.append(sorted(comp))

    for v in g:
        if v not in index:
            strongconnect(v)
    assert not loops, f"import loops: {loops}"


def test_no_import_of_the_live_or_audio_stack_from_model_train_or_eval():
    g = graph()
    for m, deps in g.items():
        if layer(m) in ("model", "train", "eval"):
            bad = {d for d in deps if layer(d) in ("live", "audio", "control") and (m, d) not in EXCEPTIONS}
            assert not bad, f"{m} imports {sorted(bad)}"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_over_500_lines(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines (at most {MAX_LINES}): split it by job"


def test_the_checker_sees_function_level_imports():
    """The rules mean nothing if an import inside a function slips past them."""
    src = PACKAGE / "live" / "instrument.py"
    deps = imports_of("lmdm_live.live.instrument", src, set(modules()))
    assert "lmdm_live.live.inputs" in deps  # imported inside Instrument's methods only
