"""No import circles: none among the package's module-level imports, and none even through
imports inside functions for the pairs that had one (``device`` with
``inference.onnx_runtime``; ``segmentation.model`` with ``segmentation.runtime``)."""

from __future__ import annotations

import ast
from pathlib import Path

import mrimaster

ROOT = Path(mrimaster.__file__).parent


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
    return {m for m in out if m.startswith("mrimaster")}


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in ROOT.rglob("*.py")}
    return {name: {m for m in _imports(path, top_level_only) if m in modules and m != name}
            for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_circle_among_module_level_imports() -> None:
    assert _cycle(_graph(top_level_only=True)) is None


def test_former_circles_stay_broken_even_through_lazy_imports() -> None:
    graph = _graph(top_level_only=False)
    assert "mrimaster.inference.onnx_runtime" not in graph["mrimaster.device"]
    assert "mrimaster.segmentation.model" not in graph["mrimaster.segmentation.runtime"]
