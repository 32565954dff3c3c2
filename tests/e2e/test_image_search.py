"""Cross-modal search end to end through a real `mmrag up`: `POST /v1/search` with an image finds the page that
shows it (perceptual hash without CLIP; CLIP's image tower with a tiny random checkpoint), the text in a query
image finds the page that says it, and bad uploads get precise 400/413/415 answers. Below the engine: the
retriever's fused search over a real Qdrant Edge store with image vectors (text -> image with CLIP)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import nats
import numpy as np
import pymupdf
import pytest
from PIL import Image

from models.clip import ClipEncoder
from models.image_vectors import PerceptualHashEncoder
from documents import NO_TEXT
from search.query_images import CrossModalQueries, ImageQuery, image_ranking
from search.hybrid import hybrid_search as _search
from search.vectorstore import CollectionSchema, EdgeShardStore, PointPayload, SearchFilter, VectorPoint
from contracts.messages import ImageRef, QueryImage, QueryMode, QueryRequest, ResultsEvent
from contracts.topology import QUERY_IMAGES_BUCKET, Subjects
from tests.e2e.conftest import SHARED_ENV
from tests.engine import BIN, Engine, TenantEngine, upload_bytes, wait_status
from tests.factories import png_bomb, render_text_image
from tests.bus.test_auth import A, WAIT_S, first_request, requests_seen
from tests.bus.test_auth import auth_edge  # noqa: F401 - the fixture: an edge app with auth on and four keys
from tests.unit.test_clip import jpeg, picture
from tests.tiny_clip import PROJECTION_DIM, make_tiny_clip

PAGES = 3
SEEDS = {1: 11, 2: 22, 3: 33}  # page -> the seed of the picture on it
STRANGER = 99  # a picture in no document
SENTENCE = "Calibrate the flow sensor before the first pressure test."  # on page 3 only
QUERY_IMAGE_CAP = 256 * 1024


def png(img: Image.Image) -> bytes:
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def photo_album_pdf() -> bytes:
    """PAGES A4 pages, each with a heading, a paragraph, a distinct picture (400 x 300 px) and its caption."""
    doc = pymupdf.open()
    try:
        for number in range(1, PAGES + 1):
            page = doc.new_page(width=595, height=842)
            page.insert_text((72, 80), f"Station {number}", fontsize=16)
            body = SENTENCE if number == 3 else f"Routine inspection notes for station {number}."
            page.insert_text((72, 110), body, fontsize=11)
            rect = pymupdf.Rect(72, 130, 372, 355)
            page.insert_image(rect, stream=png(picture(SEEDS[number])))
            page.insert_text((72, rect.y1 + 16), f"Figure {number}: Overview photo of station {number}.", fontsize=10)
        return doc.tobytes(deflate=True)
    finally:
        doc.close()


async def image_search(http: aiohttp.ClientSession, url: str, image: bytes, *, filename: str = "q.png",
                       content_type: str = "image/png", **fields: str) -> tuple[int, dict]:  # fmt: skip
    form = aiohttp.FormData()
    form.add_field("image", image, filename=filename, content_type=content_type)
    for name, value in fields.items():
        form.add_field(name, value)
    async with http.post(f"{url}/v1/search", data=form) as resp:
        return resp.status, await resp.json()


def start_engine(root: Path, env: dict[str, str]) -> Engine:
    return Engine(root / "data", root / "engine.log", env={"MMRAG_MAX_QUERY_IMAGE_BYTES": str(QUERY_IMAGE_CAP),
                                                            **env}).start()  # fmt: skip


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory) -> Path:
    return make_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip")


@pytest.fixture(scope="module")
def plain_engine(module_tenant: TenantEngine) -> TenantEngine:
    """No CLIP configured: image vectors are perceptual hashes. The shared engine (one tenant for the module: the
    album is ingested once), whose `MMRAG_MAX_QUERY_IMAGE_BYTES` is QUERY_IMAGE_CAP (tests/e2e/conftest.py)."""
    assert SHARED_ENV["MMRAG_MAX_QUERY_IMAGE_BYTES"] == str(QUERY_IMAGE_CAP)
    return module_tenant


@pytest.fixture(scope="module")
def clip_engine(tmp_path_factory, clip_dir: Path) -> Iterator[Engine]:
    eng = start_engine(tmp_path_factory.mktemp("clip-engine"), {"MMRAG_CLIP_MODEL": str(clip_dir)})
    yield eng
    assert eng.stop() == 0, eng.log_tail()


_ALBUMS: dict[str, str] = {}  # engine URL -> the album's doc id: each engine ingests it once


async def ingest_album(http: aiohttp.ClientSession, engine: Engine) -> str:
    if engine.url in _ALBUMS:
        return _ALBUMS[engine.url]
    resp = await upload_bytes(http, engine.url, photo_album_pdf(), "album.pdf")
    assert resp.status == 202, await resp.text()
    doc_id = (await resp.json())["doc_id"]
    status = await wait_status(http, engine.url, doc_id, {"indexed", "failed"}, timeout_s=180)
    assert status["status"] == "indexed", status
    _ALBUMS[engine.url] = doc_id
    return doc_id


def copies_of(seed: int) -> list[tuple[str, bytes, str]]:
    """(name, bytes, content type): the picture as embedded, rescaled to 55% as JPEG, and at double size."""
    original = picture(seed)
    return [
        ("original png", png(original), "image/png"),
        ("rescaled jpeg", jpeg(original.resize((220, 165), Image.Resampling.LANCZOS), 70), "image/jpeg"),
        ("enlarged png", png(original.resize((800, 600))), "image/png"),
    ]


def assert_top_is_page(result: dict, doc_id: str, page: int) -> None:
    top = result["hits"][0]
    assert (top["doc_id"], top["page"], top["modality"]) == (doc_id, page, "image"), result["hits"][:3]
    assert top["image"] is not None and top["image"]["width"] == 400


async def test_an_image_finds_the_page_that_shows_it_without_clip(plain_engine: TenantEngine, http) -> None:
    doc_id = await ingest_album(http, plain_engine)
    for page, seed in SEEDS.items():
        for name, data, content_type in copies_of(seed):
            status, result = await image_search(http, plain_engine.url, data, content_type=content_type)
            assert status == 200, (name, result)
            assert_top_is_page(result, doc_id, page)
    # A picture that is in no document matches nothing: the hash's Hamming cut-off, and no text to read in it.
    status, result = await image_search(http, plain_engine.url, png(picture(STRANGER)))
    assert status == 200 and all(h["modality"] != "image" for h in result["hits"]), result
    # Filters apply to image searches too.
    status, result = await image_search(http, plain_engine.url, png(picture(SEEDS[2])),
                                        filters=json.dumps({"page_from": 3}))  # fmt: skip
    assert status == 200 and all(h["page"] == 3 for h in result["hits"]), result
    # The query images were removed once their searches ended.
    nc = await nats.connect(plain_engine.nats_url)
    try:
        bucket = await nc.jetstream().object_store(QUERY_IMAGES_BUCKET)
        try:
            left = await bucket.list(ignore_deletes=True)
        except nats.js.errors.NotFoundError:
            left = []
        assert left == []
    finally:
        await nc.close()


async def test_an_uploaded_picture_without_any_text_is_indexed_and_found_by_picture(plain_engine: TenantEngine, http) -> None:
    photo = picture(77, (500, 375))
    resp = await upload_bytes(http, plain_engine.url, png(photo), "holiday.png", "image/png")
    assert resp.status == 202, await resp.text()
    doc_id = (await resp.json())["doc_id"]
    status = await wait_status(http, plain_engine.url, doc_id, {"indexed", "failed"}, timeout_s=120)
    assert status["status"] == "indexed" and status["chunks_total"] == 1, status
    status, result = await image_search(http, plain_engine.url, jpeg(photo.resize((250, 188))), content_type="image/jpeg")
    assert status == 200, result
    top = result["hits"][0]
    assert (top["doc_id"], top["modality"], top["text"]) == (doc_id, "image", NO_TEXT), result["hits"][:2]
    assert top["image"]["width"] == 500


async def test_the_text_in_a_query_image_finds_the_page_that_says_it(plain_engine: TenantEngine, http) -> None:
    doc_id = await ingest_album(http, plain_engine)
    screenshot = render_text_image([SENTENCE], width_pt=420, fontsize=14)
    status, result = await image_search(http, plain_engine.url, screenshot, top_k="3")
    assert status == 200, result
    assert len(result["hits"]) <= 3
    top = result["hits"][0]
    assert (top["doc_id"], top["page"]) == (doc_id, 3), result["hits"]
    assert "flow sensor" in top["text"]


async def test_an_image_and_a_question_search_together(plain_engine: TenantEngine, http) -> None:
    doc_id = await ingest_album(http, plain_engine)
    status, result = await image_search(http, plain_engine.url, png(picture(SEEDS[1])), query="inspection notes")
    assert status == 200, result
    pages = {(h["doc_id"], h["page"], h["modality"]) for h in result["hits"]}
    assert (doc_id, 1, "image") in pages


async def test_the_cli_searches_with_an_image(plain_engine: TenantEngine, http, tmp_path: Path) -> None:
    await ingest_album(http, plain_engine)
    query = tmp_path / "station2.jpg"
    query.write_bytes(jpeg(picture(SEEDS[2]).resize((300, 225))))
    env = {**os.environ, **plain_engine.client_env}
    run = subprocess.run([str(BIN / "mmrag"), "search", "--image", str(query), "--url", plain_engine.url, "--top-k", "2"],
                         capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert run.returncode == 0, run.stderr
    first = run.stdout.splitlines()[0]
    assert "album.pdf  page 2" in first and "Figure 2" in first, run.stdout
    missing = subprocess.run([str(BIN / "mmrag"), "search", "--url", plain_engine.url], capture_output=True, text=True,
                             timeout=60, env=env)  # fmt: skip
    assert missing.returncode != 0 and "--image" in missing.stderr


@pytest.mark.parametrize(
    ("fields", "image", "status", "code"),
    [
        ({}, b"%PDF-1.7 not an image", 415, "unsupported_media_type"),
        ({}, b"just some text pretending to be a PNG", 415, "unsupported_media_type"),
        ({}, b"\x89PNG\r\n\x1a\n" + b"\x00" * (QUERY_IMAGE_CAP + 10), 413, "too_large"),
        ({}, png_bomb(), 413, "image_too_large"),
        ({}, b"\x89PNG\r\n\x1a\ngarbage", 400, "invalid_image"),
        ({}, b"", 400, "empty_image"),
        ({"top_k": "many"}, None, 400, "invalid_body"),
        ({"top_k": "0"}, None, 400, "invalid_body"),
        ({"filters": "{not json"}, None, 400, "invalid_body"),
        ({"filters": json.dumps({"tenant": "other"})}, None, 400, "invalid_body"),
        ({"query": "\x01\x02"}, None, 400, "invalid_body"),
        ({"colour": "red"}, None, 400, "invalid_field"),
    ],
    ids=["pdf", "text", "oversized", "bomb", "corrupt", "empty", "top_k-word", "top_k-0", "filters-json",
         "filters-tenant", "query-control", "unknown-field"],
)  # fmt: skip
async def test_bad_image_searches_get_precise_errors(plain_engine: TenantEngine, http, fields, image, status, code) -> None:
    data = png(picture(1)) if image is None else image
    got, body = await image_search(http, plain_engine.url, data, **fields)
    assert (got, body["error"]["code"]) == (status, code), body
    assert body["error"]["message"]


async def test_the_image_cap_is_its_own_setting_not_the_json_body_limit(plain_engine: TenantEngine, http) -> None:
    noise = png(Image.fromarray(np.random.default_rng(0).integers(0, 256, (220, 220, 3), dtype=np.uint8)))
    assert 64 * 1024 < len(noise) < QUERY_IMAGE_CAP  # over the JSON body limit, under MMRAG_MAX_QUERY_IMAGE_BYTES
    status, result = await image_search(http, plain_engine.url, noise)
    assert status == 200, result
    status, result = await image_search(http, plain_engine.url, noise + b"\x00" * QUERY_IMAGE_CAP)
    assert status == 413 and str(QUERY_IMAGE_CAP) in result["error"]["message"], result


async def test_a_form_without_an_image_is_a_400(plain_engine: TenantEngine, http) -> None:
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("query", "pressure")
    async with http.post(f"{plain_engine.url}/v1/search", data=form) as resp:
        body = await resp.json()
    assert (resp.status, body["error"]["code"]) == (400, "missing_field"), body


async def test_with_clip_an_image_finds_its_page_through_the_image_tower(clip_engine: Engine, http) -> None:
    doc_id = await ingest_album(http, clip_engine)
    for page, seed in SEEDS.items():
        for name, data, content_type in copies_of(seed):
            status, result = await image_search(http, clip_engine.url, data, content_type=content_type)
            assert status == 200, (name, result)
            assert_top_is_page(result, doc_id, page)
    assert "clip:tiny-clip" in clip_engine.log_tail(200_000)  # the engine loaded the configured checkpoint


# --------------------------------------------------------------------------- the edge API alone, auth on


async def test_an_image_search_goes_out_for_the_keys_tenant_with_its_image_and_leaves_none(auth_edge) -> None:  # noqa: F811
    nc = auth_edge.nc
    data = png(picture(5))
    form = aiohttp.FormData()
    form.add_field("image", data, filename="q.png", content_type="image/png")
    form.add_field("query", "pump")
    bucket = await nc.jetstream().object_store(QUERY_IMAGES_BUCKET)
    async with requests_seen(nc) as requests:
        search = asyncio.create_task(auth_edge.call("POST", "/v1/search", auth_edge.keys["a_reader"], data=form))
        subject, request = await first_request(requests, search)
        assert subject == f"query.retrieve.{A}" and request.tenant == A  # the key's tenant, never the form's
        assert request.image is not None and request.image.object_name == f"{A}/{request.request_id}"
        assert (request.query, request.mode) == ("pump", QueryMode.SEARCH)
        assert (await bucket.get(request.image.object_name)).data == data  # what the retriever will read
        assert request.image.sha256 == hashlib.sha256(data).hexdigest() and request.image.size == len(data)
        results = ResultsEvent(request_id=request.request_id, seq=0, hits=[])
        await nc.publish(Subjects.answer(A, request.request_id), results.model_dump_json().encode())
        status, body, _ = await asyncio.wait_for(search, WAIT_S)
        assert (status, body) == (200, {"hits": []})
    with pytest.raises(nats.js.errors.NotFoundError):  # removed when the search ended
        await bucket.get(request.image.object_name)
    no_key = aiohttp.FormData()
    no_key.add_field("image", data, filename="q.png", content_type="image/png")
    status, body, _ = await auth_edge.call("POST", "/v1/search", None, data=no_key)
    assert status == 401


# --------------------------------------------------------------------------- below the engine


def _point(i: int, vector: list[float], *, page: int, text_dim: int = 4) -> VectorPoint:
    payload = PointPayload(tenant="t", doc_id="d", revision=1, chunk_id=f"d-{i}", index=i, page=page,
                           modality="image", text=f"image {i}", filename="f.pdf",
                           image=ImageRef(object_name=f"t/d/images/{page}", mime="image/png", width=4, height=4))  # fmt: skip
    text = [1.0] + [0.0] * (text_dim - 1)
    return VectorPoint(id=f"00000000-0000-0000-0000-{i:012d}", payload=payload, text=text, image=vector)


def test_hash_rankings_cut_other_pictures_and_keep_one_hit_per_image(tmp_path: Path) -> None:
    encoder = PerceptualHashEncoder()
    vectors = encoder.embed_images([picture(s) for s in (1, 2, 3)])
    store = EdgeShardStore(tmp_path)
    try:
        store.create_collection("c", CollectionSchema(text_dim=4, image_dim=encoder.dim))
        # Page 1's image has two chunks (long OCR text): both carry its vector.
        store.upsert("c", [_point(1, vectors[0], page=1), _point(2, vectors[0], page=1),
                           _point(3, vectors[1], page=2), _point(4, vectors[2], page=3)])  # fmt: skip
        [query] = encoder.embed_images([picture(1).resize((200, 150))])
        hits = image_ranking(store, "c", ImageQuery(query, encoder.min_score), SearchFilter(tenant="t"), 10)
        assert [h.payload.page for h in hits] == [1]
        # No cut-off: every image, nearest first, still one hit per image.
        ranked = image_ranking(store, "c", ImageQuery(query, None), SearchFilter(tenant="t"), 10)
        assert sorted(h.payload.page for h in ranked) == [1, 2, 3] and ranked[0].payload.page == 1
        # A collection whose image vectors have another size (built with another encoder) is skipped, not an error.
        assert image_ranking(store, "c", ImageQuery([1.0] * 24, None), SearchFilter(tenant="t"), 10) == []
    finally:
        store.close()


async def test_with_clip_a_question_searches_the_images_through_the_text_tower(tmp_path: Path, clip_dir) -> None:
    clip = ClipEncoder(clip_dir)
    images = clip.embed_images([picture(s) for s in (1, 2, 3)])
    queries = CrossModalQueries(None, clip, ocr=False)
    request = QueryRequest(request_id="r", tenant="t", query="overview photo of a pump", mode=QueryMode.SEARCH)
    modal = await queries.prepare(request)
    assert modal.text == request.query and len(modal.images) == 1 and modal.images[0].min_score is None
    [text_vector] = clip.embed_texts([request.query])
    assert np.allclose(modal.images[0].vector, text_vector, atol=1e-6)
    expected = 1 + int(np.argmax(np.array(images) @ np.array(text_vector)))  # the page of the nearest image
    store = EdgeShardStore(tmp_path)
    try:
        store.create_collection("c", CollectionSchema(text_dim=4, image_dim=PROJECTION_DIM))
        store.upsert("c", [_point(page, images[page - 1], page=page) for page in (1, 2, 3)])
        # No text ranking (dense None, no sparse): the fused result is the text -> image ranking alone.
        hits = _search(store, "c", None, None, SearchFilter(tenant="t"), 10, 60.0, modal.images)
        assert hits[0].payload.page == expected and len(hits) == 3
    finally:
        store.close()


def test_a_query_image_belongs_to_its_request_and_only_to_a_search() -> None:
    image = QueryImage(object_name="t/r1", sha256="0" * 64, size=10)
    request = QueryRequest(request_id="r1", tenant="t", image=image, mode=QueryMode.SEARCH)
    assert request.query is None and request.schema_version == QueryRequest.model_fields["schema_version"].default
    with pytest.raises(ValueError, match="<tenant>/<request_id>"):
        QueryRequest(request_id="r1", tenant="t", image=image.model_copy(update={"object_name": "u/r1"}),
                     mode=QueryMode.SEARCH)  # fmt: skip
    with pytest.raises(ValueError, match="only a search"):
        QueryRequest(request_id="r1", tenant="t", image=image, query="why?", mode=QueryMode.ASK)
    with pytest.raises(ValueError, match="query text, an image, or both"):
        QueryRequest(request_id="r1", tenant="t", mode=QueryMode.SEARCH)
