// The tenant's documents: one page of the list at a time (GET /v1/documents: found by name, filtered by status
// and collection, sorted; Next/Previous follow the API's cursors), with live status (while a document shown is
// being ingested, the page follows GET /v1/progress, an event stream of their changes; it falls back to polling
// the list if the stream fails), uploads by drag and drop or the file picker (several at once, one request each,
// into the collections typed beside them), and delete. A document's name opens its page (docpage.js).

import { ApiError, getJSON, request } from "./api.js";
import { parseNames, showCollections } from "./collections.js";
import { readEvents } from "./sse.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 1000;
const PAGE_SIZE = 20;
const TYPING_MS = 250;
const DONE = new Set(["indexed", "failed"]);

let timer = null;
let typing = null;
let listeners = [];
let canWrite = true;
let documents = []; // the page shown
let total = 0;
let cursors = [null]; // cursors[i]: where page i starts (null: the first page)
let pageIndex = 0; // the page asked for
let shownIndex = 0; // the page whose documents are shown (a refresh may be on its way to another)
let nextCursor = null;
let following = false;
let lastUnseen = 0;
let latest = 0; // the number of the last list request sent
let latestCollections = 0;
const UNSEEN_MS = 2000;

// Calls `fn(documents)` after every refresh of the list (the search filter lists the documents).
// What a document's `pages` count, by its type (decisions 66 and 74): an office file or an e-book is navigated by
// section, slide, sheet or chapter, not by printed page; a text, web page or e-mail is one "page", not worth a word.
const PAGE_UNITS = {
  "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "section",
  "application/vnd.openxmlformats-officedocument.presentationml.presentation": "slide",
  "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "sheet",
  "text/csv": "sheet",
  "application/epub+zip": "chapter",
  "text/plain": null,
  "text/markdown": null,
  "text/html": null,
  "message/rfc822": null,
};

// "12 pages", "3 slides", "1 sheet"; null where the count says nothing (a text file) or is not known yet.
export function pageCount(doc) {
  if (doc.pages === null || doc.pages === undefined) return null;
  const unit = doc.content_type in PAGE_UNITS ? PAGE_UNITS[doc.content_type] : "page";
  return unit === null ? null : `${doc.pages} ${unit}${doc.pages === 1 ? "" : "s"}`;
}

export function onDocuments(fn) {
  listeners.push(fn);
}

function progressOf(doc) {
  if (doc.status === "indexed" || doc.status === "failed") return null;
  if (doc.chunks_total) return { value: doc.chunks_indexed, max: doc.chunks_total, label: "chunks indexed" };
  if (doc.pages) return { value: doc.pages_parsed, max: doc.pages, label: "pages parsed" };
  return { value: null, max: null, label: "" };
}

function row(doc) {
  const li = document.createElement("li");
  li.className = "doc";
  li.dataset.docId = doc.doc_id;
  li.dataset.status = doc.status;

  const name = document.createElement("a");
  name.className = "doc-name";
  name.href = `#/documents/${encodeURIComponent(doc.doc_id)}`;
  name.textContent = doc.filename || doc.doc_id;
  const status = document.createElement("span");
  status.className = `badge status-${doc.status}`;
  status.textContent = doc.status;
  const head = document.createElement("div");
  head.className = "doc-head";
  head.append(name, status);
  li.append(head);
  if (doc.collections?.length) {
    const tags = document.createElement("span");
    tags.className = "tags small";
    tags.append(...doc.collections.map((c) => {
      const tag = document.createElement("span");
      tag.className = "tag";
      tag.textContent = c;
      return tag;
    }));
    li.append(tags);
  }

  const progress = progressOf(doc);
  if (progress) {
    const bar = document.createElement("progress");
    bar.setAttribute("aria-label", `${doc.filename}: ${progress.label || doc.status}`);
    if (progress.max) {
      bar.max = progress.max;
      bar.value = progress.value;
    }
    li.append(bar);
    if (progress.max) {
      const text = document.createElement("span");
      text.className = "muted small";
      text.textContent = `${progress.value} / ${progress.max} ${progress.label}`;
      li.append(text);
    }
  } else if (doc.status === "indexed") {
    const text = document.createElement("span");
    text.className = "muted small";
    text.textContent = [pageCount(doc), `${doc.chunks_indexed} chunk${doc.chunks_indexed === 1 ? "" : "s"}`].filter(Boolean).join(", ");
    li.append(text);
  }
  for (const warning of doc.warnings || []) {
    // What indexing could not do well (e.g. a page OCR could not read): the document is still searchable.
    const note = document.createElement("p");
    note.className = "warning small";
    note.textContent = `Warning: ${warning}`;
    li.append(note);
  }
  if (canWrite) {
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "ghost danger small";
    remove.textContent = "Delete";
    remove.setAttribute("aria-label", `Delete ${doc.filename || doc.doc_id}`);
    remove.addEventListener("click", () => confirmDelete(remove, doc));
    li.append(remove);
  }
  return li;
}

