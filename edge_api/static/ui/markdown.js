// A small, safe Markdown renderer for answers. Safety by construction: the whole text is HTML-escaped FIRST,
// and only the fixed tags below are added afterwards, so nothing an answer (or a document quoted in it)
// contains can become markup, a script or an attribute. No links or images are produced.
//
// Supported: paragraphs, line breaks, # headings (shown as h4-h6), - / * / 1. lists, ``` code blocks,
// `code`, **bold**, *italic*, and citations [n] (or [1, 2]) as buttons with data-cite="n".

export function escapeHtml(text) {
  return text
    .replaceAll("&", "&amp;")
    .replaceAll("<", "&lt;")
    .replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;")
    .replaceAll("'", "&#39;");
}

function inline(escaped) {
  // Code spans first, kept aside so that nothing inside them is formatted.
  const codes = [];
  let out = escaped.replace(/`([^`\n]+)`/g, (_, code) => {
    codes.push(code);
    return `\u0000${codes.length - 1}\u0000`;
  });
  out = out
    .replace(/\*\*([^*\n]+)\*\*/g, "<strong>$1</strong>")
    .replace(/(^|[^*\w])\*([^*\n]+)\*(?!\w)/g, "$1<em>$2</em>")
    .replace(/\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]/g, (_, list) =>
      list.split(",").map((n) => {
        const k = n.trim();
        return `<button type="button" class="cite" data-cite="${k}" aria-label="Source ${k}">[${k}]</button>`;
      }).join(""));
  return out.replace(/\u0000(\d+)\u0000/g, (_, i) => `<code>${codes[Number(i)]}</code>`);
}

export function renderMarkdown(text) {
  const lines = escapeHtml(text.replace(/\u0000/g, "")).split(/\r?\n/);
  const html = [];
  let paragraph = [];
  let list = null; // "ul" | "ol"
  let code = null; // lines of an open ``` block

  const flushParagraph = () => {
    if (paragraph.length) html.push(`<p>${paragraph.map(inline).join("<br>")}</p>`);
    paragraph = [];
  };
  const closeList = () => {
    if (list) html.push(`</${list}>`);
    list = null;
  };

  for (const line of lines) {
    if (code !== null) {
      if (/^\s*```/.test(line)) {
        html.push(`<pre><code>${code.join("\n")}</code></pre>`);
        code = null;
      } else {
        code.push(line);
      }
      continue;
    }
    if (/^\s*```/.test(line)) {
      flushParagraph();
      closeList();
      code = [];
      continue;
    }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    const bullet = /^\s*[-*+]\s+(.*)$/.exec(line);
    const numbered = /^\s*\d{1,3}[.)]\s+(.*)$/.exec(line);
    if (heading) {
      flushParagraph();
      closeList();
      const level = Math.min(6, heading[1].length + 3);
      html.push(`<h${level}>${inline(heading[2])}</h${level}>`);
    } else if (bullet || numbered) {
      flushParagraph();
      const kind = bullet ? "ul" : "ol";
      if (list !== kind) {
        closeList();
        html.push(`<${kind}>`);
        list = kind;
      }
      html.push(`<li>${inline((bullet || numbered)[1])}</li>`);
    } else if (line.trim() === "") {
      flushParagraph();
      closeList();
    } else {
      if (list) closeList();
      paragraph.push(line);
    }
  }
  if (code !== null) html.push(`<pre><code>${code.join("\n")}</code></pre>`); // still streaming in
  flushParagraph();
  closeList();
  return html.join("");
}
