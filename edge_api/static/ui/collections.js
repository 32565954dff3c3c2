// The tenant's collections (GET /v1/collections): the list's filter, and the checkboxes that scope a question or
// a search to some of them (none checked: every document). Sent as `filters.collections` only when some are
// checked, so a plain question is the plain body every server version accepts.

const $ = (id) => document.getElementById(id);
let names = [];

function boxes(kind) {
  return [...document.querySelectorAll(`.collection-choices[data-for="${kind}"] input[type=checkbox]`)];
}

// The collections checked for `kind` ("ask" or "search"); null when none is.
export function chosenCollections(kind) {
  const chosen = boxes(kind).filter((box) => box.checked).map((box) => box.value);
  return chosen.length ? chosen : null;
}

// `filters` of a question or search for the collections checked (merged into `extra`), or `extra` unchanged.
export function withCollections(kind, extra = null) {
  const chosen = chosenCollections(kind);
  if (!chosen) return extra;
  return { ...(extra || {}), collections: chosen };
}

// `a, b` -> ["a", "b"]; the server checks each name (and says what is wrong with one).
export function parseNames(text) {
  return [...new Set(text.split(",").map((name) => name.trim()).filter(Boolean))];
}

export function showCollections(list) {
  names = list.map((c) => c.name);
  for (const group of document.querySelectorAll(".collection-choices")) {
    const kind = group.dataset.for;
    const was = new Set(chosenCollections(kind) || []);
    group.replaceChildren(...list.map((c) => {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.name = `${kind}-collection`;
      box.value = c.name;
      box.checked = was.has(c.name);
      label.append(box, ` ${c.name} `);
      const count = document.createElement("span");
      count.className = "muted small";
      count.textContent = `(${c.documents})`;
      label.append(count);
      return label;
    }));
  }
  $("ask-scope").hidden = list.length === 0;
  const select = $("doc-collection");
  const chosen = select.value;
  select.replaceChildren(
    new Option("All collections", ""),
    ...list.map((c) => new Option(`${c.name} (${c.documents})`, c.name, false, c.name === chosen)),
  );
  if (chosen && !names.includes(chosen)) select.value = "";
}
