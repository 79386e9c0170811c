"""The package's layering (DESIGN.md §2): checked on the import statements themselves."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# folder -> the specdiff modules it must never import
FORBIDDEN = {
    "specdiff/zoo": ("specdiff.training",),  # zoo/ loads and ships models; training/ makes them
    "drafters": ("specdiff.verifiers",),
    "trees": ("specdiff.drafters", "specdiff.verifiers"),
}


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("folder", sorted(FORBIDDEN))
def test_no_forbidden_imports(folder):
    offenders = [f"{path.relative_to(ROOT)} imports {name}"
                 for path in sorted((ROOT / folder).glob("*.py"))
                 for name in imported_modules(path)
                 if name.startswith(FORBIDDEN[folder])]
    assert not offenders, offenders
