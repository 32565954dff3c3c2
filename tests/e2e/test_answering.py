"""The offline extractive answerer and abstention: pure functions, the generator's `answer` with a recording
connection, the reranker and the generator as two differently configured hosts on a real nats-server, and a real
engine asked an answerable and an unanswerable question."""

from __future__ import annotations

import asyncio

import aiohttp
import nats
import pytest
from pydantic import ValidationError

from agents.generator import ABSTAINED, NOT_FOUND, answer
from bus.answers import AnswerEmitter
from contracts.messages import (
    AnswerEvent,
    GenerateRequest,
    Hit,
    ImageRef,
    QueryRequest,
    RerankRequest,
    answer_event_adapter,
)
from contracts.topology import Subjects
from models.extractive import NOTHING_FOUND, extractive_answer
from tests.doubles import RecordingNats
from tests.engine import Engine, sse_events, upload_bytes, wait_status
from tests.factories import five_page_pdf_with_fact, make_pdf


def hit(n: int, text: str, score: float, page: int = 1, *, cosine: float | None = None, **kw) -> Hit:
    return Hit(chunk_id=f"d-{n}", doc_id="d", filename="f.pdf", page=page, bbox=(0, 0, 1, 1), text=text, score=score,
               dense_score=cosine, **kw)  # fmt: skip


TABLE = ("|Part|Material|Supplier|\n|---|---|---|\n|Flange|Steel|Arden Works|\n|Gasket|Rubber|Belmont Seals|\n"
         "|Impeller|Bronze|Corvin Foundry|")  # fmt: skip


def test_answer_quotes_the_sentence_that_holds_the_fact_not_the_first_lines() -> None:
    page = ("Engineering Notes on the Zorblax Programme. The programme built a series of experimental plants. "
            "Each plant tested a different cooling arrangement. The Zorblax-7 reactor core operates at 4127 degrees "
            "Kelvin. Maintenance crews inspect the shielding every quarter.")  # fmt: skip
    hits = [hit(0, page, 0.9, page=3), hit(1, "Unrelated page about gardening and soil.", 0.5)]
    result = extractive_answer("At what temperature does the Zorblax-7 reactor core operate?", hits)
    assert result.text == "The Zorblax-7 reactor core operates at 4127 degrees Kelvin. [1]"
    assert result.cited == [hits[0]]


def test_a_second_quote_must_match_too_and_citations_are_numbered_in_order_of_use() -> None:
    hits = [
        hit(0, "Dogs sleep a lot. Dogs and cats play in the yard.", 0.9),
        hit(1, "Dogs and cats play in the garden.", 0.8),
    ]
    result = extractive_answer("Do dogs and cats play in the garden?", hits)
    assert result.text == "Dogs and cats play in the garden. [1] Dogs and cats play in the yard. [2]"
    assert result.cited == [hits[1], hits[0]]
    assert "sleep" not in result.text  # a sentence without the asked-for words is never quoted


def test_a_table_hit_is_answered_with_the_matching_row_under_its_header() -> None:
    table = hit(0, TABLE, 0.9, page=2, modality="table")
    result = extractive_answer("Which supplier provides the gaskets?", [table])
    assert result.text == "|Part|Material|Supplier|\n|Gasket|Rubber|Belmont Seals|\n[1]"
    assert result.cited == [table]
    # Column names are words of the question too: "material" + "impeller" picks the impeller's row.
    assert "|Impeller|Bronze|Corvin Foundry|" in extractive_answer("What material is the impeller?", [table]).text


def test_an_image_hit_is_answered_with_its_ocr_text() -> None:
    image = hit(0, "NAMEPLATE AQUAFLOW P-200\nMAX PRESSURE 6 BAR\nSERIAL 48217", 0.7, page=11, modality="image",
                image=ImageRef(object_name="img", mime="image/png", width=10, height=10))  # fmt: skip
    prose = hit(1, "The pictures below show the display and the label on the housing.", 0.6, page=11)
    result = extractive_answer("What maximum pressure is printed on the nameplate?", [prose, image])
    assert result.text == "NAMEPLATE AQUAFLOW P-200\nMAX PRESSURE 6 BAR\nSERIAL 48217\n[1]"  # the label's lines
    assert result.cited == [image]


