"""Prometheus metrics of every mmrag process: the one place that names them, their labels and their buckets.

The edge API serves them on its own ``GET /metrics``; an agent process serves them on ``MMRAG_METRICS_PORT``
(`agents.runtime.metrics_server`). Both read prometheus_client's default registry, which also carries the
client's process and GC metrics (``process_cpu_seconds_total``, ``process_resident_memory_bytes``...).

| metric | labels | updated by |
|---|---|---|
| ``mmrag_http_requests_total`` | method, route, status | edge API middleware (`edge_api.metrics`) |
| ``mmrag_http_request_seconds`` | method, route | edge API middleware; an SSE answer counts until its stream ends |
| ``mmrag_messages_handled_total`` | agent, durable, outcome | `PullWorker`, once per message and outcome |
| ``mmrag_handler_seconds`` | agent, durable | `PullWorker`, per handler call (a batch, or one message of a batch retried alone) |
| ``mmrag_batch_size`` | agent, durable | `PullWorker`, messages per fetch |
| ``mmrag_dead_letters_total`` | durable, error_type | `PullWorker`, per dead-letter record stored (poison included) |
| ``mmrag_ratelimited_total`` | route | edge API rate limit (`edge_api.ratelimit`), per 429 |
| ``mmrag_ratelimit_failopen_total`` | | edge API rate limit, per request let through because Redis failed |
| ``mmrag_answer_cache_total`` | route, result | edge API answer cache (`edge_api.cache`): hit, miss, unavailable |
| ``mmrag_consumer_pending`` | stream, durable | agent process, from ``consumer_info`` every few seconds |
| ``mmrag_consumer_ack_pending`` | stream, durable | same |

Label values stay bounded: ``route`` is the aiohttp route's canonical path (``/v1/documents/{doc_id}``, never
the raw path; unmatched requests are ``other``), ``durable`` and ``agent`` come from the topology,
``error_type`` is an exception class name.

Outcomes (``mmrag_messages_handled_total``): ``ack`` (handled, acked), ``transient`` (failed, left to the
server's redelivery), ``dead_letter`` (a permanent failure, or a transient one at ``max_deliver``, recorded
then TERMed), ``poison`` (did not validate or travelled on another tenant's subject, recorded then TERMed).

The consumer gauges are the autoscaling signal. Every replica that consumes a durable reports the same
server-side numbers for it, so aggregate them with ``max`` (or ``avg``) by durable, never ``sum``.
"""

from __future__ import annotations

from typing import Literal

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import choose_encoder

# ``*_created`` series double the series count and nothing here reads them.
disable_created_metrics()

Outcome = Literal["ack", "transient", "dead_letter", "poison"]
OUTCOMES: tuple[Outcome, ...] = ("ack", "transient", "dead_letter", "poison")

# Uploads stream and SSE answers last as long as the answer: the buckets reach a minute.
_HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# An OCR or embedding batch can take minutes on a busy CPU.
_HANDLER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
# fetch_batch is at most 256.
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

HTTP_REQUESTS = Counter("mmrag_http_requests", "HTTP requests answered by the edge API", ("method", "route", "status"))
HTTP_REQUEST_SECONDS = Histogram(
    "mmrag_http_request_seconds", "time to answer an HTTP request (to the end of its stream)", ("method", "route"),
    buckets=_HTTP_BUCKETS,
)  # fmt: skip
MESSAGES_HANDLED = Counter(
    "mmrag_messages_handled", "messages settled by an agent's worker, by outcome", ("agent", "durable", "outcome")
)
HANDLER_SECONDS = Histogram(
    "mmrag_handler_seconds", "time of one handler call on a batch of messages", ("agent", "durable"),
    buckets=_HANDLER_BUCKETS,
)  # fmt: skip
BATCH_SIZE = Histogram(
    "mmrag_batch_size", "messages fetched and processed together", ("agent", "durable"), buckets=_BATCH_BUCKETS
)
DEAD_LETTERS = Counter("mmrag_dead_letters", "dead-letter records stored", ("durable", "error_type"))
LLM_FALLBACKS = Counter(
    "mmrag_llm_fallbacks",
    "LLM providers that failed or were skipped and handed over to the next link, by stage (before_first_token | "
    "mid_stream | circuit_open: not called, its circuit breaker is open)",
    ("provider", "stage"),
)
LLM_CIRCUIT_OPEN = Gauge(
    "mmrag_llm_circuit_open",
    "1 while an LLM provider's circuit breaker is open or half-open (not called, or one trial request), else 0",
    ("provider",),
)
RERANK_SHED = Counter(
    "mmrag_rerank_shed",
    "searches ranked by the lexical scorer instead of the configured one because their rerank request waited "
    "longer than MMRAG_RERANK_SEARCH_QUEUE_BUDGET_S in the reranker's queue",
)
RATELIMITED = Counter("mmrag_ratelimited", "requests refused with 429 by the edge API's rate limit", ("route",))
RATELIMIT_FAILOPEN = Counter(
    "mmrag_ratelimit_failopen", "requests let through unlimited because the rate limit's Redis failed (fail-open)"
)
ANSWER_CACHE = Counter(
    "mmrag_answer_cache",
    "answer cache lookups of /v1/search and /v1/ask by result (hit | miss | unavailable: Redis failed)",
    ("route", "result"),
)
CONSUMER_PENDING = Gauge(
    "mmrag_consumer_pending", "messages of a durable consumer not yet delivered (its backlog)", ("stream", "durable")
)
CONSUMER_ACK_PENDING = Gauge(
    "mmrag_consumer_ack_pending", "messages of a durable consumer delivered and not yet acked", ("stream", "durable")
)


class WorkerMetrics:
    """The series of one worker (one agent on one durable consumer), bound once.

    Its outcome counters exist from the start at 0, so ``rate()`` sees the first increment.
    """

    def __init__(self, agent: str, durable: str) -> None:
        self._durable = durable
        self._handled = {outcome: MESSAGES_HANDLED.labels(agent, durable, outcome) for outcome in OUTCOMES}
        self.handler_seconds = HANDLER_SECONDS.labels(agent, durable)
        self.batch_size = BATCH_SIZE.labels(agent, durable)

    def count(self, outcome: Outcome, n: int = 1) -> None:
        self._handled[outcome].inc(n)

    def dead_letter(self, error_type: str) -> None:
        DEAD_LETTERS.labels(self._durable, error_type).inc()


def set_consumer_state(stream: str, durable: str, pending: int, ack_pending: int) -> None:
    CONSUMER_PENDING.labels(stream, durable).set(pending)
    CONSUMER_ACK_PENDING.labels(stream, durable).set(ack_pending)


def forget_consumer_state(stream: str, durable: str) -> None:
    """Drop a consumer's gauges (its state is unknown): no series beats a stale one for an autoscaler."""
    CONSUMER_PENDING.remove(stream, durable)
    CONSUMER_ACK_PENDING.remove(stream, durable)


def exposition(accept: str | None) -> tuple[bytes, str]:
    """The registry in the format the scraper asked for (``Accept``): the body and its Content-Type."""
    encoder, content_type = choose_encoder(accept or "")
    return encoder(REGISTRY), content_type
