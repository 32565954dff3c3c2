// A document's page (#/documents/<doc_id>): its status, size and warnings, its collections (editable: PATCH),
// parse again (POST .../reparse: a new revision from the stored upload), its pages as thumbnails (a dozen at a
// time, each opens the viewer), and its passages and tables page by page (GET .../passages) or found by a search
// scoped to it. While it is being ingested, its status is read again every second.

import { ApiError, getJSON, request } from "./api.js";
import { parseNames } from "./collections.js";
import { pageCount, refresh } from "./documents.js";
import { plainPageThumbnail, pageThumbnail } from "./viewer.js";

const $ = (id) => document.getElementById(id);
const PAGES_AT_ONCE = 12;
const POLL_MS = 1000;
const DONE = new Set(["indexed", "failed"]);
const PICTURED = new Set(["application/pdf", "image/png", "image/jpeg", "image/webp", "image/tiff", "image/gif"]);

let doc = null;
let firstPage = 1;
let canWrite = true;
let poll = null;
let passagesPage = 1;

export function setDocRole(session) {
  canWrite = session.role !== "reader";
}

function bytes(n) {
  if (n === null || n === undefined) return "size unknown";
  if (n < 1024) return `${n} bytes`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function showPages() {
  const pages = doc.pages || 0;
  const pictured = PICTURED.has(doc.content_type) && doc.status !== "failed" && pages > 0;
  const last = Math.min(pages, firstPage + PAGES_AT_ONCE - 1);
  $("doc-pages").replaceChildren(...(pictured ? Array.from({ length: last - firstPage + 1 }, (_, i) => plainPageThumbnail(doc, firstPage + i)) : []));
  if (!pictured) {
    const p = document.createElement("p");
    p.className = "muted small";
    p.textContent = pages ? "No page pictures for this kind of file: its passages are below, each with where it is." : "No pages yet.";
    $("doc-pages").append(p);
  }
  $("doc-pages-pager").hidden = !pictured || pages <= PAGES_AT_ONCE;
  $("doc-pages-range").textContent = `pages ${firstPage}–${last} of ${pages}`;
  $("doc-pages-prev").disabled = firstPage <= 1;
  $("doc-pages-next").disabled = last >= pages;
}

// The status part (read again while the document is ingested).
function showStatus() {
  $("doc-page-title").textContent = doc.filename || doc.doc_id;
  $("doc-page-status").textContent = doc.status;
  $("doc-page-status").className = `badge status-${doc.status}`;
  $("doc-page").dataset.status = doc.status;
  const uploaded = new Date(parseInt(doc.doc_id.slice(0, 12), 16));
  $("doc-page-meta").textContent = [
    bytes(doc.size), pageCount(doc),
    `${doc.chunks_indexed} passage${doc.chunks_indexed === 1 ? "" : "s"} indexed`,
    Number.isNaN(uploaded.getTime()) ? null : `uploaded ${uploaded.toLocaleString()}`,
    `changed ${new Date(doc.updated_at).toLocaleString()}`,
  ].filter(Boolean).join(" · ");
  $("doc-page-error").textContent = doc.error || "";
  $("doc-page-warnings").replaceChildren(...(doc.warnings || []).map((text) => {
    const li = document.createElement("li");
    li.textContent = text;
    return li;
  }));
  clearTimeout(poll);
  if (!DONE.has(doc.status)) poll = setTimeout(follow, POLL_MS);
}

function show() {
  showStatus();
  $("doc-collections").value = (doc.collections || []).join(", ");
  $("doc-collections").readOnly = !canWrite;
  $("doc-collections-save").hidden = !canWrite;
  $("doc-reparse").hidden = !canWrite;
  showPages();
}

// The status again while the document is ingested and its page shown (the pages appear as they are parsed).
async function follow() {
  if (!doc || $("doc-page").hidden) return;
  try {
    const fresh = await getJSON(`/v1/documents/${encodeURIComponent(doc.doc_id)}`);
    if (!doc || fresh.doc_id !== doc.doc_id) return;
    const pagesChanged = fresh.pages !== doc.pages || DONE.has(fresh.status);
    const finished = !DONE.has(doc.status) && DONE.has(fresh.status);
    doc = fresh;
    showStatus();
    if (pagesChanged) showPages();
    if (finished && !$("doc-passages-query").value.trim()) pagePassages(passagesPage);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) poll = setTimeout(follow, POLL_MS * 5);
  }
}

function message(text, kind = "ok") {
  $("doc-page-message").textContent = text;
  $("doc-page-message").className = `small ${kind}`;
}

