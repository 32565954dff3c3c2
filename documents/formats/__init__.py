"""Readers of the structured formats, one module per format: ``html`` (web pages: main content, headings,
tables), ``epub`` (chapters in reading order, each through the HTML reader), ``markdown`` (headings as
context, fenced code kept whole, tables), ``gif`` (the first frame, through the image/OCR path) and ``eml``
(an e-mail's headers and body).

Each module has one ``parse_<format>(data, settings) -> ParsedDocument`` and is registered in
``documents/filetypes.py`` (what an upload is) and ``documents/reader.py`` (``FORMAT_READERS``, the dispatch of
``parse``). The text
formats hand their blocks to :func:`documents.formats.flow.to_chunks`, which chunks them like a PDF page
(sizes, heading context, tables under their header) and sets each chunk's ``locator``.
"""