// Two steps instead of a blocking confirm(): the first click asks, a second within 5 s deletes.
function confirmDelete(button, doc) {
  if (button.dataset.armed !== "yes") {
    button.dataset.armed = "yes";
    button.textContent = "Really delete?";
    setTimeout(() => {
      button.dataset.armed = "";
      button.textContent = "Delete";
    }, 5000);
    return;
  }
  button.disabled = true;
  request(`/v1/documents/${encodeURIComponent(doc.doc_id)}`, { method: "DELETE" }).then(
    () => {
      message(`Deleted ${doc.filename || doc.doc_id}.`, "ok");
      refresh();
    },
    (err) => {
      button.disabled = false;
      message(`${doc.filename || doc.doc_id} was not deleted: ${err.message}`, "error");
    },
  );
}

function show() {
  // Keep a delete button that is waiting for its second click.
  const armed = [...$("doc-list").querySelectorAll("button[data-armed='yes']")]
    .map((b) => b.closest("li").dataset.docId);
  $("doc-list").replaceChildren(...documents.map((doc) => {
    const li = row(doc);
    if (armed.includes(doc.doc_id)) li.querySelector("button").click();
    return li;
  }));
  const filtered = $("doc-search").value.trim() || $("doc-status").value || $("doc-collection").value;
  $("docs-empty").textContent = filtered ? "No document matches." : "No documents yet.";
  $("docs-empty").hidden = documents.length > 0;
  const first = shownIndex * PAGE_SIZE;
  $("docs-count").textContent = total ? `(${total})` : "";
  $("doc-pager").hidden = total <= PAGE_SIZE && shownIndex === 0;
  $("doc-range").textContent = documents.length ? `${first + 1}–${first + documents.length} of ${total}` : "";
  $("doc-prev").disabled = shownIndex === 0;
  $("doc-next").disabled = !nextCursor;
  for (const fn of listeners) fn(documents);
}

// Follows the progress stream until nothing is in progress (or it ends), then reloads the list.
async function follow() {
  if (following) return;
  following = true;
  let wait = 0;
  try {
    const response = await request("/v1/progress", { accept: "text/event-stream" });
    for await (const { event, data } of readEvents(response)) {
      const body = JSON.parse(data);
      if (event === "document") {
        const i = documents.findIndex((doc) => doc.doc_id === body.doc_id);
        if (i === -1) { // not on this page (or new): the list says where it goes, every 2 s at most
          if (Date.now() - lastUnseen > UNSEEN_MS) {
            lastUnseen = Date.now();
            soon();
          }
        } else {
          documents[i] = body;
          show();
        }
      } else if (event === "deleted") {
        if (documents.some((doc) => doc.doc_id === body.doc_id)) soon();
      } else if (event === "error") {
        wait = POLL_MS;
      }
    }
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) return;
    wait = POLL_MS; // no stream: poll the list instead
  } finally {
    following = false;
  }
  clearTimeout(timer);
  timer = setTimeout(refresh, Math.max(wait, 250)); // never a tight loop, whatever the stream did
}

