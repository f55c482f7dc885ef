"""The package layout of docs/architecture.md, checked statically (AST of every module): rooms import only
downwards, no import circles, physics never imports qdgan or torch, no private Hydra API, no qdgan
module over 300 lines."""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest
from tiny import ROOT

PACKAGES = ("physics", "qdgan")
# a module may import from its own room and the rooms listed for it (nothing imports back up)
ALLOWED = {
    "physics": {"physics"},
    "qdgan": {"physics", "qdgan"},  # the top room: networks, metrics, scaling, pix2pix, datamodule
    "qdgan.train": {"physics", "qdgan", "qdgan.train"},
    "qdgan.apply": {"physics", "qdgan", "qdgan.train", "qdgan.apply"},
    "qdgan.study": {"physics", "qdgan", "qdgan.train", "qdgan.study"},
}
ENTRY_POINTS = {"qdgan.predict": "qdgan.apply", "qdgan.invert": "qdgan.apply"}  # thin `python -m` shims


@functools.cache
def modules() -> dict[str, Path]:
    found = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path) -> set[str]:
    """Every module name imported anywhere in the file (function-level imports included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def room(module: str) -> str:
    """physics | qdgan (the top) | qdgan.train | qdgan.apply | qdgan.study."""
    if module in ENTRY_POINTS:
        return ENTRY_POINTS[module]
    sub = ".".join(module.split(".")[:2])
    return sub if sub in ALLOWED else module.split(".")[0]


@functools.cache
def internal_edges() -> dict[str, set[str]]:
    mods = modules()
    return {m: {i for i in imports(p) if i in mods and i != m} for m, p in mods.items()}


@pytest.mark.parametrize("module", sorted(modules()))
def test_rooms_import_only_downwards(module):
    allowed = ALLOWED[room(module)]
    for target in internal_edges()[module]:
        assert room(target) in allowed, f"{module} (room {room(module)}) imports {target} (room {room(target)})"


def test_no_import_circles():
    edges = internal_edges()
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges[node]):
            assert state.get(nxt) != 1, "import circle: " + " → ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node, [])


def test_physics_never_imports_torch_or_qdgan_and_nothing_uses_private_hydra():
    for module, path in modules().items():
        names = imports(path)
        if module.startswith("physics"):
            assert not {n for n in names if n.split(".")[0] in ("torch", "lightning", "qdgan")}, module
        assert not [n for n in names if n.startswith("hydra._internal")], module


def test_no_qdgan_module_over_300_lines():
    long = {m: n for m, p in modules().items() if m.startswith("qdgan")
            and (n := len(p.read_text().splitlines())) > 300}
    assert not long, f"modules over 300 lines: {long}"
