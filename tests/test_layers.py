"""The import direction of DESIGN.md's layers: Dagster code on top, pure code below, no arrow pointing back up."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("pipelines", "assets", "models", "warehouse", "quality", "worlds")
# What each package may import of ours (itself always). pipelines and assets are the Dagster layer.
ALLOWED = {
    "pipelines": {"pipelines", "assets", "models", "warehouse", "quality", "worlds"},
    "assets": {"assets", "models", "warehouse", "quality"},
    "quality": {"quality", "warehouse"},
    "models": {"models"},
    "warehouse": {"warehouse"},
    "worlds": {"worlds"},
}
DAGSTER_FREE = ("models", "warehouse", "quality", "worlds")


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level module) of every import in a file, including those inside functions."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def _modules(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_down(package: str) -> None:
    wrong = [f"{path.relative_to(ROOT)}:{line} imports {module}"
             for path in _modules(package) for line, module in _imports(path)
             if module in OURS and module not in ALLOWED[package]]
    assert not wrong, f"{package}/ may import only {sorted(ALLOWED[package])} of ours:\n" + "\n".join(wrong)


@pytest.mark.parametrize("package", DAGSTER_FREE)
def test_pure_layers_do_not_import_dagster(package: str) -> None:
    wrong = [f"{path.relative_to(ROOT)}:{line}" for path in _modules(package) for line, module in _imports(path)
             if module.startswith("dagster")]
    assert not wrong, f"{package}/ must stay free of Dagster: " + ", ".join(wrong)


def test_the_checker_sees_a_wrong_arrow(tmp_path: Path) -> None:
    module = tmp_path / "bad.py"
    module.write_text("import dagster\n\ndef f():\n    from assets.resources import Warehouse\n")
    assert _imports(module) == [(1, "dagster"), (4, "assets")]