async function load(docId) {
  clearTimeout(poll);
  doc = null;
  firstPage = 1;
  $("doc-passages").replaceChildren();
  $("doc-passages-status").textContent = "";
  $("doc-passages-query").value = "";
  message("");
  try {
    doc = await getJSON(`/v1/documents/${encodeURIComponent(docId)}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return;
    $("doc-page-title").textContent = "Document not found";
    $("doc-page-error").textContent = err.message;
    return;
  }
  show();
  pagePassages(1);
}

// A new revision came back from PATCH or reparse: show it, and the list when we go back.
function changed(view, text) {
  doc = view;
  show();
  message(text);
  refresh();
}

async function saveCollections(event) {
  event.preventDefault();
  if (!doc) return;
  try {
    const response = await request(`/v1/documents/${encodeURIComponent(doc.doc_id)}/collections`, {
      method: "PUT", json: { collections: parseNames($("doc-collections").value) },
    });
    changed(await response.json(), response.status === 202
      ? "Saved: the document is indexed again with its new collections." : "Nothing changed.");
  } catch (err) {
    message(`Not saved: ${err.message}`, "error");
  }
}

async function reparse() {
  if (!doc) return;
  $("doc-reparse").disabled = true;
  try {
    const response = await request(`/v1/documents/${encodeURIComponent(doc.doc_id)}/reparse`, { method: "POST" });
    changed(await response.json(), "Parsing again from the stored upload.");
  } catch (err) {
    message(`Not parsed again: ${err.message}`, "error");
  } finally {
    $("doc-reparse").disabled = false;
  }
}

function passage(hit) {
  const li = document.createElement("li");
  li.className = "hit";
  li.dataset.modality = hit.modality;
  const info = document.createElement("div");
  info.className = "hit-text";
  const meta = document.createElement("p");
  meta.className = "muted small";
  meta.textContent = `Page ${hit.page} · ${hit.modality}`;
  const text = document.createElement(hit.modality === "table" ? "pre" : "p");
  text.textContent = hit.text;
  info.append(meta, text);
  li.append(pageThumbnail(hit, 160), info);
  return li;
}

function showPassageList(hits, status) {
  $("doc-passages").replaceChildren(...hits.map(passage));
  $("doc-passages-status").textContent = status;
}

// The passages of page `page` (the document's chunks there, in order).
async function pagePassages(page) {
  if (!doc) return;
  passagesPage = Math.max(1, page);
  const pages = doc.pages || 1;
  $("doc-passages-pager").hidden = pages <= 1;
  $("doc-passages-range").textContent = `page ${passagesPage} of ${pages}`;
  $("doc-passages-prev").disabled = passagesPage <= 1;
  $("doc-passages-next").disabled = passagesPage >= pages;
  try {
    const path = `/v1/documents/${encodeURIComponent(doc.doc_id)}/passages?page=${passagesPage}`;
    const hits = (await getJSON(path)).passages;
    showPassageList(hits, hits.length ? "" : `No passage indexed on page ${passagesPage}.`);
  } catch (err) {
    showPassageList([], `The passages could not be loaded: ${err.message}`);
  }
}

async function findPassages(event) {
  event.preventDefault();
  const query = $("doc-passages-query").value.trim();
  if (!doc) return;
  if (!query) { // an empty search: back to the passages page by page
    pagePassages(passagesPage);
    return;
  }
  $("doc-passages-status").textContent = "Searching…";
  $("doc-passages-pager").hidden = true;
  try {
    const body = { query, top_k: 20, filters: { doc_ids: [doc.doc_id] } };
    const hits = (await getJSON("/v1/search", { method: "POST", json: body })).hits;
    hits.sort((a, b) => a.page - b.page);
    showPassageList(hits, hits.length
      ? `${hits.length} passage${hits.length === 1 ? "" : "s"} found, in page order (clear the search to list them all).`
      : "Nothing found in this document.");
  } catch (err) {
    showPassageList([], `The search failed: ${err.message}`);
  }
}

// Which view the address asks for: a document's page, or the app (questions and the list).
export function route() {
  const match = location.hash.match(/^#\/documents\/([A-Za-z0-9_-]{1,64})$/);
  $("doc-page").hidden = !match;
  $("app").hidden = Boolean(match);
  if (match) {
    load(match[1]);
    $("doc-page-title").focus?.();
  }
}

export function setupDocPage() {
  window.addEventListener("hashchange", route);
  $("doc-back").addEventListener("click", (event) => {
    event.preventDefault();
    history.pushState(null, "", location.pathname + location.search);
    route();
  });
  $("doc-collections-form").addEventListener("submit", saveCollections);
  $("doc-reparse").addEventListener("click", reparse);
  $("doc-passages-form").addEventListener("submit", findPassages);
  $("doc-passages-prev").addEventListener("click", () => pagePassages(passagesPage - 1));
  $("doc-passages-next").addEventListener("click", () => pagePassages(passagesPage + 1));
  $("doc-pages-prev").addEventListener("click", () => { firstPage = Math.max(1, firstPage - PAGES_AT_ONCE); showPages(); });
  $("doc-pages-next").addEventListener("click", () => { firstPage += PAGES_AT_ONCE; showPages(); });
}
