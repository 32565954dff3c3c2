"""Where a bench's figures live: `bench/results/<name>.md`, written by the bench's own run.

    with recorded("quality"):
        main()

Everything the run prints on stdout is also written, once it ends without an error, to the results file, under
a header that says how to reproduce it: the command, the date, the commit (and whether the tree had changes),
the CPU, the cores and the load average at the start. A failed or interrupted run (`--help` included) leaves the
previous file alone. docs/decisions.md keeps the reasoning and links here for the numbers; the machines are
shared, so compare figures within one file, never across files or days.
"""

from __future__ import annotations

import io
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = RESULTS.parents[1]


class _Tee(io.TextIOBase):
    """Writes to the terminal as usual and keeps a copy."""

    def __init__(self, terminal: io.TextIOBase) -> None:
        self.terminal = terminal
        self.copy = io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.terminal.write(text)

    def flush(self) -> None:
        self.terminal.flush()


def _commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False).stdout.strip()

    sha = git("rev-parse", "--short", "HEAD") or "unknown"
    return f"{sha} (with uncommitted changes)" if git("status", "--porcelain", "--untracked-files=no") else sha


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def portable(text: str) -> str:
    """`text` with this machine's home and temporary folders written as ``~`` and ``$TMPDIR``: a results file is
    committed, and no machine-specific path belongs in the repository."""
    for folder, name in ((tempfile.gettempdir(), "$TMPDIR"), (str(Path.home()), "~")):
        text = text.replace(folder.rstrip("/") + "/", name + "/")
    return text


def _command(argv: list[str]) -> str:
    """The command line as typed from the repository root: `python -m bench.quality`, `python bench/latency.py`."""
    script = Path(argv[0]).resolve()
    if script.name == "__main__.py":
        head = ["-m", ".".join(script.parent.relative_to(ROOT).parts)]
    else:
        head = [str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else argv[0]]
    return portable(shlex.join(["python", *head, *argv[1:]]))


def header(name: str, argv: list[str]) -> str:
    command = _command(argv)
    load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
    return (
        f"# bench `{name}`: results of the last run\n\n"
        f"Written by the bench itself (`bench/results.py`); rerun to refresh, never edit by hand.\n\n"
        f"- command: `{command}`\n"
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n"
        f"- commit: {_commit()}\n"
        f"- machine: {_cpu()}, {len(os.sched_getaffinity(0))} cores, load average (1/5/15 min) at start {load}\n\n"
        "One run on a shared machine: compare figures within this file, not across files or days.\n\n"
    )


@contextmanager
def recorded(name: str) -> Iterator[None]:
    """Tee stdout into `bench/results/<name>.md`, written when the block ends without an exception."""
    head = header(name, sys.argv)
    tee = _Tee(sys.stdout)  # type: ignore[arg-type]
    with redirect_stdout(tee):
        yield
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.md"
    path.write_text(head + "```text\n" + portable(tee.copy.getvalue().rstrip("\n")) + "\n```\n")
    print(f"figures written to {path.relative_to(ROOT)}", file=sys.stderr)
