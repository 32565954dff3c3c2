"""`python -m edge_api`: serve the edge API with settings from the environment (MMRAG_HOST, MMRAG_PORT, NATS_URL...)."""

from __future__ import annotations

import logging

from aiohttp import web

from edge_api.app import create_app
from edge_api.settings import EdgeSettings


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = EdgeSettings()
    web.run_app(create_app(settings), host=settings.host, port=settings.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
