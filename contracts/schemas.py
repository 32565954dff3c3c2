"""Export the JSON Schema of every message into a folder (``mmrag schemas --out docs/schemas``)."""

from __future__ import annotations

import json
from pathlib import Path

from contracts import messages as m
from contracts.topology import SUBJECT_MODELS

# Models that are not the payload of a JetStream subject but still travel on the wire.
_EXTRA_MODELS = {"answer.<request_id>": m.answer_event_adapter, "deadletter.<consumer>": m.DeadLetter}


def all_schemas() -> dict[str, dict]:
    """{file name: JSON Schema} for every subject's payload."""
    out: dict[str, dict] = {}
    for subject, model in SUBJECT_MODELS.items():
        out[f"{subject}.json"] = model.model_json_schema()
    for subject, model in _EXTRA_MODELS.items():
        schema = model.json_schema() if hasattr(model, "json_schema") else model.model_json_schema()
        out[f"{subject.split('.')[0]}.json"] = schema
    return out


def render(schema: dict) -> str:
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in all_schemas().items():
        path = folder / name
        path.write_text(render(schema))
        written.append(path)
    return written
