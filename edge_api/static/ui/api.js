// The edge API as the page uses it: every request carries the signed-in key (kept in sessionStorage, so it
// lives as long as this tab), every error becomes an ApiError with the API's own message.

const KEY_ITEM = "mmrag.apiKey";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export const auth = {
  get key() { return sessionStorage.getItem(KEY_ITEM); },
  set key(value) {
    if (value) sessionStorage.setItem(KEY_ITEM, value);
    else sessionStorage.removeItem(KEY_ITEM);
  },
  // Called with the ApiError when the server answers 401 (the key was revoked, or none is set).
  onUnauthorized: () => {},
};

function headers(extra = {}) {
  const out = { ...extra };
  if (auth.key) out.Authorization = `Bearer ${auth.key}`;
  return out;
}

async function errorOf(response) {
  let code = "http_" + response.status;
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, code, message);
}

// fetch() against this server; resolves to the Response when it is 2xx, else throws the API's error.
export async function request(path, { method = "GET", json, body, signal, accept } = {}) {
  const extra = {};
  if (json !== undefined) extra["Content-Type"] = "application/json";
  if (accept) extra.Accept = accept;
  let response;
  try {
    response = await fetch(path, {
      method, signal, headers: headers(extra),
      body: json !== undefined ? JSON.stringify(json) : body,
    });
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "the server cannot be reached; check that mmrag is running");
  }
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401) auth.onUnauthorized(error);
    throw error;
  }
  return response;
}

export async function getJSON(path, options) {
  return (await request(path, options)).json();
}

// A picture of the API (page or hit image) as an object URL: an <img> cannot send the key itself.
// Resolves to { url, pageWidth, pageHeight, pages }.
export async function picture(path) {
  const response = await request(path);
  const blob = await response.blob();
  return {
    url: URL.createObjectURL(blob),
    pageWidth: Number(response.headers.get("X-Page-Width")),
    pageHeight: Number(response.headers.get("X-Page-Height")),
    pages: Number(response.headers.get("X-Page-Count")),
  };
}

export function pagePath(docId, page, width) {
  return `/v1/documents/${encodeURIComponent(docId)}/pages/${page}?width=${Math.round(width)}`;
}

// `image.object_name` is "<tenant>/<doc_id>/images/<image_id>": the API takes the doc and the last segment.
export function imagePath(docId, image, width) {
  const imageId = image.object_name.split("/").pop();
  return `/v1/documents/${encodeURIComponent(docId)}/images/${encodeURIComponent(imageId)}?width=${Math.round(width)}`;
}
