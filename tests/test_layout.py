"""The layout and its dependency rule, checked by parsing every import of the project's packages.

    contracts <- telemetry <- bus <- documents <- models <- search <- agents <- mmrag
                                  (libraries)                   edge_api <-

`contracts` is the language between processes; `telemetry` is how every process reports; `bus` is the NATS side.
The libraries (`documents`, `models`, `search`) never import `agents` or `edge_api`, and `documents` and
`models` never touch NATS. `agents/` holds the runtime and one module per agent of the registry, nothing else.
`edge_api` may read documents (`documents.filetypes` decides what an upload is, for both it and the parser).
`mmrag` is the composition root: the only package that imports both `agents` and `edge_api`.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

from mmrag.registry import AGENTS, COMPANIONS

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("contracts", "telemetry", "bus", "documents", "models", "search", "agents", "edge_api", "mmrag")
LIBRARIES = {"documents", "models", "search"}
BELOW_LIBRARIES = {"contracts", "telemetry", "bus"}
ALLOWED = {
    "contracts": set(),
    "telemetry": {"contracts"},
    "bus": {"contracts", "telemetry"},
    "documents": {"contracts", "telemetry"},
    "models": {"contracts", "telemetry", "documents"},
    "search": BELOW_LIBRARIES | {"documents", "models"},
    "agents": BELOW_LIBRARIES | LIBRARIES,
    "edge_api": BELOW_LIBRARIES | {"documents"},
    "mmrag": set(PACKAGES),
}
NO_NATS = ("documents", "models", "telemetry", "contracts")


def imports(path: Path) -> set[str]:
    """Every absolute module name `path` imports (relative imports stay inside their package)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def project_imports(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imports(path) if name.split(".")[0] in PACKAGES}


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_the_rule_allows(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no Python files in {package}/"
    for path in files:
        illegal = project_imports(path) - ALLOWED[package] - {package}
        assert not illegal, f"{path.relative_to(ROOT)} imports {sorted(illegal)}, against the dependency rule"


@pytest.mark.parametrize("package", NO_NATS)
def test_pure_packages_never_touch_nats(package: str) -> None:
    for path in sorted((ROOT / package).rglob("*.py")):
        nats = {name for name in imports(path) if name.split(".")[0] == "nats"}
        assert not nats, f"{path.relative_to(ROOT)} imports {sorted(nats)}: {package}/ takes bytes and settings, no NATS"


def test_the_rule_covers_every_package_that_is_installed() -> None:
    include = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    assert {pattern.rstrip("*") for pattern in include} == set(PACKAGES) == set(ALLOWED)


def test_the_rule_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "x.py"
    bad.write_text("import agents.indexer\nfrom edge_api.app import create_app\nimport os\n")
    assert project_imports(bad) == {"agents", "edge_api"}


def test_agents_holds_the_runtime_and_one_module_per_registered_agent() -> None:
    registered = {t.__module__ for t in [*AGENTS.values(), *COMPANIONS]}
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for path in (ROOT / "agents").glob("*.py")
        if path.name not in ("__init__.py", "settings.py")
    }
    assert modules == registered, (
        f"agents/ modules that are no registered agent: {sorted(modules - registered)} (a library belongs in "
        f"documents/, models/ or search/); registered agents outside agents/: {sorted(registered - modules)}"
    )
    assert {p.name for p in (ROOT / "agents").iterdir() if p.is_dir() and p.name != "__pycache__"} == {"runtime"}


def test_the_runtime_knows_no_agent_by_name() -> None:
    agent_modules = {t.__module__ for t in [*AGENTS.values(), *COMPANIONS]}
    assert len(agent_modules) == len(AGENTS) + len(COMPANIONS), "one module per agent"
    for path in (ROOT / "agents" / "runtime").rglob("*.py"):
        names = imports(path)
        assert "mmrag" not in project_imports(path), f"{path.name} imports the registry"
        assert not names & agent_modules, f"{path.name} imports an agent: {sorted(names & agent_modules)}"
