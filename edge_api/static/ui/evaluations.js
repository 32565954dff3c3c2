// Evaluations (admins of the tenant): run a questions file (JSON Lines, as for `mmrag eval`) with
// POST /v1/evaluations, list the tenant's reports (GET /v1/evaluations) and show one (GET /v1/evaluations/{id}):
// the metrics of each run, the questions that changed, and every question's result. A queued or running
// evaluation is polled until it ends.

import { getJSON, request } from "./api.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 1000;
let polling = null;

const fmt = (value) => (value === null || value === undefined ? "–" : value.toFixed(3));

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  if (className) node.className = className;
  return node;
}

function table(head, rows) {
  const t = el("table", undefined, "eval-table");
  const tr = el("tr");
  for (const h of head) tr.append(el("th", h));
  t.append(tr);
  for (const row of rows) {
    const r = el("tr");
    for (const cell of row) r.append(el("td", String(cell)));
    t.append(r);
  }
  return t;
}

function metricsRows(runs) {
  return runs.map(({ generation, metrics: m }) => [
    `g${generation}`, fmt(m.recall), fmt(m.ndcg10), fmt(m.mrr), fmt(m.fact_rate), fmt(m.abstention_rate), m.errors,
  ]);
}
const METRIC_HEAD = ["generation", "recall@k", "nDCG@10", "MRR", "facts", "abstained", "errors"];

export function parseQuestions(text) {
  const questions = [];
  text.split("\n").forEach((line, i) => {
    if (!line.trim() || line.trim().startsWith("#")) return;
    try {
      questions.push(JSON.parse(line));
    } catch {
      throw new Error(`line ${i + 1} is not JSON: each line is {"question": ..., "expected": [...], "facts": [...]}`);
    }
  });
  if (!questions.length) throw new Error("the file holds no question");
  return questions;
}

function showReport(record) {
  const box = $("eval-report");
  box.replaceChildren();
  box.hidden = false;
  box.append(el("h3", `${record.name || record.id} · ${record.state}`));
  if (record.state === "queued" || record.state === "running") {
    box.append(el("p", `${record.progress.done} of ${record.progress.total || record.questions.length} asked…`, "muted"));
  }
  if (record.error) box.append(el("p", record.error, "error"));
  if (record.runs.length) box.append(table(METRIC_HEAD, metricsRows(record.runs)));
  if (record.changes.length) {
    box.append(el("h4", `Changed (${record.changes.length})`));
    box.append(table(["question", "verdict", "rank", "facts", "abstained"], record.changes.map((c) => [
      c.id || c.question, c.verdict, `${c.before.rank ?? "–"} → ${c.after.rank ?? "–"}`,
      `${c.before.facts_found.filter(Boolean).length} → ${c.after.facts_found.filter(Boolean).length}`,
      `${c.before.abstained} → ${c.after.abstained}`,
    ])));
  }
  if (record.runs.length) {
    const run = record.runs[0];
    box.append(el("h4", `Questions on g${run.generation}`));
    box.append(table(["question", "recall", "rank", "facts", "abstained", "first source"], run.results.map((r) => [
      record.questions[r.index].question, fmt(r.recall), r.rank ?? "–",
      r.facts_found.length ? `${r.facts_found.filter(Boolean).length}/${r.facts_found.length}` : "–",
      r.abstained ? "yes" : "no", r.error || (r.top[0] ? `${r.top[0].filename} p.${r.top[0].page}` : "–"),
    ])));
  }
}

async function open(id) {
  clearTimeout(polling);
  const record = await getJSON(`/v1/evaluations/${encodeURIComponent(id)}`);
  showReport(record);
  if (record.state === "queued" || record.state === "running") {
    polling = setTimeout(() => open(id).then(list).catch((err) => { $("eval-error").textContent = err.message; }), POLL_MS);
  }
}

export async function list() {
  const { evaluations } = await getJSON("/v1/evaluations");
  const ul = $("eval-list");
  ul.replaceChildren();
  $("eval-empty").hidden = evaluations.length > 0;
  for (const e of evaluations) {
    const li = el("li");
    const button = el("button", e.name || e.id, "ghost");
    button.type = "button";
    button.addEventListener("click", () => open(e.id).catch((err) => { $("eval-error").textContent = err.message; }));
    const m = e.metrics[0];
    const summary = m ? ` · recall ${fmt(m.recall)} · nDCG ${fmt(m.ndcg10)} · facts ${fmt(m.fact_rate)}` : "";
    li.append(button, el("span", ` ${e.state}${summary}${e.changed ? ` · ${e.changed} changed` : ""}`, "muted small"));
    ul.append(li);
  }
}

async function run(body) {
  const response = await request("/v1/evaluations", { method: "POST", json: { ...body, k: Number($("eval-k").value) || 10 } });
  const record = await response.json();
  await list();
  await open(record.id);
}

export function setupEvaluations() {
  $("eval-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    $("eval-error").textContent = "";
    const file = $("eval-file").files[0];
    try {
      if (!file) throw new Error("choose a questions file (.jsonl)");
      await run({ questions: parseQuestions(await file.text()) });
    } catch (err) {
      $("eval-error").textContent = err.message;
    }
  });
  // The answers users rated up in their conversations, every key's of the tenant (GET /v1/feedback/questions):
  // what they liked is what the next re-index must still find.
  $("eval-liked").addEventListener("click", async () => {
    $("eval-error").textContent = "";
    try {
      const liked = await getJSON("/v1/feedback/questions?owner=*");
      if (!liked.questions.length) throw new Error("no answer has been rated up yet (thumbs up in a conversation)");
      await run({ name: `answers rated up (${liked.questions.length})`, questions: liked.questions });
    } catch (err) {
      $("eval-error").textContent = err.message;
    }
  });
}
