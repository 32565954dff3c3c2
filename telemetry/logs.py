"""Logging of every mmrag process, in one place: structlog, JSON lines (or a console rendering).

`configure_logging` is called by the CLI (`mmrag up`, `mmrag agent`...), by ``python -m edge_api`` and by the
agent host. Every record, whether written with structlog or with the stdlib ``logging.getLogger(...)`` calls
the code base uses, goes through the same processors (`structlog.stdlib.ProcessorFormatter`) and carries:

- ``timestamp`` (ISO 8601, UTC), ``level``, ``logger``, ``event`` (the message text, unchanged);
- ``trace_id`` / ``span_id`` of the current OpenTelemetry span, when there is one;
- what is bound in `structlog.contextvars` meanwhile: ``request_id`` and ``tenant`` (edge API, per request),
  ``agent``, ``durable``, ``subject`` (and ``tenant``, ``request_id``, ``doc_id`` of a message) in a worker.

``MMRAG_LOG_FORMAT``: ``json`` (one JSON object a line) or ``console`` (human-readable); unset = ``console``
when stderr is a terminal, ``json`` otherwise (containers, log files, `mmrag up`'s children).
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Literal

import structlog

from telemetry.tracing import current_ids

LogFormat = Literal["json", "console"]
LOG_FORMAT_ENV = "MMRAG_LOG_FORMAT"

_handler: logging.Handler | None = None


def add_trace_ids(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Add the current span's trace id and span id (the keys are left alone if already there)."""
    ids = current_ids()
    if ids is not None:
        event_dict.setdefault("trace_id", ids[0])
        event_dict.setdefault("span_id", ids[1])
    return event_dict


def resolve_format(fmt: str | None = None) -> LogFormat:
    value = (fmt or os.environ.get(LOG_FORMAT_ENV) or "").strip().lower()
    if value in ("json", "console"):
        return value  # type: ignore[return-value]
    if value:
        raise ValueError(f"{LOG_FORMAT_ENV} must be 'json' or 'console', not {value!r}")
    return "console" if sys.stderr.isatty() else "json"


def configure_logging(level: int = logging.INFO, fmt: str | None = None) -> LogFormat:
    """Route every log record of this process to stderr, rendered as `fmt`; idempotent (a second call
    replaces the handler of the first). Returns the format chosen."""
    global _handler
    chosen = resolve_format(fmt)
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        add_trace_ids,
    ]
    renderer: Any
    if chosen == "json":
        # One line per record: a traceback becomes a string field ("exception").
        renderer = structlog.processors.JSONRenderer(ensure_ascii=False)
        tail: list[Any] = [structlog.processors.format_exc_info]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        tail = []
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *tail, renderer],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    root.addHandler(handler)
    root.setLevel(level)
    _handler = handler
    structlog.configure(
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return chosen


def logging_configured() -> bool:
    return _handler is not None
