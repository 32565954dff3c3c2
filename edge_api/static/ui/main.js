// Start-up: GET /v1/session says who we are. With auth off it answers at once (no sign-in); with auth on and
// no valid key it is a 401, and the sign-in form asks for a key (kept in sessionStorage for this tab).
// The question box comes first (in the page and in the Tab order) and has the focus once the app shows; the
// documents follow it; #/documents/<doc_id> shows one document's page instead (docpage.js).

import { ApiError, auth, getJSON } from "./api.js";
import { setupAsk } from "./ask.js";
import { route, setDocRole, setupDocPage } from "./docpage.js";
import { forgetConversations, refreshConversations } from "./conversations.js";
import { refresh, setRole, setupDocuments } from "./documents.js";
import { list as listEvaluations, setupEvaluations } from "./evaluations.js";
import { setupSearch } from "./search.js";
import { setupViewer } from "./viewer.js";

const $ = (id) => document.getElementById(id);
let started = false;

function showSignIn(message = "") {
  $("boot").hidden = true;
  $("app").hidden = true;
  $("doc-page").hidden = true;
  $("who").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("sign-in-error").textContent = message;
  $("api-key").focus();
}

function start(session) {
  $("boot").hidden = true;
  $("sign-in").hidden = true;
  $("who").hidden = false;
  $("who").textContent = session.auth === "on"
    ? `Tenant ${session.tenant} · ${session.role}`
    : `Local mode · tenant ${session.tenant}`;
  $("sign-out").hidden = session.auth !== "on";
  setRole(session);
  setDocRole(session);
  // Evaluations are the tenant admin's (`edge_api.auth`): the tab is shown to admins and operators only.
  const admin = session.role === "admin" || session.role === "operator";
  $("tab-evaluations").hidden = !admin;
  if (!admin && $("tab-evaluations").getAttribute("aria-selected") === "true") $("tab-ask").click();
  if (!started) {
    started = true;
    setupDocuments();
    setupAsk();
    setupSearch();
    setupViewer();
    setupEvaluations();
    setupTabs();
    setupDocPage();
  }
  route(); // the app, or the document page the address names
  if (!$("app").hidden) $("question").focus({ preventScroll: true });
  refresh();
  refreshConversations();
  if (admin) listEvaluations().catch((err) => { $("eval-error").textContent = err.message; });
}

async function boot() {
  try {
    start(await getJSON("/v1/session"));
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      const hadKey = Boolean(auth.key);
      auth.key = null;
      showSignIn(hadKey ? err.message : "");
    } else {
      $("boot").textContent = `The server did not answer: ${err.message}`;
      $("boot").classList.add("error");
    }
  }
}

function setupTabs() {
  const tabs = [$("tab-ask"), $("tab-search"), $("tab-evaluations")];
  const select = (tab) => {
    for (const other of tabs) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      other.tabIndex = selected ? 0 : -1;
      $(other.getAttribute("aria-controls")).hidden = !selected;
    }
  };
  tabs.forEach((tab) => {
    tab.addEventListener("click", () => select(tab));
    tab.addEventListener("keydown", (event) => { // arrow keys move between tabs (WAI-ARIA tabs pattern)
      if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
      const shown = tabs.filter((t) => !t.hidden); // the Evaluations tab only for admins
      const i = shown.indexOf(tab);
      const next = shown[(i + (event.key === "ArrowRight" ? 1 : shown.length - 1)) % shown.length];
      select(next);
      next.focus();
    });
  });
}

$("sign-in-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const key = $("api-key").value.trim();
  if (!key) return;
  auth.key = key;
  $("api-key").value = "";
  boot();
});

$("sign-out").addEventListener("click", () => {
  auth.key = null;
  for (const id of ["answer", "sources", "answer-images", "results", "doc-list", "upload-messages", "doc-pages",
    "doc-passages"]) {
    $(id).replaceChildren(); // nothing of the previous key's tenant stays in the page
  }
  $("answer-area").hidden = true;
  forgetConversations();
  showSignIn();
});

auth.onUnauthorized = (err) => {
  if (!$("app").hidden || !$("doc-page").hidden) {
    auth.key = null;
    showSignIn(`Signed out: ${err.message}`);
  }
};

// A file dropped anywhere but on a drop zone must not make the browser leave the page to open it.
for (const type of ["dragover", "drop"]) window.addEventListener(type, (event) => event.preventDefault());

boot();
