"""The edge API's routes, one module per resource; each exposes `add_routes(app)`."""
