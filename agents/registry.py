"""Agent names -> agent classes. The one list of what `mmrag agent NAME` accepts."""

from __future__ import annotations

from agents.embedder import EmbedderAgent
from agents.generator import GeneratorAgent
from agents.indexer import IndexerAgent
from agents.parser.agent import ParserAgent
from agents.reranker import RerankerAgent
from agents.retriever import RetrieverAgent
from agents.runtime.host import Agent, AgentContext

AGENTS: dict[str, type] = {
    "parser": ParserAgent,
    "embedder": EmbedderAgent,
    "indexer": IndexerAgent,
    "retriever": RetrieverAgent,
    "reranker": RerankerAgent,
    "generator": GeneratorAgent,
}
AGENT_NAMES = tuple(AGENTS)


def build_agent(name: str, ctx: AgentContext) -> Agent:
    try:
        return AGENTS[name](ctx)
    except KeyError:
        raise ValueError(f"unknown agent {name!r}; choose from {', '.join(AGENT_NAMES)}") from None
