"""What answering through the declared models costs (decision 54): a `/v1/search` body of 50 hits of about
1,000 characters, serialised as before (`json.dumps` of each hit's `model_dump`), through `SearchResults`, and
on an answer-cache hit (the stored JSON validated into `SearchResults`, then serialised).

    .venv/bin/python bench/response_serialization.py

In-process, no server; prints microseconds per answer (best of 5 runs). Figures, not a pass/fail test.
"""

from __future__ import annotations

import json
import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from contracts.messages import Hit  # noqa: E402
from edge_api.routes.queries import SearchResults  # noqa: E402

HITS = [
    Hit(chunk_id=f"c{n}", doc_id="d" * 32, filename="manual.pdf", page=n, text="x" * 1000, score=1.0 / n,
        headings=["Chapter", "Section"], bbox=(10.0, 20.0, 300.0, 400.0))
    for n in range(1, 51)
]  # fmt: skip
STORED = SearchResults(hits=HITS).model_dump_json().encode()
VARIANTS = {
    "json.dumps of model_dump (before)": lambda: json.dumps({"hits": [h.model_dump(mode="json") for h in HITS]}),
    "SearchResults.model_dump_json": lambda: SearchResults(hits=HITS).model_dump_json(),
    "cache hit: validate stored JSON, dump": lambda: SearchResults.model_validate_json(STORED).model_dump_json(),
}


def main() -> None:
    for name, run in VARIANTS.items():
        best = min(timeit.repeat(run, number=300, repeat=5)) / 300
        print(f"{name}: {best * 1e6:.0f} us per 50-hit answer")


if __name__ == "__main__":
    main()
