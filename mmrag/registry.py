"""Agent names -> agent classes. The one list of what `mmrag agent NAME` accepts."""

from __future__ import annotations

from agents.embedder import EmbedderAgent
from agents.generator import GeneratorAgent
from agents.indexer import IndexerAgent
from agents.ocr import OcrAgent
from agents.parser import ParserAgent
from agents.reindexer import ReindexCoordinator
from agents.reranker import RerankerAgent
from agents.retriever import RetrieverAgent
from agents.runtime.agent import ConsumerAgent

AGENTS: dict[str, type[ConsumerAgent]] = {
    "parser": ParserAgent,
    "ocr": OcrAgent,
    "embedder": EmbedderAgent,
    "indexer": IndexerAgent,
    "retriever": RetrieverAgent,
    "reranker": RerankerAgent,
    "generator": GeneratorAgent,
}
AGENT_NAMES = tuple(AGENTS)
# Runs beside the agents it serves, never alone: the re-index coordinator with the indexer (see `agent_types`).
COMPANIONS: tuple[type[ConsumerAgent], ...] = (ReindexCoordinator,)


def agent_types(names: list[str] | tuple[str, ...]) -> list[type[ConsumerAgent]]:
    unknown = [n for n in names if n not in AGENTS]
    if unknown:
        raise ValueError(f"unknown agent(s) {', '.join(unknown)}; choose from {', '.join(AGENT_NAMES)}")
    types = [AGENTS[n] for n in names]
    if "indexer" in names:
        # The re-index coordinator switches the alias of the store the indexer writes, so it runs wherever the
        # indexer runs (several coordinators are safe: every step is idempotent and compare-and-set).
        types.append(ReindexCoordinator)
    return types