def test_the_unit_naming_the_identifier_beats_a_heading_with_the_other_words() -> None:
    page = "Fault finding: error codes E-101 to E-105\nE-102: motor too hot.\nE-103: rotor blocked; turn the shaft."
    result = extractive_answer("What does error code E-103 mean?", [hit(0, page, 0.9)])
    assert result.text.startswith("E-103: rotor blocked; turn the shaft. [1]")


def test_answer_without_hits_or_matches() -> None:
    assert extractive_answer("anything", []).text == NOTHING_FOUND
    fallback = extractive_answer("quantum", [hit(0, "Nothing relevant here.", 0.2)])
    assert fallback.text == "The closest passage I found: Nothing relevant here. [1]"


def test_the_same_sentence_on_two_pages_is_quoted_once() -> None:
    text = "Replace the filter cartridge every six months."
    hits = [hit(0, text, 0.9, page=1), hit(1, text, 0.8, page=2)]
    result = extractive_answer("How often is the filter cartridge replaced?", hits)
    assert result.text == f"{text} [1]" and result.cited == [hits[0]]


# --------------------------------------------------------------------------- abstention in `answer`


async def _answer(hits: list[Hit], *, abstain: bool) -> tuple[str, list[AnswerEvent]]:
    nats = RecordingNats()
    emitter = AnswerEmitter(nats, tenant="t", request_id="r1")  # type: ignore[arg-type]
    answerer = await answer("How often is the filter replaced?", hits, emitter, abstain=abstain)
    return answerer, nats.events


async def test_when_the_reranker_abstains_the_answer_says_not_found_and_done_is_abstained() -> None:
    hits = [hit(0, "Replace the filter cartridge every six months.", 0.90)]  # a high score: the decision rules
    answerer, events = await _answer(hits, abstain=True)
    assert answerer == ABSTAINED
    assert [e.event for e in events][-1] == "done" and "citation" not in {e.event for e in events}
    assert "".join(e.text for e in events if e.event == "token") == NOT_FOUND
    assert "not found in your documents" in NOT_FOUND.lower()
    assert events[-1].abstained is True and events[-1].answerer == ABSTAINED


async def test_when_the_reranker_does_not_abstain_the_extractive_answer_is_given_whatever_the_score() -> None:
    hits = [hit(0, "Replace the filter cartridge every six months.", 0.05)]
    answerer, events = await _answer(hits, abstain=False)
    assert answerer == "extractive" and events[-1].abstained is False
    assert "every six months. [1]" in "".join(e.text for e in events if e.event == "token")
    assert [e.page for e in events if e.event == "citation"] == [1]


def test_a_generate_request_without_hits_must_abstain() -> None:
    query = QueryRequest(request_id="r1", tenant="t", query="anything?")
    assert GenerateRequest(request=query, hits=[], abstain=True).abstain
    with pytest.raises(ValidationError, match="abstain must be true when there are no hits"):
        GenerateRequest(request=query, hits=[], abstain=False)


# --------------------------------------------------------------------------- reranker and generator apart


async def _ask_through_the_agents(nc: nats.NATS, tenant: str, request_id: str, question: str,
                                  candidates: list[Hit]) -> list[AnswerEvent]:  # fmt: skip
    """Publish a rerank request as the retriever would and collect the answer events until `done`."""
    events: list[AnswerEvent] = []
    done = asyncio.Event()

    async def on_event(msg) -> None:
        events.append(answer_event_adapter.validate_json(msg.data))
        if events[-1].event in ("done", "error"):
            done.set()

    sub = await nc.subscribe(Subjects.answer(tenant, request_id), cb=on_event)
    request = QueryRequest(request_id=request_id, tenant=tenant, query=question, top_k=3)
    await nc.jetstream().publish(Subjects.query(Subjects.QUERY_RERANK, tenant),
                                 RerankRequest(request=request, candidates=candidates).model_dump_json().encode())  # fmt: skip
    async with asyncio.timeout(60):
        await done.wait()
    await sub.unsubscribe()
    return events


