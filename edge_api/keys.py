"""API keys: the keys file, its entries, and the lookup of a presented key.

A key is ``mmrag_`` + 43 URL-safe characters (`secrets.token_urlsafe(32)`: 256 random bits). It is shown once,
when created, and stored only as its SHA-256 (a fast hash is enough for high-entropy random keys: there is no
dictionary to try). The keys file is JSON::

    {"version": 1, "keys": [
      {"id": "k_3f9c...", "tenant": "acme", "role": "writer", "sha256": "<64 hex>",
       "created_at": "2026-11-24T12:00:00Z", "revoked": false}
    ]}

Its path is `MMRAG_API_KEYS_FILE`; `MMRAG_API_KEYS` may hold the same JSON (a Kubernetes Secret as an env
var). `mmrag keys create/list/revoke` edit the file; the edge API re-reads it when it changes (`KeyRing`),
so a revoked key is refused without a restart.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args

log = logging.getLogger(__name__)

KEY_PREFIX = "mmrag_"
FILE_VERSION = 1
Role = Literal["reader", "writer", "admin", "operator"]
ROLES: tuple[str, ...] = get_args(Role)
# A role may do what the roles before it may (reader < writer < admin < operator). `admin` manages its own
# tenant (its documents); `operator` runs the deployment (re-index start, cancel, list: every tenant's counts).
# No key is an operator unless made so (`mmrag keys create --role operator`): an existing `admin` stays a
# tenant's admin.
ROLE_RANK = {role: rank for rank, role in enumerate(ROLES)}
TENANT = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")
_HEX64 = re.compile(r"^[0-9a-f]{64}\Z")


class KeysFileError(ValueError):
    """The keys file (or `MMRAG_API_KEYS`) is not valid; the message says where and why."""


@dataclass(frozen=True)
class ApiKey:
    """One entry of the keys file: everything about a key but the key itself."""

    id: str
    tenant: str
    role: str
    sha256: str
    created_at: str
    revoked: bool = False

    @classmethod
    def from_json(cls, raw: object, where: str) -> ApiKey:
        if not isinstance(raw, dict):
            raise KeysFileError(f"{where}: an entry is not an object")
        try:
            entry = cls(
                id=str(raw["id"]), tenant=str(raw["tenant"]), role=str(raw["role"]), sha256=str(raw["sha256"]).lower(),
                created_at=str(raw.get("created_at", "")), revoked=bool(raw.get("revoked", False)),
            )  # fmt: skip
        except KeyError as missing:
            raise KeysFileError(f"{where}: an entry has no {missing}") from None
        if not TENANT.match(entry.tenant):
            raise KeysFileError(f"{where}: key {entry.id}: invalid tenant {entry.tenant!r}")
        if entry.role not in ROLES:
            raise KeysFileError(f"{where}: key {entry.id}: role must be one of {', '.join(ROLES)}")
        if not _HEX64.match(entry.sha256):
            raise KeysFileError(f"{where}: key {entry.id}: sha256 must be 64 hex digits")
        return entry


def generate_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_keys(text: str, where: str) -> list[ApiKey]:
    """The entries of a keys document (``{"version": 1, "keys": [...]}``, or just the list)."""
    if not text.strip():
        return []
    try:
        data = json.loads(text)
    except ValueError as err:
        raise KeysFileError(f"{where}: not JSON ({err})") from None
    entries = data.get("keys") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise KeysFileError(f'{where}: expected {{"keys": [...]}}')
    keys = [ApiKey.from_json(raw, where) for raw in entries]
    ids = [k.id for k in keys]
    if len(set(ids)) != len(ids):
        raise KeysFileError(f"{where}: duplicate key ids")
    return keys


def load_file(path: Path) -> list[ApiKey]:
    """The file's entries; none if it does not exist."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return parse_keys(text, str(path))


def save_file(path: Path, keys: list[ApiKey]) -> None:
    """Write atomically (a reader sees the old file or the new one), readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"version": FILE_VERSION, "keys": [asdict(k) for k in keys]}, indent=2) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def create_key(path: Path, tenant: str, role: str) -> tuple[ApiKey, str]:
    """Add a new key to the file; returns its entry and the key (the only time the key exists in clear)."""
    if not TENANT.match(tenant):
        raise KeysFileError(f"invalid tenant {tenant!r}: 1 to 64 of A-Z a-z 0-9 _ -")
    if role not in ROLES:
        raise KeysFileError(f"invalid role {role!r}: one of {', '.join(ROLES)}")
    keys = load_file(path)
    key = generate_key()
    entry = ApiKey(
        id="k_" + secrets.token_hex(6), tenant=tenant, role=role, sha256=hash_key(key),
        created_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
    )  # fmt: skip
    save_file(path, [*keys, entry])
    return entry, key


def revoke_key(path: Path, key_id: str) -> ApiKey:
    """Mark a key revoked (kept in the file, so `list` still shows it). KeyError if there is no such id."""
    keys = load_file(path)
    for i, entry in enumerate(keys):
        if entry.id == key_id:
            keys[i] = replace(entry, revoked=True)
            save_file(path, keys)
            return keys[i]
    raise KeyError(key_id)


class KeyRing:
    """The keys the edge API accepts: those of `MMRAG_API_KEYS` plus those of the file, re-read when it changes.

    The file is stat'ed on every lookup (cheap); when its (mtime, size, inode) changed it is parsed again. A file
    that becomes invalid is logged and then contributes NO keys (fail closed) until it is fixed.
    """

    def __init__(self, path: Path | None, env_text: str = "") -> None:
        self.path = path
        self._env_keys = parse_keys(env_text, "MMRAG_API_KEYS")
        self._file_keys: list[ApiKey] = []
        self._signature: tuple[int, int, int] | None = None
        if path is not None:
            self._file_keys = load_file(path)  # invalid at start: raise, the API refuses to start
            self._signature = self._stat()

    @property
    def configured(self) -> bool:
        """Some key source is configured (a file path, even of a file not created yet, or env keys)."""
        return self.path is not None or bool(self._env_keys)

    def _stat(self) -> tuple[int, int, int] | None:
        assert self.path is not None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _refresh(self) -> None:
        if self.path is None:
            return
        signature = self._stat()
        if signature == self._signature:
            return
        self._signature = signature
        try:
            self._file_keys = load_file(self.path)
        except (KeysFileError, OSError) as err:
            log.error("API keys file unusable, no key from it is accepted until it is fixed: %s", err)
            self._file_keys = []
        else:
            log.info("API keys file %s reloaded: %d keys", self.path, len(self._file_keys))

    def keys(self) -> list[ApiKey]:
        self._refresh()
        return [*self._env_keys, *self._file_keys]

    def valid_ids(self) -> set[str]:
        """The ids of the keys accepted now (as `lookup` decides: a key revoked anywhere is not)."""
        keys = self.keys()
        revoked = {entry.sha256 for entry in keys if entry.revoked}
        return {entry.id for entry in keys if entry.sha256 not in revoked}

    def lookup(self, presented: str) -> ApiKey | None:
        """The entry of this key, or None if unknown or revoked (anywhere). Each comparison is constant-time."""
        digest = hash_key(presented)
        matches = [entry for entry in self.keys() if hmac.compare_digest(entry.sha256, digest)]
        if not matches or any(entry.revoked for entry in matches):
            return None
        return matches[0]
