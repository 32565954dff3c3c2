"""`python -m edge_api`: serve the edge API with settings from the environment (MMRAG_HOST, MMRAG_PORT, NATS_URL...)."""

from __future__ import annotations

from edge_api.app import create_app
from edge_api.serving import run
from edge_api.settings import EdgeSettings
from telemetry.logs import configure_logging
from telemetry.tracing import configure_tracing


def main() -> None:
    settings = EdgeSettings()
    configure_logging(fmt=settings.log_format)
    configure_tracing("mmrag-edge-api", endpoint=settings.otel_endpoint, sample_ratio=settings.otel_sample_ratio)
    run(create_app(settings), host=settings.host, port=settings.port, access_log=None)


if __name__ == "__main__":
    main()
