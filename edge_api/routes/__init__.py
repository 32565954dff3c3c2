"""The edge API's routes, one module per area; each declares its operations (`edge_api.operations`) in
`OPERATIONS`, next to its handlers. `OPERATIONS` here is all of them, in the order the document lists them."""

from __future__ import annotations

from edge_api.operations import Operation
from edge_api.routes import (
    api_reference,
    collections,
    conversations,
    documents,
    evaluations,
    health,
    pages,
    passages,
    progress,
    queries,
    reindex,
    ui,
)

OPERATIONS: tuple[Operation, ...] = (
    *health.OPERATIONS,
    *documents.OPERATIONS,
    *collections.OPERATIONS,
    *passages.OPERATIONS,
    *queries.OPERATIONS,
    *conversations.OPERATIONS,
    *progress.OPERATIONS,
    *pages.OPERATIONS,
    *ui.OPERATIONS,
    *reindex.OPERATIONS,
    *evaluations.OPERATIONS,
    *api_reference.OPERATIONS,
)
