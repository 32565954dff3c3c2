"""mmrag: the composition root. The `mmrag` CLI, `mmrag up` (supervises nats-server, the agents and the edge
API) and the HTTP client the CLI uses. The only package that knows every part."""
