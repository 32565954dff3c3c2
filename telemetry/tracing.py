"""OpenTelemetry tracing: the tracer provider of a process, and the W3C trace context in NATS headers.

One `ask` and one upload are each one trace: the edge API starts it (a SERVER span per HTTP request,
`edge_api.tracing`), `bus.publish` injects the current context into the ``traceparent`` header of every
message, and each agent's `PullWorker` continues it (a CONSUMER span per handled message, a child of the
message's context; a batch gets one span with a *link* to each message's context).

Settings (`MMRAG_OTEL_ENDPOINT`, `MMRAG_OTEL_SAMPLE_RATIO`, docs/configuration.md): with no endpoint, spans
are still made (their trace ids reach the logs and the next hop) but exported nowhere. Sampling is
parent-based: a hop follows the decision of the trace it continues, so a trace is never half-recorded.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from urllib.parse import urlsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from contracts.topology import HEADER_TRACEPARENT

log = logging.getLogger(__name__)

TRACER_NAME = "mmrag"
HEADER_TRACESTATE = "tracestate"
_propagator = TraceContextTextMapPropagator()
_provider: TracerProvider | None = None


def traces_url(endpoint: str) -> str:
    """An OTLP/HTTP endpoint given as a base URL (``http://collector:4318``) gets the traces path."""
    return endpoint.rstrip("/") + "/v1/traces" if urlsplit(endpoint).path in ("", "/") else endpoint


def configure_tracing(
    service_name: str,
    *,
    endpoint: str | None = None,
    sample_ratio: float = 1.0,
    exporter: SpanExporter | None = None,
) -> TracerProvider:
    """Install this process's tracer provider (once; a later call only adds exporters) and return it.

    `endpoint`: OTLP/HTTP collector (spans batched in the background); `exporter`: any other exporter, fed
    synchronously (tests use the SDK's in-memory one).
    """
    global _provider
    if _provider is None:
        _provider = TracerProvider(
            resource=Resource.create({"service.name": service_name}),
            sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
        )
        trace.set_tracer_provider(_provider)
    if endpoint:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=traces_url(endpoint))))
        log.info("exporting traces of %s to %s (sample ratio %s)", service_name, traces_url(endpoint), sample_ratio)
    if exporter is not None:
        _provider.add_span_processor(SimpleSpanProcessor(exporter))
    return _provider


def flush_tracing(timeout_ms: int = 5000) -> None:
    """Export what is buffered (at the end of a process; the provider also flushes at exit)."""
    if _provider is not None:
        _provider.force_flush(timeout_ms)


def tracer() -> trace.Tracer:
    return trace.get_tracer(TRACER_NAME)


def inject(headers: MutableMapping[str, str], ctx: otel_context.Context | None = None) -> MutableMapping[str, str]:
    """Write the W3C trace context of `ctx` (default: the current one) into `headers`; nothing if no span."""
    _propagator.inject(headers, context=ctx)
    return headers


def extract(headers: Mapping[str, str] | None) -> otel_context.Context:
    """The context carried by `headers` (an empty context if none or an invalid one): the parent of a hop."""
    return _propagator.extract(dict(headers or {}))


def has_trace_context(headers: Mapping[str, str] | None) -> bool:
    return bool(headers) and HEADER_TRACEPARENT in headers  # type: ignore[operator]


def span_context_of(ctx: otel_context.Context) -> trace.SpanContext | None:
    """The remote span context in `ctx`, if valid (what a batch span links to)."""
    sc = trace.get_current_span(ctx).get_span_context()
    return sc if sc.is_valid else None


def current_ids() -> tuple[str, str] | None:
    """(trace id, span id) of the current span in hex, or None (for the logs)."""
    sc = trace.get_current_span().get_span_context()
    if not sc.is_valid:
        return None
    return format(sc.trace_id, "032x"), format(sc.span_id, "016x")
