"""Finding and ordering what answers a query: the vector store interface and its adapters (`vectorstore`),
hybrid search with rank fusion (`hybrid`), the knowledge graph (`graph`), image queries (`query_images`), the
reranking scorers (`rerank`) and the abstention decision (`abstention`).
"""
