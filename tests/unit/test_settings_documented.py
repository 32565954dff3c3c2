"""Every setting is documented, with its environment variable, in docs/configuration.md and .env.example."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_settings import BaseSettings

from agents.settings import AgentSettings
from edge_api.settings import EdgeSettings

ROOT = Path(__file__).resolve().parents[2]


def env_names(settings: type[BaseSettings]) -> list[str]:
    names = []
    for name, field in settings.model_fields.items():
        alias = field.validation_alias
        names.append(alias.choices[0] if alias is not None else f"MMRAG_{name.upper()}")  # type: ignore[union-attr]
    return names


@pytest.mark.parametrize("settings", [AgentSettings, EdgeSettings])
def test_every_setting_is_documented(settings: type[BaseSettings]) -> None:
    docs = (ROOT / "docs" / "configuration.md").read_text()
    example = (ROOT / ".env.example").read_text()
    for env in env_names(settings):
        assert f"`{env}`" in docs, f"{env} missing from docs/configuration.md"
        assert f"\n{env}=" in example, f"{env} missing from .env.example"


def test_environment_reaches_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATS_URL", "nats://example:1")
    monkeypatch.setenv("MMRAG_FETCH_BATCH", "3")
    monkeypatch.setenv("MMRAG_MAX_UPLOAD_BYTES", "10")
    assert AgentSettings().nats_url == "nats://example:1" and AgentSettings().fetch_batch == 3
    assert EdgeSettings().nats_url == "nats://example:1" and EdgeSettings().max_upload_bytes == 10
