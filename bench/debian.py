"""Real documents for the benches: files of Debian documentation packages, fetched with `apt-get download` and
unpacked with `dpkg-deb -x` on first use into a cache outside the repository (``MMRAG_BENCH_CACHE``, default
``~/.cache/mmrag-bench/debian``). Never the held-out manuals (R, gnuplot, Octave, the Debian handbook).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("MMRAG_BENCH_CACHE", Path.home() / ".cache" / "mmrag-bench" / "debian"))


def unpacked(package: str, cache: Path | None = None) -> Path:
    """The root of `package`'s files (``<cache>/x/<package>``), downloaded and unpacked on first use; an unpack
    cut short leaves no partial tree behind. Exits naming the fix when the package cannot be fetched."""
    cache = cache or cache_dir()
    target = cache / "x" / package
    if target.is_dir():
        return target
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{package}_*.deb"))
    if not found:
        done = subprocess.run(["apt-get", "download", package], cwd=debs, capture_output=True, text=True)
        found = sorted(debs.glob(f"{package}_*.deb"))
        if done.returncode != 0 or not found:
            raise SystemExit(f"could not fetch the Debian package {package} ({done.stderr.strip()[-300:]}); run "
                             f"`apt-get update` once, or put {package}_*.deb into {debs}, then rerun the bench")  # fmt: skip
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)  # dpkg-deb -x creates the target, not its parents
    subprocess.run(["dpkg-deb", "-x", str(found[-1]), str(partial)], check=True)
    partial.rename(target)
    return target


def member(package: str, path: str, cache: Path | None = None) -> Path:
    """One file of `package` (``path`` inside it), fetched as `unpacked` does."""
    found = unpacked(package, cache) / path
    if not found.exists():
        raise SystemExit(f"the Debian package {package} has no {path} (it changed): update the bench's file list")
    return found
