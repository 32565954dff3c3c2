// Pages with their evidence highlighted: the full-size viewer (a <dialog>) and the small page thumbnails.
// A bbox is in the page's own units (PDF points, or pixels of an image file; X-Page-Width/Height give the
// page's size in them), so the highlight is placed in percentages of the page: right at any displayed size.
// An office file has no page pictures: its hits and citations carry a `locator` ("slide 3: Results", "Budget
// rows 2-40 (A2:F40)", "section 2: Installation"), shown instead of a page, with the passage's text.

// Where a hit or citation is, in words: its locator, else its page.
export function where(source) {
  return source.locator || `page ${source.page}`;
}

import { imagePath, pagePath, picture } from "./api.js";

const $ = (id) => document.getElementById(id);

// Object URLs are kept per API path: a page shown twice is fetched once (and the HTTP cache does the rest).
// At most KEPT_PICTURES are kept; the oldest URL is released (a picture already shown stays on screen).
const KEPT_PICTURES = 300;
const pictures = new Map();

function load(path) {
  if (!pictures.has(path)) {
    const pending = picture(path);
    pending.catch(() => pictures.delete(path));
    pictures.set(path, pending);
    if (pictures.size > KEPT_PICTURES) {
      const [oldest, released] = pictures.entries().next().value;
      pictures.delete(oldest);
      released.then((pic) => setTimeout(() => URL.revokeObjectURL(pic.url), 60_000), () => {});
    }
  }
  return pictures.get(path);
}

function deviceWidth(cssWidth) {
  return Math.min(2000, Math.max(64, Math.ceil(cssWidth * (window.devicePixelRatio || 1) / 100) * 100));
}

// A <figure> with the picture and, when `bbox` is given, a highlight box over that region.
export function pageFigure({ url, pageWidth, pageHeight }, bbox, alt) {
  const figure = document.createElement("figure");
  figure.className = "page";
  const img = document.createElement("img");
  img.src = url;
  img.alt = alt;
  figure.append(img);
  if (bbox && pageWidth > 0 && pageHeight > 0) {
    const [x0, y0, x1, y1] = bbox;
    const mark = document.createElement("div");
    mark.className = "highlight";
    mark.setAttribute("aria-hidden", "true");
    mark.style.left = `${(100 * x0) / pageWidth}%`;
    mark.style.top = `${(100 * y0) / pageHeight}%`;
    mark.style.width = `${(100 * (x1 - x0)) / pageWidth}%`;
    mark.style.height = `${(100 * (y1 - y0)) / pageHeight}%`;
    figure.append(mark);
  }
  return figure;
}

// A button showing page `hit.page` of the hit's document small, the hit's region highlighted; opens the viewer.
// A hit without a bbox is from a text file, and one with a locator from an office file: neither has a page to
// show, so the button says "Text" or where the passage is.
export function pageThumbnail(hit, width = 220) {
  const button = document.createElement("button");
  if (!hit.bbox || hit.locator) {
    button.type = "button";
    button.className = "thumb text-only";
    button.textContent = hit.locator || "Text";
    button.setAttribute("aria-label", `Open the passage from ${hit.filename}${hit.locator ? `, ${hit.locator}` : ""}`);
    button.addEventListener("click", () => openPage(hit));
    return button;
  }
  button.type = "button";
  button.className = "thumb";
  button.setAttribute("aria-label", `Open page ${hit.page} of ${hit.filename}`);
  button.addEventListener("click", () => openPage(hit));
  load(pagePath(hit.doc_id, hit.page, deviceWidth(width))).then(
    (pic) => button.append(pageFigure(pic, hit.bbox, `Page ${hit.page} of ${hit.filename}`)),
    (err) => { button.textContent = `Page ${hit.page}: ${err.message}`; },
  );
  return button;
}

