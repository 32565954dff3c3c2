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

ROOT = Path(__file__).resolve().parents[2]
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


# --------------------------------------------------------------------------- the test tiers (tests/conftest.py)

TESTS = ROOT / "tests"
ENGINE_NAMES = {"Engine", "TenantEngine"}  # tests.engine's `mmrag up`
SERVER_NAMES = {"NatsServer", "RedisServer", "start_nats_server", "locked_server"}
SERVER_FIXTURES = {"nats_server", "nc", "redis_server", "cluster"}


def _parameters(tree: ast.AST) -> set[str]:
    return {
        arg.arg
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        for arg in [*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs]
    }


def _names(tree: ast.AST) -> set[str]:
    used = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    imported = {a.asname or a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) for a in node.names}
    return used | imported


def _parametrized(tree: ast.AST) -> set[str]:
    """The argument names of `pytest.mark.parametrize`: values, not fixtures (an OCR `engine` is no mmrag up)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "parametrize" and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                names.update(n.strip() for n in first.value.split(","))
            elif isinstance(first, ast.List | ast.Tuple):
                names.update(e.value for e in first.elts if isinstance(e, ast.Constant))
    return names


def starts_an_engine(path: Path) -> list[str]:
    """What in a test module starts `mmrag up`: tests.engine's Engine, or an engine fixture (`engine`, `*_engine`)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = sorted(_names(tree) & ENGINE_NAMES)
    fixtures = _parameters(tree) - _parametrized(tree)
    found += sorted(p for p in fixtures if p == "engine" or p.endswith("_engine"))
    return found


def starts_a_server(path: Path) -> list[str]:
    """What in a test module starts a server process (nats-server, redis-server) or takes one as a fixture."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return sorted(_names(tree) & SERVER_NAMES) + sorted(_parameters(tree) & SERVER_FIXTURES)


def test_every_test_module_is_in_a_tier() -> None:
    from tests.conftest import TIERS

    stray = sorted(p.name for p in TESTS.glob("test_*.py"))
    assert not stray, f"tests/{stray}: move each into one of the tiers {TIERS} (see tests/conftest.py)"
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))}
    assert folders == set(TIERS), f"tests/ holds the tiers {TIERS} and nothing else: {sorted(folders)}"
    for tier in folders:
        assert (TESTS / tier / "__init__.py").exists(), f"tests/{tier}/__init__.py: a tier is a package (imports)"


@pytest.mark.parametrize("tier", ["unit", "bus"])
def test_only_the_e2e_tier_starts_an_engine(tier: str) -> None:
    for path in sorted((TESTS / tier).glob("test_*.py")):
        engine = starts_an_engine(path)
        assert not engine, f"{path.relative_to(ROOT)} starts an engine ({engine}): move those tests to tests/e2e"


def test_the_unit_tier_starts_no_server() -> None:
    for path in sorted((TESTS / "unit").glob("test_*.py")):
        server = starts_a_server(path)
        assert not server, f"{path.relative_to(ROOT)} starts a server ({server}): move those tests to tests/bus"


def test_the_tier_checkers_catch_a_violation(tmp_path: Path) -> None:
    bad = tmp_path / "test_bad.py"
    bad.write_text(
        "from tests.engine import Engine, NatsServer\n"
        "async def test_x(engine, nats_server): ...\n"
        "def test_y(plain_engine, redis_server): ...\n"
    )
    assert starts_an_engine(bad) == ["Engine", "engine", "plain_engine"]
    assert starts_a_server(bad) == ["NatsServer", "nats_server", "redis_server"]
    good = tmp_path / "test_good.py"
    good.write_text(
        "import pytest\nfrom tests.engine import BIN\ndef test_z(tmp_path, http): ...\n"
        "@pytest.mark.parametrize('engine', ['onnxruntime', 'openvino'])\ndef test_ocr(engine): ...\n"
    )
    assert starts_an_engine(good) == [] and starts_a_server(good) == []


def test_every_test_is_marked_with_its_tier_and_a_stray_module_is_refused() -> None:
    from tests.conftest import pytest_collection_modifyitems

    class Item:
        def __init__(self, path: Path) -> None:
            self.path, self.markers = path, []

        def add_marker(self, marker: str) -> None:
            self.markers.append(marker)

    items = [Item(TESTS / tier / "test_x.py") for tier in ("unit", "bus", "e2e", "security")]
    pytest_collection_modifyitems(None, items)  # type: ignore[arg-type]
    assert [item.markers for item in items] == [["unit"], ["bus"], ["e2e"], ["security"]]
    with pytest.raises(pytest.UsageError, match=r"tests/test_x.py is in no tier: move it to tests/unit"):
        pytest_collection_modifyitems(None, [Item(TESTS / "test_x.py")])  # type: ignore[arg-type]
