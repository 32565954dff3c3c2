"""E-mail messages (``message/rfc822``, ``.eml``) -> the subject as context, the sender, recipients and date,
then the body, read by Python's ``email`` package (MIME, transfer encodings, charsets, RFC 2047 headers).

The body is the message's text/plain part, else its text/html part read by the HTML reader (the whole body:
a mail has no site chrome); plain text is split into paragraphs on blank lines, its line breaks kept.
Attachments are not read: they are named in a last paragraph ("upload them on their own"). Refused: more than
``MAX_EML_BYTES``, and a message with neither a subject nor a text body.
"""

from __future__ import annotations

import email
import email.policy
import re
from email.message import EmailMessage

from ..extract import DocumentRejected
from .flow import Block, Heading, Paragraph, to_chunks
from .html import html_blocks

MAX_EML_BYTES = 32 * 1024 * 1024
_BLANK_LINES = re.compile(r"\n[ \t]*\n")


def parse_eml(data: bytes, settings):  # -> ParsedDocument (documents.reader imports this module lazily)
    from ..reader import ParsedDocument, ParsedPage

    chunks = to_chunks(message_blocks(data), settings.chunk_max_tokens, settings.chunk_max_chars,
                       locator=lambda _headings: None)  # fmt: skip
    return ParsedDocument(1, iter([ParsedPage(1, tuple(chunks))]))


def message_blocks(data: bytes) -> list[Block]:
    if len(data) > MAX_EML_BYTES:
        raise DocumentRejected(f"e-mail too large: {len(data):,} bytes is over the limit of {MAX_EML_BYTES:,} "
                               "(large attachments?); save its attachments apart and upload them on their own")  # fmt: skip
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    subject = " ".join(str(message.get("subject", "")).split())
    people = [f"{name}: {' '.join(str(message[name]).split())}" for name in ("From", "To", "Cc", "Date") if message[name]]
    body: list[Block] = []
    part = message.get_body(preferencelist=("plain", "html"))
    if part is not None:
        text = _text(part)
        if part.get_content_subtype() == "html":
            body = html_blocks(text.encode(), main_content=False, what="e-mail")
        else:
            paragraphs = (p.strip() for p in _BLANK_LINES.split(text.replace("\r\n", "\n")))
            body = [Paragraph(p) for p in paragraphs if p]
    if not subject and not body:
        raise DocumentRejected("empty e-mail: the message has no subject and no text body; upload the message "
                               "as saved by the mail program (.eml)")  # fmt: skip
    names = [a.get_filename() or a.get_content_type() for a in message.iter_attachments()]
    blocks: list[Block] = [Heading(0, subject)] if subject else []
    if people:
        blocks.append(Paragraph("\n".join(people)))
    blocks += body
    if names:
        blocks.append(Paragraph(f"Attachments (not read; upload them on their own): {', '.join(names)}"))
    return blocks


def _text(part: EmailMessage) -> str:
    try:
        return part.get_content()
    except (LookupError, UnicodeError):  # an unknown or wrong charset: the bytes as UTF-8, errors replaced
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload or "")
