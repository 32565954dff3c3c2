"""The edge API's settings refuse what would open the API to a network."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edge_api.settings import EdgeSettings


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "[::1]"])
def test_auth_off_is_allowed_on_loopback(host: str) -> None:
    assert EdgeSettings(auth="off", host=host).auth == "off"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "edge.example.com"])
def test_auth_off_on_an_address_others_reach_is_refused_naming_the_fix(host: str) -> None:
    with pytest.raises(ValidationError) as refused:
        EdgeSettings(auth="off", host=host)
    assert "MMRAG_AUTH=on" in str(refused.value) and "127.0.0.1" in str(refused.value)
    assert EdgeSettings(auth="on", host=host).auth == "on"
