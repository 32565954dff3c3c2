// The tenant's documents: the list with live status (while any document is being ingested, the page follows
// GET /v1/progress, an event stream of their changes; it falls back to polling the list if the stream fails),
// uploads by drag and drop or the file picker (several at once, one request each), and delete.

import { ApiError, getJSON, request } from "./api.js";
import { readEvents } from "./sse.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 1000;
const DONE = new Set(["indexed", "failed"]);

let timer = null;
let listeners = [];
let canWrite = true;
let documents = []; // as last shown, newest first
let following = false;

// Calls `fn(documents)` after every refresh of the list (the search filter lists the documents).
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

  const name = document.createElement("span");
  name.className = "doc-name";
  name.textContent = doc.filename || doc.doc_id;
  const status = document.createElement("span");
  status.className = `badge status-${doc.status}`;
  status.textContent = doc.status;
  const head = document.createElement("div");
  head.className = "doc-head";
  head.append(name, status);
  li.append(head);

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
    text.textContent = `${doc.pages ?? "?"} page${doc.pages === 1 ? "" : "s"}, ${doc.chunks_indexed} chunk${doc.chunks_indexed === 1 ? "" : "s"}`;
    li.append(text);
  }
  if (doc.error) {
    const error = document.createElement("p");
    error.className = "error small";
    error.textContent = doc.error;
    li.append(error);
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
  $("docs-empty").hidden = documents.length > 0;
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
        if (i === -1) documents.unshift(body);
        else documents[i] = body;
        show();
      } else if (event === "deleted") {
        documents = documents.filter((doc) => doc.doc_id !== body.doc_id);
        show();
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

export async function refresh() {
  clearTimeout(timer);
  try {
    documents = (await getJSON("/v1/documents?limit=200")).documents;
    $("docs-error").textContent = "";
  } catch (err) {
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

async function upload(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  try {
    const accepted = await (await request("/v1/documents", { method: "POST", body: form })).json();
    message(`${accepted.filename}: accepted, indexing…`, "ok");
  } catch (err) {
    message(`${file.name} was rejected: ${err.message}`, "error");
  }
}

export async function uploadAll(files) {
  await Promise.all([...files].map(upload));
  refresh();
}

// What the signed-in role may do: a reader sees no upload zone and no delete buttons.
export function setRole(session) {
  canWrite = session.role !== "reader";
  $("drop").hidden = !canWrite;
}

export function setupDocuments() {
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
