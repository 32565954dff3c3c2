"""NATS credentials and nats-server's authorization config, in the data dir (`mmrag up`, `mmrag nats-user`).

Layout (``<data dir>/nats-auth``, mode 0700; every file 0600)::

    agents.json, edge.json, admin.json   {"user": ..., "password": ...}: one credential per identity
    tenants/<tenant>.json                 external publishers of one tenant (`mmrag nats-user create`)
    nats-server.conf                      the ``authorization`` block nats-server runs with (JSON, which the NATS
                                          config format accepts), rewritten from the credentials at every start

Passwords are random (256 bits) and written once; the permissions come from `bus.identities` every time the
config is written, so an upgrade that changes the topology changes the permissions with it.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from bus.identities import ADMIN, ROLES, Permissions, identity_permissions, tenant_permissions, tenant_user
from contracts.topology import check_token

AUTH_DIR = "nats-auth"
CONFIG_NAME = "nats-server.conf"
PID_NAME = "nats-server.pid"
TENANTS_DIR = "tenants"
AGENTS = "agents"  # `mmrag up`'s agents process: every agent role and the re-index coordinator
EDGE = "edge"
# Which roles each identity of `mmrag up` holds (`bus.identities`); `admin` is not a role but full access.
LOCAL_IDENTITIES: dict[str, tuple[str, ...]] = {AGENTS: tuple(r for r in ROLES if r != "edge"), EDGE: ("edge",)}


@dataclass(frozen=True)
class Credential:
    user: str
    password: str

    def url(self, host: str, port: int) -> str:
        return f"nats://{self.user}:{self.password}@{host}:{port}"

    def env(self) -> dict[str, str]:
        """What a child process reads it from (`bus.settings.ProcessSettings`)."""
        return {"MMRAG_NATS_USER": self.user, "MMRAG_NATS_PASSWORD": self.password}


def _private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)  # also when it existed with the umask's mode
    return path


def _write_private(path: Path, text: str) -> None:
    """Write `text` to a 0600 file atomically (never readable by others, not even for a moment)."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def auth_dir(data_dir: Path) -> Path:
    return data_dir / AUTH_DIR


def _ensure_auth_dir(data_dir: Path) -> Path:
    if not data_dir.exists():  # a new data dir is this user's only, like `mmrag up` makes it (mmrag.datadir)
        data_dir.mkdir(parents=True, mode=0o700)
    return _private_dir(auth_dir(data_dir))


def _credential(path: Path, user: str) -> Credential:
    """The credential stored at `path`, created with a random password if there is none."""
    if path.exists():
        data = json.loads(path.read_text())
        return Credential(data["user"], data["password"])
    cred = Credential(user, secrets.token_urlsafe(32))
    _write_private(path, json.dumps({"user": cred.user, "password": cred.password}) + "\n")
    return cred


def stored_credential(data_dir: Path, name: str) -> Credential | None:
    """Identity `name`'s credential if `mmrag up` has written it (``admin``: the operator's, for inspection)."""
    path = auth_dir(data_dir) / f"{name}.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    return Credential(data["user"], data["password"])


def local_credentials(data_dir: Path) -> dict[str, Credential]:
    """The credentials of `mmrag up`'s identities (agents, edge, admin), created on first use."""
    folder = _ensure_auth_dir(data_dir)
    return {name: _credential(folder / f"{name}.json", name) for name in (*LOCAL_IDENTITIES, ADMIN)}


def tenant_credential(data_dir: Path, tenant: str) -> Credential:
    """Tenant `tenant`'s external-publisher credential (created on first use; the same one afterwards)."""
    folder = _private_dir(_ensure_auth_dir(data_dir) / TENANTS_DIR)
    return _credential(folder / f"{check_token(tenant, 'tenant')}.json", tenant_user(tenant))


async def create_tenant_bucket(data_dir: Path, url: str, tenant: str, *, within_s: float = 5.0) -> str:
    """Create `tenant`'s uploads bucket on the engine's NATS at `url` (with this data dir's admin credential, if
    it has one); returns the bucket's name. Raises if the engine is not reachable within `within_s`."""
    from bus.connection import connect
    from bus.uploads import ensure_uploads_bucket
    from contracts.topology import uploads_bucket

    admin = stored_credential(data_dir, ADMIN)
    nc = await connect(url, name="mmrag-nats-user", connect_within_s=within_s,
                       user=admin.user if admin else None, password=admin.password if admin else None)  # fmt: skip
    try:
        await ensure_uploads_bucket(nc.jetstream(), tenant)
        return uploads_bucket(tenant)
    finally:
        await nc.close()


