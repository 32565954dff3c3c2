"""The dependency rule of the layout, checked by parsing every import of the project's packages.

contracts <- bus <- agents, edge_api <- mmrag (the only package that imports both agents and edge_api).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("contracts", "bus", "agents", "edge_api", "mmrag")
ALLOWED = {
    "contracts": set(),
    "bus": {"contracts"},
    "agents": {"contracts", "bus"},
    "edge_api": {"contracts", "bus"},
    "mmrag": {"contracts", "bus", "agents", "edge_api"},
}


def project_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(name.split(".")[0] for name in names if name.split(".")[0] in PACKAGES)
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_the_rule_allows(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no Python files in {package}/"
    for path in files:
        illegal = project_imports(path) - ALLOWED[package] - {package}
        assert not illegal, f"{path.relative_to(ROOT)} imports {sorted(illegal)}, against the dependency rule"


def test_the_rule_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("import agents.indexer\nfrom edge_api.app import create_app\nimport os\n")
    assert project_imports(bad) == {"agents", "edge_api"}


def test_the_runtime_knows_no_agent_by_name() -> None:
    names = ("parser", "embedder", "indexer", "retriever", "reranker", "generator")
    for path in (ROOT / "agents" / "runtime").rglob("*.py"):
        imports = {m for m in project_imports(path)}
        source = path.read_text()
        assert "agents.registry" not in source and "mmrag" not in imports
        for name in names:
            assert f"agents.{name}" not in source, f"{path.name} imports the {name} agent"