// Page `page` of a document, small and without highlight (the document page's thumbnails); opens the viewer.
export function plainPageThumbnail(doc, page, width = 160) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "thumb";
  button.dataset.page = String(page);
  button.setAttribute("aria-label", `Open page ${page} of ${doc.filename}`);
  const source = { doc_id: doc.doc_id, filename: doc.filename, page, textOnly: false };
  button.addEventListener("click", () => openPage(source));
  load(pagePath(doc.doc_id, page, deviceWidth(width))).then(
    (pic) => button.append(pageFigure(pic, null, `Page ${page} of ${doc.filename}`)),
    (err) => { button.textContent = `Page ${page}: ${err.message}`; },
  );
  return button;
}

// The image an image hit is about, small (the image itself, not its page).
export function imageThumbnail(hit, width = 160) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "thumb image-hit";
  const caption = hit.image.caption || hit.text || hit.filename;
  button.setAttribute("aria-label", `Image from ${hit.filename}, ${where(hit)}: ${caption}`);
  button.addEventListener("click", () => openPage(hit));
  load(imagePath(hit.doc_id, hit.image, deviceWidth(width))).then(
    (pic) => {
      const img = document.createElement("img");
      img.src = pic.url;
      img.alt = caption;
      button.append(img);
    },
    (err) => { button.textContent = err.message; },
  );
  return button;
}

let current = null; // { doc_id, filename, page, bbox, locator, text, pages, image }

async function show() {
  const view = $("viewer-page");
  const { doc_id, filename, page } = current;
  $("viewer-title").textContent = `${filename} — ${where(current)}`;
  $("viewer-quote").textContent = current.text || "";
  $("viewer-error").textContent = "";
  view.replaceChildren();
  if (current.textOnly) { // a text or office file: the quote (and a picture's image) is all there is to show
    $("viewer-prev").disabled = $("viewer-next").disabled = true;
    if (current.image) {
      load(imagePath(doc_id, current.image, deviceWidth(Math.min(view.clientWidth || 900, 1000)))).then(
        (pic) => view.replaceChildren(pageFigure(pic, null, current.image.caption || current.text || filename)),
        (err) => { $("viewer-error").textContent = err.message; },
      );
    }
    return;
  }
  view.setAttribute("aria-busy", "true");
  const width = deviceWidth(Math.min(view.clientWidth || 900, 1000));
  try {
    const pic = await load(pagePath(doc_id, page, width));
    current.pages = pic.pages;
    const figure = pageFigure(pic, current.bbox, `Page ${page} of ${filename}`);
    figure.dataset.page = String(page);
    view.replaceChildren(figure);
    figure.querySelector(".highlight")?.scrollIntoView({ block: "center" });
  } catch (err) {
    $("viewer-error").textContent = err.message;
  } finally {
    view.removeAttribute("aria-busy");
  }
  $("viewer-prev").disabled = page <= 1;
  $("viewer-next").disabled = current.pages ? page >= current.pages : true;
}

// Opens the viewer on `source.page` of `source.doc_id`, with `source.bbox` highlighted (if any).
export function openPage(source) {
  current = {
    doc_id: source.doc_id, filename: source.filename, page: source.page, locator: source.locator || null,
    bbox: source.bbox || null, text: source.text || "", image: source.image || null,
    textOnly: source.textOnly ?? (!source.bbox || Boolean(source.locator)),
  };
  const dialog = $("viewer");
  if (!dialog.open) dialog.showModal();
  show();
}

function turn(delta) {
  if (!current) return;
  // Another page than the cited one: no highlight (the bbox belongs to the cited page only).
  current = { ...current, page: current.page + delta, bbox: null, text: "", textOnly: false };
  show();
}

export function setupViewer() {
  $("viewer-close").addEventListener("click", () => $("viewer").close());
  $("viewer-prev").addEventListener("click", () => turn(-1));
  $("viewer-next").addEventListener("click", () => turn(1));
  $("viewer").addEventListener("click", (event) => {
    if (event.target === $("viewer")) $("viewer").close(); // a click on the backdrop
  });
}
