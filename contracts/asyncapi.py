"""The AsyncAPI 3.0 document of every subject and its message, generated from `contracts` (never hand-edited).

`mmrag schemas` writes it to `docs/asyncapi.yaml`; a test fails when the file is stale. Operations are written
from the point of view of the mmrag system: `receive` on the subjects its agents consume (a team publishing
documents from its own systems sends there), `send` on the subjects it publishes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import yaml
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from contracts import messages as m

VERSION = "0.2.0"
REF = "#/components/schemas/{model}"


@dataclass(frozen=True)
class Channel:
    key: str
    address: str
    models: tuple[type[BaseModel], ...]
    actions: tuple[Literal["send", "receive"], ...]
    description: str


_TENANT = "tenant the data belongs to (1-64 of [A-Za-z0-9_-])"
_PARAMETERS = {
    "tenant": _TENANT,
    "doc_id": "document id (1-64 of [A-Za-z0-9_-])",
    "gen": "index generation token, e.g. g1",
    "lane": "ingest lane: interactive (small documents, served first) or bulk",
    "modality": "text (the text embedder's input)",
    "request_id": "id of one ask/search request",
    "durable": "the durable consumer that gave up on the message",
    "revision": "the document's revision (the DOCS stream sequence of its submission, or of its delete)",
}
_EVENTS = (m.RetrievalEvent, m.TokenEvent, m.CitationEvent, m.ResultsEvent, m.DoneEvent, m.ErrorEvent, m.ResetEvent)

CHANNELS: tuple[Channel, ...] = (
    Channel("docsIngest", "docs.ingest.{tenant}.{doc_id}", (m.DocumentSubmitted,), ("receive",),
            "Submit a document whose bytes are already in the tenant's Object Store bucket "
            "`mmrag-uploads-<tenant>` under `<tenant>/<doc_id>`. Stream DOCS (file, kept forever): the replayable source of truth. Publishing "
            "again with the same doc_id replaces the document. Set `Nats-Msg-Id` for deduplication."),
    Channel("docsDelete", "docs.delete.{tenant}.{doc_id}", (m.DocumentDeleted,), ("receive",),
            "Delete a document from every index generation (points, upload, status); a tombstone replays see."),
    Channel("docsIndexed", "docs.indexed.{gen}.{tenant}.{doc_id}", (m.DocumentProgress,), ("send",),
            "Published once when a document is fully indexed in a generation (the stream keeps the last one per "
            "document; a delete purges it)."),
    Channel("chunksParsed", "chunks.parsed.{gen}.{modality}.{lane}.{tenant}", (m.ChunksParsed,), ("send", "receive"),
            "Batches of parsed chunks (parser, ocr -> embedder). Stream CHUNKS (file): deleted once handled."),
    Channel("chunksOcr", "chunks.ocr.{gen}.{lane}.{tenant}", (m.OcrRequest,), ("send", "receive"),
            "One scanned page or image to read (parser -> ocr); the raster is in the Object Store."),
    Channel("chunksEmbedded", "chunks.embedded.{gen}.{tenant}", (m.ChunksEmbedded,), ("send", "receive"),
            "Embedded batches (embedder -> indexer): dense vector and sparse BM25 terms per chunk."),
    Channel("graphFacts", "graph.facts.{gen}.{tenant}.{doc_id}.{revision}", (m.GraphFacts,), ("send", "receive"),
            "Knowledge-graph facts of a durably indexed batch, or a deleted document's tombstone (indexer -> "
            "every retriever replica, each replaying stream GRAPH from the start into its in-memory graph)."),
    Channel("queryRetrieve", "query.retrieve.{tenant}", (m.QueryRequest,), ("receive",),
            "An ask or a search (edge API -> retriever). Stream QUERIES (memory, 5 min)."),
    Channel("queryRerank", "query.rerank.{tenant}", (m.RerankRequest,), ("send", "receive"),
            "Retrieved candidates (retriever -> reranker)."),
    Channel("queryGenerate", "query.generate.{tenant}", (m.GenerateRequest,), ("send", "receive"),
            "Reranked hits to answer from (reranker -> generator)."),
    Channel("answer", "answer.{tenant}.{request_id}", _EVENTS, ("send",),
            "Core NATS (not stored): the events of one request. seq 0 is retrieval/results, the generation "
            "follows from 1; error has no seq and ends the stream. Receivers drop repeated seqs."),
    Channel("deadletter", "deadletter.{durable}.{tenant}.{doc_id}", (m.DeadLetter,), ("send",),
            "Messages an agent gave up on, with the reason (stream DEADLETTER); `_` for a tenant or document a "
            "malformed message does not name. A delete purges the dead letters about its document."),
)  # fmt: skip


def document() -> dict:
    """The AsyncAPI document as plain data."""
    models = {model for channel in CHANNELS for model in channel.models}
    _, top = models_json_schema([(model, "validation") for model in sorted(models, key=lambda c: c.__name__)],
                                ref_template=REF)  # fmt: skip
    channels: dict = {}
    operations: dict = {}
    for channel in CHANNELS:
        params = [p.strip("{}") for p in channel.address.split(".") if p.startswith("{")]
        channels[channel.key] = {
            "address": channel.address,
            "description": channel.description,
            "parameters": {p: {"description": _PARAMETERS[p]} for p in params},
            "messages": {model.__name__: {"$ref": f"#/components/messages/{model.__name__}"} for model in channel.models},
        }
        for action in channel.actions:
            operations[f"{action}{channel.key[0].upper()}{channel.key[1:]}"] = {
                "action": action,
                "channel": {"$ref": f"#/channels/{channel.key}"},
                "messages": [{"$ref": f"#/channels/{channel.key}/messages/{model.__name__}"} for model in channel.models],
            }
    messages = {
        model.__name__: {
            "name": model.__name__,
            "contentType": "application/json",
            "summary": (model.__doc__ or "").strip().splitlines()[0] if model.__doc__ else model.__name__,
            "payload": {"$ref": REF.format(model=model.__name__)},
        }
        for model in sorted(models, key=lambda c: c.__name__)
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "mmrag subjects",
            "version": VERSION,
            "description": "Every NATS subject of mmrag and the JSON message it carries (generated from contracts/).",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": top.get("$defs", {})},
    }


def render() -> str:
    return yaml.safe_dump(document(), sort_keys=True, allow_unicode=True, width=120)
