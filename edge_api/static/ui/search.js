// Search: by text (POST /v1/search, JSON) or by image (the same endpoint, multipart with an `image` field).
// Results are grouped by document, best document first, each hit as a page thumbnail with its region
// highlighted. Filters (document, kinds of content) are sent as `filters` only when the user set one, so a
// plain search is the plain body every server version accepts.

import { request } from "./api.js";
import { withCollections } from "./collections.js";
import { onDocuments } from "./documents.js";
import { pageThumbnail, where } from "./viewer.js";

const $ = (id) => document.getElementById(id);
const ALL_MODALITIES = ["text", "table", "image"];
const MODALITY_NAMES = { text: "text", table: "table", image: "image" };

function pageNumber(id, name) {
  const raw = $(id).value.trim();
  if (raw === "") return null;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1) throw new Error(`pages ${name}: a whole number from 1`);
  return value;
}

function filters() {
  const out = {};
  const doc = $("filter-doc").value;
  if (doc) out.doc_ids = [doc];
  const kinds = [...document.querySelectorAll("input[name=modality]:checked")].map((box) => box.value);
  if (kinds.length === 0) throw new Error("choose at least one kind of content (text, tables or images)");
  if (kinds.length < ALL_MODALITIES.length) out.modalities = kinds;
  const from = pageNumber("page-from", "from");
  const to = pageNumber("page-to", "to");
  if (from !== null && to !== null && from > to) throw new Error(`the page range ${from}–${to} is empty`);
  if (from !== null) out.page_from = from;
  if (to !== null) out.page_to = to;
  return withCollections("search", Object.keys(out).length ? out : null);
}

function groupByDocument(hits) {
  const groups = new Map();
  for (const hit of hits) {
    if (!groups.has(hit.doc_id)) groups.set(hit.doc_id, { filename: hit.filename, hits: [] });
    groups.get(hit.doc_id).hits.push(hit);
  }
  return [...groups.entries()];
}

function hitItem(hit) {
  const li = document.createElement("li");
  li.className = "hit";
  li.dataset.page = String(hit.page);
  li.dataset.modality = hit.modality;
  const info = document.createElement("div");
  info.className = "hit-text";
  const meta = document.createElement("p");
  meta.className = "muted small";
  const place = where(hit);
  meta.textContent = `${place[0].toUpperCase()}${place.slice(1)} · ${MODALITY_NAMES[hit.modality] || hit.modality} · score ${hit.score.toFixed(3)}`;
  const text = document.createElement("p");
  text.textContent = hit.text.length > 400 ? `${hit.text.slice(0, 400)}…` : hit.text;
  info.append(meta, text);
  li.append(pageThumbnail(hit), info);
  return li;
}

function show(hits) {
  const results = $("results");
  if (!hits.length) {
    $("search-status").textContent = "No matches in your documents.";
    results.replaceChildren();
    return;
  }
  $("search-status").textContent = `${hits.length} match${hits.length === 1 ? "" : "es"}.`;
  results.replaceChildren(...groupByDocument(hits).map(([docId, group]) => {
    const section = document.createElement("section");
    section.className = "doc-group";
    section.dataset.docId = docId;
    const title = document.createElement("h3");
    title.textContent = group.filename;
    const list = document.createElement("ul");
    list.className = "hits";
    list.append(...group.hits.map(hitItem));
    section.append(title, list);
    return section;
  }));
}

async function run(send) {
  $("search-status").textContent = "Searching…";
  $("search-button").disabled = true;
  try {
    const response = await send();
    show((await response.json()).hits);
  } catch (err) {
    $("results").replaceChildren();
    $("search-status").textContent = `The search failed: ${err.message}`;
  } finally {
    $("search-button").disabled = false;
  }
}

function searchText() {
  const query = $("query").value.trim();
  if (!query) {
    $("search-status").textContent = "Type something to search for, or drop an image.";
    return;
  }
  let chosen;
  try {
    chosen = filters();
  } catch (err) {
    $("search-status").textContent = err.message;
    return;
  }
  const body = { query };
  if (chosen) body.filters = chosen;
  run(() => request("/v1/search", { method: "POST", json: body }));
}

function searchImage(file) {
  if (!file.type.startsWith("image/")) {
    $("search-status").textContent = `${file.name} is not an image.`;
    return;
  }
  $("image-drop-text").textContent = `Search by image: ${file.name}`;
  const preview = $("image-preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(file);
  preview.alt = `The image searched for: ${file.name}`;
  preview.hidden = false;
  const form = new FormData();
  form.append("image", file, file.name);
  run(() => request("/v1/search", { method: "POST", body: form }));
}

export function setupSearch() {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    searchText();
  });
  $("search-image").addEventListener("change", (event) => {
    if (event.target.files.length) searchImage(event.target.files[0]);
    event.target.value = "";
  });
  const drop = $("image-drop");
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) drop.addEventListener(type, () => drop.classList.remove("over"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    const file = event.dataTransfer?.files?.[0];
    if (file) searchImage(file);
  });
  onDocuments((documents) => {
    const select = $("filter-doc");
    const chosen = select.value;
    const options = documents
      .filter((doc) => doc.status === "indexed")
      .map((doc) => new Option(doc.filename || doc.doc_id, doc.doc_id, false, doc.doc_id === chosen));
    select.replaceChildren(new Option("All documents", ""), ...options);
  });
}
