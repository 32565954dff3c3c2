"""mmrag edge API: the aiohttp application (`create_app`) and its process entry point (`python -m edge_api`)."""

from edge_api.app import create_app
from edge_api.settings import EdgeSettings

__all__ = ["EdgeSettings", "create_app"]
