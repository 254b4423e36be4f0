"""The trust package stands on its own: no import cycles, no project module imported inside
a function, and only the runtime interface below it (never torch's forward pass)."""

import ast
import importlib
from pathlib import Path

import mrimaster

SRC = Path(mrimaster.__file__).parent


def _imports(path: Path) -> tuple[set[str], list[str]]:
    tree = ast.parse(path.read_text())
    top: set[str] = set()
    hidden: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(
                "mrimaster"):
            top.add(node.module)
    for func in (n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)):
        for node in ast.walk(func):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mrimaster"):
                hidden.append(f"{path.name}:{node.lineno}")
    return top, hidden


def test_trust_imports_only_lower_layers_and_nothing_inside_functions() -> None:
    allowed = ("mrimaster.trust", "mrimaster.inference.runtime", "mrimaster.data",
               "mrimaster.errors")
    for path in sorted((SRC / "trust").glob("*.py")):
        top, hidden = _imports(path)
        assert hidden == [], f"imports inside functions: {hidden}"
        assert all(m.startswith(allowed) for m in top), f"{path.name}: {sorted(top)}"
        importlib.import_module(f"mrimaster.trust.{path.stem}")


def test_users_of_trust_import_it_at_the_top() -> None:
    for rel in ("inference/predict.py", "evaluation/evaluate.py", "evaluation/presence.py",
                "training/fit_trust.py", "training/checks.py"):
        top, hidden = _imports(SRC / rel)
        assert hidden == [], f"imports inside functions: {hidden}"
        assert any(m.startswith("mrimaster.trust") for m in top), rel
