"""The settings every mmrag process shares (NATS, traces, logs): one definition, inherited by `AgentSettings` and
`EdgeSettings`, so the two can never disagree on a name, a default or a meaning."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ProcessSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MMRAG_", env_file=".env", extra="ignore", frozen=True)

    nats_url: str = Field(
        default="nats://127.0.0.1:4222",
        validation_alias=AliasChoices("NATS_URL", "MMRAG_NATS_URL"),
        description="NATS server(s), comma-separated",
    )
    nats_user: str | None = Field(
        default=None,
        description="NATS user of this process (its role's identity; `mmrag up` sets it for its children); unset = "
        "the user of the URL, if any",
    )
    nats_password: SecretStr | None = Field(default=None, description="password of MMRAG_NATS_USER")
    otel_endpoint: str | None = Field(
        default=None,
        description="OTLP/HTTP collector for traces (a base URL gets /v1/traces); unset = spans are made but not exported",
    )
    otel_sample_ratio: float = Field(
        default=1.0, ge=0.0, le=1.0, description="share of new traces recorded; a hop follows its parent's decision"
    )
    log_format: Literal["", "json", "console"] = Field(
        default="", description="json or console; empty = console on a terminal, json otherwise (telemetry.logs)"
    )

    def nats_credentials(self) -> tuple[str | None, str | None]:
        """(user, password) for `bus.connection.connect`; (None, None) = whatever the URL carries."""
        return self.nats_user, self.nats_password.get_secret_value() if self.nats_password else None
    redis_timeout_s: float = Field(
        default=0.25,
        gt=0,
        le=30,
        description="connect and read timeout of every answer-cache call to MMRAG_REDIS_URL (the edge API's lookups, "
        "the indexer's epoch renewals); past it the caller goes on without the cache",
    )
