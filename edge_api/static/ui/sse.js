// Server-Sent Events read from a fetch() Response body (EventSource cannot POST or send headers).
// Follows the WHATWG event-stream format: lines end with \n, \r\n or \r; a blank line dispatches the event;
// `event:` names it (default "message"), `data:` lines are joined with \n, lines starting with ":" are
// comments (keep-alives); one space after the colon is dropped.

export async function* readEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "";
  let data = [];
  let id = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    // A trailing \r may be the first half of a \r\n split across chunks: wait for the next chunk to tell.
    const held = buffer.endsWith("\r") ? "\r" : "";
    const lines = (held ? buffer.slice(0, -1) : buffer).split(/\r\n|\r|\n/);
    buffer = lines.pop() + held; // the last piece is an incomplete line: kept for the next chunk
    for (const line of lines) {
      if (line === "") {
        if (data.length) yield { event: event || "message", data: data.join("\n"), id };
        event = "";
        data = [];
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon === -1 ? line : line.slice(0, colon);
      let text = colon === -1 ? "" : line.slice(colon + 1);
      if (text.startsWith(" ")) text = text.slice(1);
      if (field === "event") event = text;
      else if (field === "data") data.push(text);
      else if (field === "id") id = text;
    }
  }
}