async def test_a_generator_configured_differently_follows_the_rerankers_decision(nats_server, nc, tmp_path) -> None:
    """The reranker and the generator run as two hosts with different abstention settings, over a real
    nats-server: the answer follows the reranker's decision either way (before, each decided with its own)."""
    from agents.generator import GeneratorAgent
    from agents.reranker import RerankerAgent
    from agents.runtime.host import run_agents
    from agents.settings import AgentSettings

    def settings(name: str, **abstention: float) -> AgentSettings:
        return AgentSettings(nats_url=nats_server.url, data_dir=tmp_path / name, metrics_port=0, **abstention)

    reranker = settings("reranker")  # the defaults: 0.34, paraphrase 0.54 (decision 79)
    assert reranker.abstain_threshold == 0.34
    filters = hit(0, "Replace the filter cartridge every six months.", 1.0, cosine=0.75)
    answerable = ("How often is the filter cartridge replaced?", [filters])
    unanswerable = ("Who won the football world cup in 1998?", [filters.model_copy(update={"dense_score": 0.02})])

    stop_reranker, started = asyncio.Event(), asyncio.Event()
    hosts = [asyncio.create_task(run_agents([RerankerAgent], reranker, stop_reranker, started=started))]
    try:
        async with asyncio.timeout(120):
            await started.wait()
        # A generator that would decline everything by its own setting, then one that would decline nothing.
        for n, (generator, (question, candidates), abstained) in enumerate([
            (settings("g1", abstain_threshold=1.0, abstain_paraphrase_cosine=0.0), answerable, False),
            (settings("g2", abstain_threshold=0.0, abstain_paraphrase_cosine=0.0), unanswerable, True),
        ]):  # fmt: skip
            stop_generator, generator_started = asyncio.Event(), asyncio.Event()
            hosts.append(asyncio.create_task(run_agents([GeneratorAgent], generator, stop_generator,
                                                        started=generator_started)))  # fmt: skip
            try:
                async with asyncio.timeout(60):
                    await generator_started.wait()
                events = await _ask_through_the_agents(nc, "t", f"r{n}", question, candidates)
            finally:
                stop_generator.set()
                await hosts[-1]
            assert events[0].event == "retrieval" and events[-1].event == "done", events
            assert events[-1].abstained is abstained, (generator.abstain_threshold, events)
            text = "".join(e.text for e in events if e.event == "token")
            assert (text == NOT_FOUND) is abstained, text
    finally:
        stop_reranker.set()
        await asyncio.gather(*hosts, return_exceptions=True)


# --------------------------------------------------------------------------- through a real engine


async def test_the_engine_declines_what_the_documents_cannot_answer(engine: Engine) -> None:
    pdf, question, phrase = five_page_pdf_with_fact()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120), headers=engine.headers) as http:
        resp = await upload_bytes(http, engine.url, pdf, "reactor.pdf")
        doc_id = (await resp.json())["doc_id"]
        assert (await wait_status(http, engine.url, doc_id, {"indexed", "failed"}))["status"] == "indexed"

        answered = await sse_events(http, engine.url, {"question": question, "top_k": 3})
        assert answered[-1][0] == "done" and answered[-1][1]["abstained"] is False
        assert phrase.split()[0] in "".join(d["text"] for k, d in answered if k == "token")
        assert any(k == "citation" and d["page"] == 3 for k, d in answered)

        declined = await sse_events(http, engine.url, {"question": "Who won the football world cup in 1998?"})
        kinds = [k for k, _ in declined]
        assert kinds[0] == "retrieval" and kinds[-1] == "done" and "citation" not in kinds
        assert declined[-1][1]["abstained"] is True
        assert "".join(d["text"] for k, d in declined if k == "token") == NOT_FOUND
        # Search has a relevance floor (MMRAG_SEARCH_MIN_SCORE), not the abstention threshold: the unrelated question
        # lists nothing (it listed top_k hits scored 0.000), the document's own question still finds its page.
        async with http.post(f"{engine.url}/v1/search", json={"query": "Who won the football world cup in 1998?"}) as r:
            assert r.status == 200 and (await r.json())["hits"] == []
        async with http.post(f"{engine.url}/v1/search", json={"query": question, "top_k": 3}) as r:
            hits = (await r.json())["hits"]
            assert r.status == 200 and hits and hits[0]["page"] == 3 and all(h["score"] >= 0.05 for h in hits)


