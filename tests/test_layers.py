"""The package's layers: every import points down (or sideways within a package), never up.

Read from the source with ``ast`` (nothing is imported), so the check costs nothing and names the
file and line of an offending import. Imports under ``if TYPE_CHECKING:`` are for annotations
only and do not count.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "cacl"

#: The layers, lowest first. A module may import from its own layer's package and from lower
#: layers. ``cacl`` itself (the version and the lazy ``FeatureExtractor``) is the façade.
LAYERS: list[set[str]] = [
    {"errors", "files", "cores", "boxes"},
    {"distributed"},
    {"data"},
    {"config"},
    {"models", "clustering", "losses", "memory"},
    {"evaluation", "baselines"},
    {"checkpoints"},
    {"temporal"},
    {"engine"},
    {"inference", "report", "labels"},
    {"serve"},
    {"cli", "__main__"},
]
RANK = {name: rank for rank, names in enumerate(LAYERS) for name in names}


def _top(module: str) -> str | None:
    """``cacl.engine.trainer`` -> ``engine``; ``cacl`` -> None (the façade)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "cacl" and len(parts) > 1 else None


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported cacl module) of every runtime import in ``path``."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "cacl":  # from cacl import distributed / __version__
                found.extend((node.lineno, f"cacl.{a.name}") for a in node.names)
            elif node.module.startswith("cacl."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, a.name) for a in node.names if a.name.startswith("cacl."))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text(), filename=str(path)))
    return found


def upward_imports() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = _top(_module_name(path))
        if own is None:
            continue
        assert own in RANK, f"{path}: package {own!r} has no layer in tests/test_layers.py"
        for line, target in imports(path):
            other = _top(target)
            if other is None or other == "__version__" or other == own:
                continue
            assert other in RANK, f"{path}:{line}: import of unknown package {target}"
            if RANK[other] > RANK[own]:
                problems.append(f"{path.relative_to(PACKAGE)}:{line} ({own}) imports {target}")
    return problems


def test_no_upward_import() -> None:
    assert upward_imports() == []


def test_the_check_sees_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "cacl"
    (fake / "data").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "data" / "__init__.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from cacl.config import DataConfig\n"
        "def f():\n    from cacl.engine.trainer import Trainer\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert upward_imports() == ["data/__init__.py:5 (data) imports cacl.engine.trainer"]
