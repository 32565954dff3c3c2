// Conversations: the history list (select, rename, delete, new chat), the earlier turns of the selected
// conversation above the live answer, and the actions on an answer (copy, thumbs up/down, regenerate the last).
// The server keeps everything (GET/POST/PATCH/DELETE /v1/conversations, PUT .../turns/{n}/feedback); this tab
// only remembers which conversation is open (sessionStorage), so a reload shows the same conversation again.
// ask.js asks in the open conversation (`conversationForAsk`) and reports each finished answer (`answered`).

import { getJSON, request } from "./api.js";
import { renderMarkdown } from "./markdown.js";
import { openPage } from "./viewer.js";

const $ = (id) => document.getElementById(id);
const OPEN_ITEM = "mmrag.conversation";

let current = null; // the open conversation, with its turns (GET /v1/conversations/{id})
let hooks = { showTurn: () => {}, clearAnswer: () => {}, regenerate: () => {} };

function el(tag, { cls, text, attrs } = {}) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, value);
  return node;
}

function button(text, cls, attrs = {}) {
  const b = el("button", { cls, text, attrs: { type: "button", ...attrs } });
  return b;
}

// --------------------------------------------------------------------------- the open conversation

function remember(id) {
  if (id) sessionStorage.setItem(OPEN_ITEM, id);
  else sessionStorage.removeItem(OPEN_ITEM);
}

async function open(id) {
  current = await getJSON(`/v1/conversations/${encodeURIComponent(id)}`);
  remember(current.id);
  render();
  markOpen();
}

// The conversation a question goes to: the open one, else a new one (named by the server after the question).
export async function conversationForAsk() {
  if (current) return current.id;
  const created = await (await request("/v1/conversations", { method: "POST", json: {} })).json();
  current = created;
  remember(created.id);
  return created.id;
}

// An answer of the open conversation finished: read the conversation again (its turns, its title) and the list.
export async function answered(id) {
  if (!current || current.id !== id) return;
  current = await getJSON(`/v1/conversations/${encodeURIComponent(id)}`);
  $("conversation-title").textContent = current.title; // named after its first question
  renderTranscript();
  renderActions();
  await refreshConversations();
}

// A question is about to be asked: the answer shown so far becomes an earlier turn (a regenerated one does not).
export function asking({ regenerate = false } = {}) {
  const earlier = current ? (regenerate ? current.turns.slice(0, -1) : current.turns) : [];
  $("transcript").replaceChildren(...earlier.map(turnView));
  $("answer-actions").replaceChildren();
}

function newChat() {
  current = null;
  remember(null);
  render();
  markOpen();
  $("question").focus();
}

// --------------------------------------------------------------------------- the history list

export async function refreshConversations() {
  const list = $("conversation-list");
  if (!list) return;
  let conversations = [];
  try {
    conversations = (await getJSON("/v1/conversations")).conversations;
  } catch (err) {
    $("conversations-error").textContent = `Conversations are unavailable: ${err.message}`;
    return;
  }
  $("conversations-error").textContent = "";
  list.replaceChildren(...conversations.map(listItem));
  $("conversations-empty").hidden = conversations.length > 0;
  markOpen();
  const wanted = sessionStorage.getItem(OPEN_ITEM);
  if (!current && wanted && conversations.some((c) => c.id === wanted)) await open(wanted);
}

function listItem(conversation) {
  const li = el("li", { cls: "conversation", attrs: { "data-id": conversation.id } });
  const select = button(conversation.title, "link conversation-title", { "data-action": "open" });
  const count = el("span", { cls: "muted small", text: ` ${conversation.turn_count} ${conversation.turn_count === 1 ? "turn" : "turns"}` });
  const rename = button("Rename", "ghost small", { "data-action": "rename", "aria-label": `Rename ${conversation.title}` });
  const remove = button("Delete", "ghost small danger", { "data-action": "delete", "aria-label": `Delete ${conversation.title}` });
  li.append(select, count, rename, remove);
  return li;
}

function markOpen() {
  for (const li of document.querySelectorAll("#conversation-list li")) {
    const isOpen = Boolean(current) && li.dataset.id === current.id;
    li.classList.toggle("open", isOpen);
    li.querySelector(".conversation-title").setAttribute("aria-current", String(isOpen));
  }
}

