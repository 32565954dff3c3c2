"""Settings of the edge API process. Every field is documented in `docs/configuration.md`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from bus.settings import ProcessSettings


# The addresses where "auth off" is allowed: only this machine can reach a server bound there.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def _csv(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


class EdgeSettings(ProcessSettings):
    model_config = SettingsConfigDict(env_prefix="MMRAG_", env_file=".env", extra="ignore", frozen=True)

    host: str = Field(default="127.0.0.1", description="address the HTTP server binds")
    port: int = Field(default=8080, ge=0, le=65535, description="HTTP port (0 = pick a free one)")
    max_upload_bytes: int = Field(default=100 * 1024 * 1024, ge=1, description="largest accepted upload (413 beyond)")
    max_query_image_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1, description="largest image accepted by /v1/search (413 beyond)"
    )
    default_tenant: str = Field(default="default", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="tenant of requests")
    query_timeout_s: float = Field(
        default=30.0, gt=0, description="longest wait for the next event of an ask/search before giving up"
    )
    allowed_origins: str = Field(
        default="",
        description="comma-separated origins (scheme://host[:port]) allowed to POST/DELETE from a browser; "
        "empty = same origin and http(s)://localhost|127.0.0.1|[::1] on this server's port",
    )
    allowed_hosts: str = Field(
        default="",
        description="comma-separated Host names (optionally name:port) this server answers to; "
        "empty = localhost, 127.0.0.1, ::1 and MMRAG_HOST; '*' = any (turns off the DNS-rebinding check)",
    )
    sse_ping_s: float = Field(default=15.0, gt=0, description="interval of keep-alive comments on an SSE stream")
    index_generation: int = Field(default=1, ge=1, description="index generation whose progress records are served")
    auth: Literal["on", "off"] = Field(
        default="on",
        description="on: every request but the probes, /metrics and the API description needs an API key "
        "(401/403); off: every request is the default tenant's admin (what `mmrag up` uses on loopback without "
        "--auth); refused unless MMRAG_HOST is a loopback address",
    )
    api_keys_file: str = Field(
        default="",
        description="path of the JSON keys file (`mmrag keys create`); re-read when it changes, so a revoke "
        "takes effect without a restart",
    )
    api_keys: str = Field(
        default="", description="the same JSON as the keys file, for a Kubernetes Secret as env (read at start)"
    )

    rate_limit_per_minute: float = Field(
        default=0.0,
        ge=0,
        description="tokens a minute refilled into each caller's bucket (API key, or client IP "
        "with auth off); 0 = no rate limit",
    )
    tenant_max_documents: int | None = Field(
        default=None,
        ge=1,
        le=10**12,
        description="documents (not deleted) one tenant may hold; an upload beyond is 413 `quota_exceeded`; "
        "unset = unlimited",
    )
    tenant_max_bytes: int | None = Field(
        default=None,
        ge=1,
        le=2**62,
        description="bytes of uploads (not deleted) one tenant may hold; an upload beyond is 413 "
        "`quota_exceeded`; unset = unlimited",
    )
    tenant_max_pages: int | None = Field(
        default=None,
        ge=1,
        le=2**62,
        description="pages (of the documents the parser has read, not deleted) one tenant may hold; once they "
        "reach it an upload is 413 `quota_exceeded`; unset = unlimited",
    )
    max_streams_per_caller: int = Field(
        default=16,
        ge=1,
        le=10_000,
        description="concurrent streams (ask, progress, re-index events) one caller (API key, or client IP with "
        "auth off) may hold open on one edge replica; one more is 429 `too_many_streams` with Retry-After",
    )
    rate_limit_burst: int = Field(default=30, ge=1, description="tokens a full bucket holds: the largest burst")
    redis_url: str = Field(
        default="",
        description="Redis holding the rate-limit buckets and the answer cache, shared by every edge replica; "
        "empty = in-process buckets and no answer cache",
    )
    cache: Literal["on", "off"] = Field(
        default="on", description="answer cache of /v1/search and /v1/ask in MMRAG_REDIS_URL (no Redis = no cache)"
    )
    cache_ttl_s: int = Field(default=300, ge=1, description="seconds a cached search result or answer is kept")
    conversation_max_turns: int = Field(
        default=50,
        ge=1,
        le=50,
        description="turns one conversation may hold; an ask beyond is 409 `conversation_full` (start a new one). "
        "At most 50: a conversation's turns are one KV value, which must stay under NATS' 1 MiB message size",
    )
    conversations_per_key: int = Field(
        default=100,
        ge=1,
        le=10_000,
        description="conversations one API key (with auth off: the single local user) may keep; creating one more "
        "is 409 `too_many_conversations` (delete one). Conversations nobody used for 90 days are dropped",
    )
    rate_limit_redis_timeout_s: float = Field(
        default=0.2, gt=0, description="socket timeout of a Redis call; past it the request is let through (fail-open)"
    )

    @field_validator("tenant_max_documents", "tenant_max_bytes", "tenant_max_pages", mode="before")
    @classmethod
    def _empty_is_unlimited(cls, value: object) -> object:
        """`MMRAG_TENANT_MAX_BYTES=` (as in .env.example) means unset: no quota."""
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _auth_off_only_on_loopback(self) -> EdgeSettings:
        """Auth off makes every caller the default tenant's admin: never on an address another machine can reach."""
        if self.auth == "off" and self.host.lower() not in LOOPBACK_HOSTS:
            raise ValueError(
                f"MMRAG_AUTH=off with MMRAG_HOST={self.host} would serve every caller on the network as admin: "
                "set MMRAG_AUTH=on (API keys: `mmrag keys create`) or bind MMRAG_HOST to 127.0.0.1"
            )
        return self

    @property
    def origins(self) -> tuple[str, ...]:
        return tuple(o.lower().rstrip("/") for o in _csv(self.allowed_origins))

    @property
    def hosts(self) -> tuple[str, ...]:
        return tuple(h.lower() for h in _csv(self.allowed_hosts))