def _tenants(data_dir: Path) -> dict[str, Credential]:
    folder = auth_dir(data_dir) / TENANTS_DIR
    if not folder.is_dir():
        return {}
    return {p.stem: tenant_credential(data_dir, p.stem) for p in sorted(folder.glob("*.json"))}


def _publish_rules(perms: Permissions) -> dict[str, list[str]]:
    """nats-server's ``publish`` block: ``allow``, and ``deny`` (which wins) where the identity has denials."""
    rules = {"allow": sorted(perms.publish)}
    if perms.deny_publish:
        rules["deny"] = sorted(perms.deny_publish)
    return rules


def _user_entry(cred: Credential, perms: Permissions | None) -> dict[str, object]:
    entry: dict[str, object] = {"user": cred.user, "password": cred.password}
    if perms is not None:  # None: full access (admin)
        entry["permissions"] = {"publish": _publish_rules(perms), "subscribe": {"allow": sorted(perms.subscribe)}}
    return entry


def authorization(users: Iterable[tuple[Credential, Permissions | None]]) -> dict[str, object]:
    """nats-server's ``authorization`` block for these users (permissions None: full access)."""
    return {"authorization": {"users": [_user_entry(cred, perms) for cred, perms in users]}}


def server_config(data_dir: Path) -> dict[str, object]:
    """nats-server's config with every identity of this data dir and its permissions."""
    creds = local_credentials(data_dir)
    users: list[tuple[Credential, Permissions | None]] = [
        (creds[name], identity_permissions(name, roles)) for name, roles in LOCAL_IDENTITIES.items()
    ]
    users.append((creds[ADMIN], None))
    users += [(cred, tenant_permissions(tenant)) for tenant, cred in _tenants(data_dir).items()]
    return authorization(users)


def write_server_config(data_dir: Path) -> Path:
    """(Re)write ``nats-auth/nats-server.conf`` for nats-server's ``-c``; returns its path."""
    path = _ensure_auth_dir(data_dir) / CONFIG_NAME
    _write_private(path, json.dumps(server_config(data_dir), indent=1) + "\n")
    return path


def pid_file(data_dir: Path) -> Path:
    return auth_dir(data_dir) / PID_NAME


def reload_server(data_dir: Path) -> bool:
    """Ask a running nats-server of this data dir to re-read its config (SIGHUP); False if none runs."""
    try:
        pid = int(pid_file(data_dir).read_text().strip())
        # A stale pid file may name another process by now: only a nats-server gets the signal.
        if b"nats-server" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return False
        os.kill(pid, signal.SIGHUP)
    except (OSError, ValueError):
        return False
    return True


# -- deployments with one process per role (compose, Kubernetes) -------------------------------------------------

# Identity -> roles; `mmrag agent indexer` also runs the re-index coordinator (`mmrag.registry`).
DEPLOYMENT_IDENTITIES: dict[str, tuple[str, ...]] = {
    **{role: (role,) for role in ROLES if role != "reindexer"},
    "indexer": ("indexer", "reindexer"),
}
# Where the rendered users live (`python -m mmrag.natsauth` rewrites them; tests/unit/test_infra.py compares).
DEPLOYMENT_FILES = ("infra/compose/nats-auth.conf", "infra/k8s/base/nats-auth.conf")


def password_variable(user: str) -> str:
    """The environment variable that holds `user`'s password for nats-server (set from a Secret)."""
    return f"MMRAG_NATS_PASSWORD_{user.upper()}"


def _conf(rules: dict[str, list[str]]) -> str:
    return "{" + ", ".join(f"{k}: {json.dumps(v)}" for k, v in rules.items()) + "}"


def deployment_authorization() -> str:
    """nats-server config text with the users of `DEPLOYMENT_IDENTITIES`; each password is read from the
    environment variable `password_variable(user)` (nats-server resolves ``$NAME`` from its environment)."""
    lines = [
        "# Generated by `python -m mmrag.natsauth` from bus/identities.py: do not edit (tests/unit/test_infra.py compares).",
        "# One NATS user per role; passwords come from the environment (MMRAG_NATS_PASSWORD_<USER>, from a Secret).",
        "authorization {",
        "  users: [",
    ]
    for user, roles in DEPLOYMENT_IDENTITIES.items():
        perms = identity_permissions(user, roles)
        lines += [
            "    {",
            f"      user: {json.dumps(user)}",
            f"      password: ${password_variable(user)}",
            "      permissions: {",
            f"        publish: {_conf(_publish_rules(perms))}",
            f"        subscribe: {{allow: {json.dumps(sorted(perms.subscribe))}}}",
            "      }",
            "    }",
        ]
    lines += ["  ]", "}", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    root = Path(__file__).resolve().parent.parent
    for name in DEPLOYMENT_FILES:
        (root / name).write_text(deployment_authorization())
        print(f"wrote {name}")