function listPath() {
  const [sort, order] = $("doc-sort").value.split(":");
  const params = new URLSearchParams({ limit: String(PAGE_SIZE), sort, order });
  const q = $("doc-search").value.trim();
  if (q) params.set("q", q);
  if ($("doc-status").value) params.set("status", $("doc-status").value);
  if ($("doc-collection").value) params.set("collection", $("doc-collection").value);
  if (cursors[pageIndex]) params.set("cursor", cursors[pageIndex]);
  return `/v1/documents?${params}`;
}

// A refresh shortly (several changes in a row make one).
function soon() {
  clearTimeout(typing);
  typing = setTimeout(refresh, TYPING_MS);
}

// The first page again (the search, sort or a filter changed).
function restart() {
  cursors = [null];
  pageIndex = 0;
  soon();
}

async function loadCollections() {
  const mine = ++latestCollections;
  try {
    const list = (await getJSON("/v1/collections")).collections;
    if (mine === latestCollections) showCollections(list);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 401)) $("docs-error").textContent = `Collections: ${err.message}`;
  }
}

export async function refresh({ collections = true } = {}) {
  clearTimeout(timer);
  if (collections) loadCollections();
  const mine = ++latest; // answers can come back out of order: only the latest request's is shown
  const index = pageIndex;
  try {
    const page = await getJSON(listPath());
    if (mine !== latest) return;
    shownIndex = index;
    documents = page.documents;
    total = page.total;
    nextCursor = page.next_cursor;
    if (!documents.length && pageIndex > 0) { // the page emptied (deletes): back to the one before
      pageIndex -= 1;
      return refresh({ collections: false });
    }
    $("docs-error").textContent = "";
  } catch (err) {
    if (mine !== latest) return;
    if (err instanceof ApiError && err.status === 401) return; // signed out: the sign-in form is shown
    $("docs-error").textContent = `The document list could not be loaded: ${err.message}`;
    timer = setTimeout(refresh, POLL_MS * 5);
    return;
  }
  show();
  if (documents.some((doc) => !DONE.has(doc.status))) follow();
}

function message(text, kind) {
  const li = document.createElement("li");
  li.className = kind;
  li.textContent = text;
  $("upload-messages").prepend(li);
  while ($("upload-messages").children.length > 8) $("upload-messages").lastChild.remove();
}

async function upload(file, collections) {
  const form = new FormData();
  if (collections.length) form.append("collections", collections.join(",")); // before the file: read first
  form.append("file", file, file.name);
  try {
    const accepted = await (await request("/v1/documents", { method: "POST", body: form })).json();
    message(`${accepted.filename}: accepted, indexing…`, "ok");
  } catch (err) {
    message(`${file.name} was rejected: ${err.message}`, "error");
  }
}

export async function uploadAll(files) {
  const collections = parseNames($("upload-collections").value);
  await Promise.all([...files].map((file) => upload(file, collections)));
  refresh();
}

// What the signed-in role may do: a reader sees no upload zone and no delete buttons.
export function setRole(session) {
  canWrite = session.role !== "reader";
  $("drop").hidden = !canWrite;
}

export function setupDocuments() {
  $("doc-controls").addEventListener("submit", (event) => event.preventDefault());
  $("doc-search").addEventListener("input", restart);
  for (const id of ["doc-sort", "doc-status", "doc-collection"]) $(id).addEventListener("change", restart);
  // From the page shown (its documents, its next cursor), not from one still being asked for.
  $("doc-next").addEventListener("click", () => {
    if (!nextCursor) return;
    cursors[shownIndex + 1] = nextCursor;
    pageIndex = shownIndex + 1;
    refresh({ collections: false });
  });
  $("doc-prev").addEventListener("click", () => {
    if (shownIndex === 0) return;
    pageIndex = shownIndex - 1;
    refresh({ collections: false });
  });
  const drop = $("drop");
  $("files").addEventListener("change", (event) => {
    uploadAll(event.target.files);
    event.target.value = "";
  });
  for (const type of ["dragenter", "dragover"]) {
    drop.addEventListener(type, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    drop.addEventListener(type, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer?.files?.length) uploadAll(event.dataTransfer.files);
  });
}