function startRename(li) {
  const title = li.querySelector(".conversation-title");
  const input = el("input", { cls: "rename", attrs: { type: "text", maxlength: "200", "aria-label": "New title" } });
  input.value = title.textContent;
  title.replaceWith(input);
  input.focus();
  input.select();
  let done = false;
  const finish = async (save) => {
    if (done) return;
    done = true;
    const value = input.value.trim();
    if (save && value && value !== title.textContent) {
      try {
        await request(`/v1/conversations/${encodeURIComponent(li.dataset.id)}`, { method: "PATCH", json: { title: value } });
        if (current && current.id === li.dataset.id) {
          current.title = value;
          $("conversation-title").textContent = value;
        }
      } catch (err) {
        $("conversations-error").textContent = err.message;
      }
    }
    await refreshConversations();
  };
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") { event.preventDefault(); finish(true); }
    if (event.key === "Escape") { event.preventDefault(); finish(false); }
  });
  input.addEventListener("blur", () => finish(true));
}

async function remove(li) {
  const title = li.querySelector(".conversation-title")?.textContent || "this conversation";
  if (!window.confirm(`Delete “${title}” and all its answers?`)) return;
  try {
    await request(`/v1/conversations/${encodeURIComponent(li.dataset.id)}`, { method: "DELETE" });
  } catch (err) {
    $("conversations-error").textContent = err.message;
    return;
  }
  if (current && current.id === li.dataset.id) newChat();
  await refreshConversations();
}

// --------------------------------------------------------------------------- turns and their actions

function sourcesOf(turn) {
  const ol = el("ol", { cls: "sources" });
  for (const c of turn.citations) {
    const li = el("li", { attrs: { value: String(c.n) } });
    const b = button(`${c.filename}, page ${c.page}`, "link", { "data-turn": String(turn.n), "data-cite": String(c.n) });
    li.append(b);
    ol.append(li);
  }
  return ol;
}

function turnView(turn) {
  const article = el("article", { cls: "turn", attrs: { "data-turn": String(turn.n) } });
  article.append(el("p", { cls: "turn-question", text: turn.question }));
  if (turn.searched && turn.searched !== turn.question) {
    article.append(el("p", { cls: "muted small searched", text: `Searched: ${turn.searched}` }));
  }
  const answer = el("div", { cls: "answer turn-answer" });
  answer.innerHTML = renderMarkdown(turn.answer); // escaped first: see markdown.js
  if (turn.abstained) answer.classList.add("abstained");
  article.append(answer);
  if (turn.citations.length) article.append(sourcesOf(turn));
  article.append(actions(turn, false));
  return article;
}

function actions(turn, isLast) {
  const bar = el("div", { cls: "turn-actions", attrs: { "data-turn": String(turn.n) } });
  bar.append(el("span", { cls: "muted small", text: `Answered by ${turn.answerer}.` }));
  bar.append(button("Copy", "ghost small", { "data-action": "copy", "aria-label": "Copy the answer" }));
  const rating = turn.feedback ? turn.feedback.rating : null;
  bar.append(button("👍 Good", "ghost small rate", { "data-action": "up", "aria-label": "Good answer", "aria-pressed": String(rating === "up") }));
  bar.append(button("👎 Bad", "ghost small rate", { "data-action": "down", "aria-label": "Bad answer", "aria-pressed": String(rating === "down") }));
  if (isLast) bar.append(button("Regenerate", "ghost small", { "data-action": "regenerate" }));
  bar.append(el("span", { cls: "muted small action-status", attrs: { role: "status" } }));
  return bar;
}

function renderTranscript() {
  const transcript = $("transcript");
  const earlier = current ? current.turns.slice(0, -1) : [];
  transcript.replaceChildren(...earlier.map(turnView));
}

// The last turn is shown in the live answer area (ask.js); its actions go under it.
function renderActions() {
  const holder = $("answer-actions");
  const last = current && current.turns.length ? current.turns[current.turns.length - 1] : null;
  holder.replaceChildren(...(last ? [actions(last, true)] : []));
}

function render() {
  $("conversation-title").textContent = current ? current.title : "New conversation";
  renderTranscript();
  const last = current && current.turns.length ? current.turns[current.turns.length - 1] : null;
  if (last) hooks.showTurn(last);
  else hooks.clearAnswer();
  renderActions();
}

