"""One engine per data dir: an exclusive `flock` on `DATA_DIR/mmrag.lock`, held for the life of `mmrag up`.

Two engines on one data dir would run two nats-servers on one JetStream store and two embedded Qdrant
engines on one collection: both corrupt it. The kernel drops the lock when its holder dies (even by
SIGKILL), so a stale lock file never blocks the next start. The file holds the holder's pid, for the message.
The descriptor is not inherited by children (Python opens files close-on-exec), so a child that outlives
`mmrag up` for a moment cannot keep the lock.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "mmrag.lock"


class DataDirInUse(RuntimeError):
    """Another live process holds the lock of this data dir."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        self.data_dir = data_dir
        self.pid = pid
        holder = f"process {pid}" if pid else "another process"
        super().__init__(
            f"data dir {data_dir} is in use by {holder} (another `mmrag up`?): stop it or pick another --data-dir"
        )


class DataDirLock:
    """`with DataDirLock(path):` holds the lock (raises `DataDirInUse` at once if another process has it)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> DataDirLock:
        if not self.data_dir.exists():  # uploads, indexes and API keys: this user's only (not the umask's 0755)
            self.data_dir.mkdir(parents=True, mode=0o700)
            self.data_dir.chmod(0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise DataDirInUse(self.data_dir, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            # Empty the file before unlocking, so nobody reads a pid that no longer holds anything.
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DataDirLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None