MAINTENANCE = (
    "Maintenance schedule\n\nInspect the impeller for deposits every 2000 operating hours. Limescale on the impeller "
    "blades lowers the flow rate long before the motor shows any sign of strain.\n\nRegrease the motor bearings once "
    "a year with lithium complex grease of consistency class NLGI 2. Do not mix greases of different soap types."
)


async def test_the_engine_answers_a_reworded_question_that_shares_few_words_with_its_answer(engine: Engine) -> None:
    """A question in other words than the document's is answered end to end. Until decision 79 the lexical score
    alone declined it and the paraphrase cosine (MMRAG_ABSTAIN_PARAPHRASE_COSINE) rescued it; the default scorer
    now weighs each candidate's best question-sentence cosine in, so its score clears the threshold itself (the
    paraphrase signal's decision is tested in tests/unit/test_reranker.py)."""
    from agents.settings import AgentSettings

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120), headers=engine.headers) as http:
        resp = await upload_bytes(http, engine.url, make_pdf([MAINTENANCE]), "maintenance.pdf")
        doc_id = (await resp.json())["doc_id"]
        assert (await wait_status(http, engine.url, doc_id, {"indexed", "failed"}))["status"] == "indexed"
        events = await sse_events(http, engine.url, {"question": "What lubricant does the manual recommend for the bearings?"})
        retrieval = events[0][1]["hits"]
        assert retrieval[0]["doc_id"] == doc_id and retrieval[0]["score"] >= AgentSettings().abstain_threshold
        assert events[-1][0] == "done" and events[-1][1]["abstained"] is False
        assert "NLGI 2" in "".join(d["text"] for k, d in events if k == "token")



PUMP = ("Operating the pump\n\nThe pump settings are stored by the controller when the power is switched off. Press "
        "the red button on the front panel to stop the pump at once. The housing is made of cast iron and needs no "
        "paint.")  # fmt: skip


