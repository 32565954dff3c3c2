// Ask: POST /v1/ask and render its event stream as it comes: `token` text as Markdown, `citation` events as
// the numbered sources ([n] in the text opens source n on its page, the cited region highlighted), image hits
// as thumbnails, `reset` discards the text so far, `done` with `abstained` says "not found", `error` says why.
// Every question is asked in the open conversation (conversations.js): a follow-up is understood, `retrieval`
// says which question was searched, and the answer becomes the conversation's last turn, shown here.

import { request } from "./api.js";
import { withCollections } from "./collections.js";
import { answered, asking, conversationForAsk, setupConversations } from "./conversations.js";
import { renderMarkdown } from "./markdown.js";
import { readEvents } from "./sse.js";
import { imageThumbnail, openPage, where } from "./viewer.js";

const $ = (id) => document.getElementById(id);
const NOT_FOUND = "Not found in your documents.";

let controller = null;
let citations = new Map(); // n -> citation event of the answer shown

// The image hits the answer rests on: cited ones, and those on a cited page (a figure beside the cited text).
function showImages(hits) {
  const cited = [...citations.values()];
  const pages = new Set(cited.map((c) => `${c.doc_id}:${c.page}`));
  const seen = new Set();
  const images = [
    ...cited.filter((c) => c.image).map((c) => ({ ...c, modality: "image" })),
    ...hits.filter((hit) => hit.image && pages.has(`${hit.doc_id}:${hit.page}`)),
  ].filter((hit) => !seen.has(hit.image.object_name) && seen.add(hit.image.object_name));
  $("answer-images").replaceChildren(...images.map((hit) => imageThumbnail(hit)));
}

function sourceItem(citation) {
  const li = document.createElement("li");
  li.id = `source-${citation.n}`;
  li.value = citation.n;
  const open = document.createElement("button");
  open.type = "button";
  open.className = "link";
  open.dataset.cite = String(citation.n);
  open.textContent = `${citation.filename}, ${where(citation)}`;
  const quote = document.createElement("span");
  quote.className = "muted small quote";
  quote.textContent = citation.text.length > 240 ? `${citation.text.slice(0, 240)}…` : citation.text;
  li.append(open, " ", quote);
  return li;
}

function resetAnswer() {
  citations = new Map();
  $("answer").replaceChildren();
  $("answer").classList.remove("abstained");
  $("sources").replaceChildren();
  $("sources-title").hidden = true;
  $("answer-images").replaceChildren();
  $("answer-status").textContent = "";
}

// A stored turn (a reload, another conversation opened) in the live answer area.
function showTurn(turn) {
  resetAnswer();
  $("answer-area").hidden = false;
  $("answer-question").textContent = turn.question;
  if (turn.abstained || !turn.answer.trim()) {
    $("answer").classList.add("abstained");
    $("answer").textContent = NOT_FOUND;
  } else {
    $("answer").innerHTML = renderMarkdown(turn.answer);
    for (const c of turn.citations) {
      citations.set(c.n, c);
      $("sources").append(sourceItem(c));
    }
    $("sources-title").hidden = turn.citations.length === 0;
  }
  $("answer-status").textContent = searchedNote(`Answered by ${turn.answerer}.`, turn.question, turn.searched);
}

function clearAnswer() {
  resetAnswer();
  $("answer-area").hidden = true;
}

function searchedNote(text, question, searched) {
  return searched && searched !== question ? `${text} Searched: “${searched}”.` : text;
}

async function ask(question, { regenerate = false } = {}) {
  controller?.abort();
  controller = new AbortController();
  const status = $("answer-status");
  const answer = $("answer");
  citations = new Map();
  let hits = [];
  let text = "";
  let searched = question;
  let conversationId = null;
  let finished = false;
  $("answer-area").hidden = false;
  $("answer-question").textContent = question;
  answer.replaceChildren();
  answer.classList.remove("abstained");
  $("sources").replaceChildren();
  $("sources-title").hidden = true;
  $("answer-images").replaceChildren();
  status.textContent = "Searching your documents…";
  $("ask-button").disabled = true;
  try {
    asking({ regenerate });
    conversationId = await conversationForAsk();
    const filters = withCollections("ask"); // the collections chosen under the question, if any
    const json = { question, conversation_id: conversationId, ...(regenerate ? { regenerate: true } : {}),
      ...(filters ? { filters } : {}) };
    const response = await request("/v1/ask", {
      method: "POST", json, signal: controller.signal, accept: "text/event-stream",
    });
    for await (const { event, data } of readEvents(response)) {
      const body = JSON.parse(data);
      if (event === "retrieval") {
        searched = body.searched || question;
        status.textContent = searchedNote(body.hits.length ? "Writing the answer…" : "Nothing relevant found.",
          question, searched);
        hits = body.hits;
      } else if (event === "token") {
        text += body.text;
        answer.innerHTML = renderMarkdown(text); // escaped first: see markdown.js
      } else if (event === "reset") {
        text = "";
        answer.replaceChildren();
        citations.clear();
        $("sources").replaceChildren();
        $("answer-images").replaceChildren();
        status.textContent = "Retrying with another model…";
      } else if (event === "citation") {
        citations.set(body.n, body);
        $("sources").append(sourceItem(body));
        $("sources-title").hidden = false;
        showImages(hits);
      } else if (event === "done") {
        if (body.abstained || !text.trim()) {
          answer.classList.add("abstained");
          answer.textContent = NOT_FOUND;
          $("sources").replaceChildren();
          $("sources-title").hidden = true;
          $("answer-images").replaceChildren();
          status.textContent = "";
        } else {
          status.textContent = searchedNote(`Answered by ${body.answerer}.`, question, searched);
        }
        finished = true;
      } else if (event === "error") {
        status.textContent = "";
        answer.insertAdjacentHTML("beforeend", "<p class=\"error\"></p>");
        answer.lastChild.textContent = `The answer failed: ${body.message}`;
      }
    }
    // The stream has ended: the server has kept the answer as the conversation's turn (it does so before the end).
    if (finished) await answered(conversationId);
  } catch (err) {
    if (err.name === "AbortError") return;
    status.textContent = "";
    const p = document.createElement("p");
    p.className = "error";
    p.setAttribute("role", "alert");
    p.textContent = err.message;
    answer.replaceChildren(p);
  } finally {
    $("ask-button").disabled = false;
  }
}

function openCitation(event) {
  const button = event.target.closest("[data-cite]");
  if (!button) return;
  const citation = citations.get(Number(button.dataset.cite));
  if (citation) openPage(citation);
}

export function setupAsk() {
  setupConversations({ showTurn, clearAnswer, regenerate: (question) => ask(question, { regenerate: true }) });
  $("ask-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const question = $("question").value.trim();
    if (question) ask(question);
  });
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { // Enter asks; Shift+Enter is a new line
      event.preventDefault();
      $("ask-form").requestSubmit();
    }
  });
  $("answer").addEventListener("click", openCitation);
  $("sources").addEventListener("click", openCitation);
}