function turnOf(n) {
  return current ? current.turns.find((t) => t.n === n) : null;
}

async function copy(turn, status) {
  try {
    if (navigator.clipboard && window.isSecureContext) {
      await navigator.clipboard.writeText(turn.answer);
    } else { // plain http on another host: the older way
      const area = el("textarea");
      area.value = turn.answer;
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    status.textContent = "Copied.";
  } catch (err) {
    status.textContent = `Could not copy: ${err.message}`;
  }
}

async function rate(turn, rating, bar) {
  const status = bar.querySelector(".action-status");
  try {
    const path = `/v1/conversations/${encodeURIComponent(current.id)}/turns/${turn.n}/feedback`;
    const stored = await (await request(path, { method: "PUT", json: { rating } })).json();
    Object.assign(turn, stored);
    for (const b of bar.querySelectorAll(".rate")) b.setAttribute("aria-pressed", String(b.dataset.action === rating));
    status.textContent = "Thanks for the feedback.";
  } catch (err) {
    status.textContent = err.message;
  }
}

async function onTurnAction(event) {
  const target = event.target.closest("button");
  if (!target || !current) return;
  const bar = target.closest(".turn-actions");
  const cite = target.dataset.cite;
  const turnN = target.dataset.turn || target.closest("article.turn")?.dataset.turn;
  if (cite && turnN) { // a source of an earlier turn, or its [n] in the answer
    const turn = turnOf(Number(turnN));
    const citation = turn && turn.citations.find((c) => c.n === Number(cite));
    if (citation) openPage(citation);
    return;
  }
  if (!bar) return;
  const turn = turnOf(Number(bar.dataset.turn));
  if (!turn) return;
  const action = target.dataset.action;
  if (action === "copy") await copy(turn, bar.querySelector(".action-status"));
  else if (action === "up" || action === "down") await rate(turn, action, bar);
  else if (action === "regenerate") hooks.regenerate(turn.question);
}

// --------------------------------------------------------------------------- setup

function build() {
  const panel = $("ask");
  const aside = el("div", { cls: "conversations", attrs: { id: "conversations" } });
  const head = el("div", { cls: "conversations-head" });
  head.append(el("h3", { text: "Conversations" }), button("New chat", "ghost small", { id: "new-chat" }));
  aside.append(
    head,
    el("p", { cls: "muted small", text: "No conversations yet.", attrs: { id: "conversations-empty" } }),
    el("ul", { cls: "conversation-list", attrs: { id: "conversation-list" } }),
    el("p", { cls: "error small", attrs: { id: "conversations-error", role: "alert" } }),
  );
  const title = el("h3", { cls: "conversation-heading", attrs: { id: "conversation-title" }, text: "New conversation" });
  const transcript = el("div", { cls: "transcript", attrs: { id: "transcript" } });
  panel.prepend(aside, title, transcript);
  // The live answer (ask.js) is the conversation's last turn: it goes under the earlier turns, above the question.
  const form = $("ask-form");
  form.before($("answer-area"));
  $("answer-area").prepend(el("p", { cls: "turn-question", attrs: { id: "answer-question" } }));
  $("answer-area").append(el("div", { attrs: { id: "answer-actions" } }));
}

export function setupConversations(askHooks) {
  hooks = askHooks;
  build();
  $("new-chat").addEventListener("click", newChat);
  $("conversation-list").addEventListener("click", (event) => {
    const target = event.target.closest("button");
    const li = event.target.closest("li.conversation");
    if (!target || !li) return;
    if (target.dataset.action === "open") open(li.dataset.id).catch((err) => { $("conversations-error").textContent = err.message; });
    else if (target.dataset.action === "rename") startRename(li);
    else if (target.dataset.action === "delete") remove(li);
  });
  $("transcript").addEventListener("click", onTurnAction);
  $("answer-actions").addEventListener("click", onTurnAction);
}

// Signed out: nothing of that key's conversations stays in the page.
export function forgetConversations() {
  current = null;
  remember(null);
  for (const id of ["conversation-list", "transcript", "answer-actions", "answer-question"]) $(id)?.replaceChildren();
  if ($("conversation-title")) $("conversation-title").textContent = "New conversation";
}
