"""The Python client (mmrag/client.py) against the shared `mmrag up --auth`: the README's examples run as written,
every method calls an operation of the served OpenAPI document, and errors are typed with the API's status."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from edge_api.keys import create_key
from mmrag.client import (
    AsyncClient,
    Client,
    DocumentFailed,
    EngineUnreachable,
    Forbidden,
    NotFound,
    NotRenderable,
    Unauthorized,
)
from tests.engine import TenantEngine, free_port
from tests.factories import make_pdf

ROOT = Path(__file__).resolve().parents[2]
FACT = "The pump K-41 must be primed with 3.5 litres of glycol before its first start."


def readme_examples() -> list[str]:
    """The ```python blocks of the README's "From Python" section."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### From Python\n", 1)[1].split("\n### ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_the_readme_has_client_examples() -> None:
    assert len(readme_examples()) == 3


@pytest.mark.parametrize("number", [0, 1, 2])
def test_readme_example_runs(engine: TenantEngine, tmp_path: Path, number: int) -> None:
    (tmp_path / "manual.pdf").write_bytes(make_pdf([FACT + "\n\nService interval: 400 hours."]))
    script = tmp_path / f"example{number}.py"
    script.write_text(readme_examples()[number])
    env = {"MMRAG_URL": engine.url, "MMRAG_API_KEY": engine.key, "PATH": "/usr/bin:/bin"}
    run = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=240)  # fmt: skip
    assert run.returncode == 0, run.stderr
    if number == 0:
        size = (tmp_path / "manual.pdf").stat().st_size
        lines = run.stdout.splitlines()
        assert f"{size}/{size} bytes" in lines  # the upload's progress, to its last byte
        assert "indexed" in {line.split()[0] for line in lines}
        assert any("manual.pdf page 1" in line for line in lines)  # a search hit
        assert "3.5 litres" in run.stdout and "(1, 'manual.pdf', 1)" in run.stdout  # the answer and its citation
        assert "['manual.pdf']" in lines
        assert lines[-1].startswith("404 not_found HTTP 404: no document")
    elif number == 1:
        assert "3.5 litres" in run.stdout and "[1] k41.txt page 1" in run.stdout
    else:  # the conversation: the follow-up was searched as a standalone question naming the Falcon X
        lines = run.stdout.splitlines()
        assert "12 kg" in lines[0] and "400 hours" in lines[1], run.stdout
        assert "Falcon X" in lines[-1].split(",")[-1], lines[-1]


def test_every_method_calls_an_operation_of_the_served_document(engine: TenantEngine) -> None:
    document = httpx.get(f"{engine.url}/v1/openapi.json").json()
    served = {(m.upper(), path) for path, item in document["paths"].items() for m in item if m != "parameters"}
    methods = {n: f for n, f in inspect.getmembers(AsyncClient, inspect.isfunction) if not n.startswith("_")}
    unmarked = sorted(n for n, f in methods.items() if n != "aclose" and not hasattr(f, "route"))
    assert not unmarked, f"client methods without @route: {unmarked}"
    missing = {n: f.route for n, f in methods.items() if hasattr(f, "route") and f.route not in served}
    assert not missing, f"client methods whose route the API does not serve: {missing}"


def test_errors_carry_the_api_status_and_code(engine: TenantEngine) -> None:
    _, reader = create_key(engine.data_dir / "api-keys.json", engine.tenant, "reader")
    with Client(engine.url, api_key=reader) as as_reader:
        with pytest.raises(Forbidden) as refused:
            as_reader.upload(b"some words", filename="a.txt")
        assert refused.value.status == 403 and refused.value.code == "forbidden"
        assert "needs 'writer'" in str(refused.value)
        with pytest.raises(NotFound) as missing:
            as_reader.document("f" * 32)
        assert missing.value.status == 404 and missing.value.code == "not_found"
        assert list(as_reader.documents()) == []
    with Client(engine.url, api_key="mmrag_wrong") as wrong, pytest.raises(Unauthorized) as bad_key:
        wrong.search("anything")
    assert bad_key.value.status == 401
    with Client(f"http://127.0.0.1:{free_port()}", api_key=engine.key) as nowhere:
        with pytest.raises(EngineUnreachable, match="cannot reach the engine"):
            nowhere.search("anything")
    with Client(engine.url, api_key=engine.key) as writer:
        broken = writer.upload(b"%PDF-1.7\n" + b"x" * 100, filename="broken.pdf")
        with pytest.raises(DocumentFailed, match="failed"):
            writer.wait(broken.doc_id, timeout=120)
        notes = writer.upload(b"# Notes\n\nOtters hold hands while they sleep.\n", filename="notes.md")
        writer.wait(notes.doc_id, timeout=120)
        assert writer.page_text(notes.doc_id, 1).text == "# Notes\n\nOtters hold hands while they sleep.\n"
        with pytest.raises(NotRenderable) as no_picture:  # a text file has text, no picture
            writer.page_image(notes.doc_id, 1)
        assert no_picture.value.status == 422 and no_picture.value.code == "not_renderable"
        with pytest.raises(NotFound, match="has 1 page"):
            writer.page_text(notes.doc_id, 2)


def test_conversations_passages_and_reparse_through_the_client(engine: TenantEngine) -> None:
    with Client(engine.url, api_key=engine.key) as client:
        doc = client.upload(make_pdf([FACT]), filename="k41.pdf")
        client.wait(doc.doc_id, timeout=120)
        passages = client.passages(doc.doc_id)
        assert passages and "3.5 litres of glycol" in passages[0].text and passages[0].page == 1

        chat = client.create_conversation("Pump K-41")
        first = client.answer("How much glycol does the pump K-41 need before its first start?",
                              conversation_id=chat["id"])  # fmt: skip
        assert first.citations and first.citations[0].doc_id == doc.doc_id
        turns = client.conversation(chat["id"])["turns"]
        assert len(turns) == 1 and "glycol" in turns[0]["question"]
        client.feedback(chat["id"], 1, "up", "right page")
        assert client.conversation(chat["id"])["turns"][0]["feedback"]["rating"] == "up"
        assert client.rename_conversation(chat["id"], "Glycol")["title"] == "Glycol"
        assert [c["title"] for c in client.conversations()] == ["Glycol"]
        client.delete_conversation(chat["id"])
        with pytest.raises(NotFound):
            client.conversation(chat["id"])
        with pytest.raises(NotFound):
            client.delete_conversation(chat["id"])

        again = client.reparse(doc.doc_id)
        assert again.doc_id == doc.doc_id and again.status in ("queued", "parsing", "indexing", "indexed")
        assert client.wait(doc.doc_id, timeout=120).status == "indexed"