async def test_the_engines_offline_answer_quotes_the_sentence_that_says_it_in_other_words(engine: Engine) -> None:
    """The generator's extractive answer reads meaning with the process's text model: the sentence that shares no
    word but "pump" with the question and says what it asks is quoted, not the first one that has "pump" too
    (decision 85)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120), headers=engine.headers) as http:
        resp = await upload_bytes(http, engine.url, make_pdf([PUMP]), "pump.pdf")
        doc_id = (await resp.json())["doc_id"]
        assert (await wait_status(http, engine.url, doc_id, {"indexed", "failed"}))["status"] == "indexed"
        events = await sse_events(http, engine.url, {"question": "How do I halt the pump immediately?",
                                                   "filters": {"doc_ids": [doc_id]}})  # fmt: skip
        assert events[-1][0] == "done" and events[-1][1]["answerer"] == "extractive"
        text = "".join(d["text"] for k, d in events if k == "token")
        assert text.startswith("Press the red button on the front panel to stop the pump at once. [1]")
        assert any(k == "citation" and d["doc_id"] == doc_id and d["page"] == 1 for k, d in events)

async def test_a_two_part_question_finds_the_page_of_its_second_part(engine: Engine) -> None:
    """24 pages match the whole question better than the one page that answers its second part in other words:
    the retriever searches each part too and the reranker keeps each part's best page (decision 88), so that page
    is among the top hits and the offline answer quotes it (neither without)."""
    from tests.unit.test_wording import CARTRIDGE, HEATER, TWO_PARTS

    below_the_running_header_band = "\n" * 12  # identical top lines on every page would be dropped as headers
    pages = [below_the_running_header_band + text for text in [*CARTRIDGE, HEATER]]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120), headers=engine.headers) as http:
        resp = await upload_bytes(http, engine.url, make_pdf(pages), "softener.pdf")
        doc_id = (await resp.json())["doc_id"]
        assert (await wait_status(http, engine.url, doc_id, {"indexed", "failed"}))["status"] == "indexed"
        query = {"query": TWO_PARTS, "top_k": 5, "filters": {"doc_ids": [doc_id]}}
        async with http.post(f"{engine.url}/v1/search", json=query) as resp:
            hits = (await resp.json())["hits"]
        events = await sse_events(http, engine.url, {"question": TWO_PARTS, "filters": {"doc_ids": [doc_id]}})
    assert len(pages) in {h["page"] for h in hits}  # the reranker keeps each part's best page in the top 5
    text = "".join(d["text"] for k, d in events if k == "token")
    # the offline answer says both parts, and the first part once (not once per model number)
    assert HEATER in text and text.count("Replace the filter cartridge") == 1
    assert any(k == "citation" and d["page"] == len(pages) for k, d in events)


# --------------------------------------------------------------------------- a redelivered generation


async def test_a_redelivered_generation_replaces_the_partial_one_and_the_client_never_mixes_them() -> None:
    """Delivery 1 streams part of an answer and dies; delivery 2 (numbered from 1 again) answers differently.
    The client sees the first part, a reset, then only the second answer, with ids that only grow."""
    from bus.answers import AnswerSequencer
    from contracts.messages import RetrievalEvent

    first, second = RecordingNats(), RecordingNats()
    one = AnswerEmitter(first, tenant="t", request_id="r1", attempt=1)  # type: ignore[arg-type]
    await one.token("The pump runs at ")
    await one.token("4000 rpm, ")
    two = AnswerEmitter(second, tenant="t", request_id="r1", attempt=2)  # type: ignore[arg-type]
    for piece in ("It turns at ", "2800 rpm. [1]"):
        await two.token(piece)
    await two.citation(n=1, doc_id="d", filename="f.pdf", page=2, bbox=None, text="2800 rpm")
    await two.done(answerer="llm")

    sequencer = AnswerSequencer()
    seen = sequencer.push(RetrievalEvent(request_id="r1", seq=0, hits=[]))
    # Attempt 1's events, then attempt 2's interleaved with a late straggler of attempt 1 and a duplicate.
    arrivals = [*first.events, second.events[1], first.events[1], *second.events, second.events[0]]
    for event in arrivals:
        seen += sequencer.push(event)
    assert [e.event for e in seen] == ["retrieval", "token", "token", "reset", "token", "token", "citation", "done"]
    assert [e.seq for e in seen] == list(range(8))  # ids only grow: attempt 2 is renumbered after the reset
    text = ""
    for e in seen:  # what a client shows: the text after the last reset
        text = "" if e.event == "reset" else text + (e.text if e.event == "token" else "")
    assert text == "It turns at 2800 rpm. [1]" and sequencer.finished


async def test_a_newer_attempt_before_anything_was_shown_needs_no_reset() -> None:
    from bus.answers import AnswerSequencer
    from contracts.messages import RetrievalEvent

    old, new = RecordingNats(), RecordingNats()
    await AnswerEmitter(old, tenant="t", request_id="r1", attempt=1).token("stale ")  # type: ignore[arg-type]
    two = AnswerEmitter(new, tenant="t", request_id="r1", attempt=2)  # type: ignore[arg-type]
    await two.token("fresh answer")
    await two.done(answerer="extractive")
    sequencer = AnswerSequencer()
    seen = [e for event in [*old.events, *new.events] for e in sequencer.push(event)]  # retrieval not there yet
    assert seen == []
    seen = sequencer.push(RetrievalEvent(request_id="r1", seq=0, hits=[]))
    assert [(e.event, e.seq) for e in seen] == [("retrieval", 0), ("token", 1), ("done", 2)]
    assert seen[1].text == "fresh answer"
