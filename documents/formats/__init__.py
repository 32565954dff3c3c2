"""Readers of the structured formats, one module per format: ``html`` (web pages: main content, headings,
tables), ``epub`` (chapters in reading order, each through the HTML reader), ``markdown`` (headings as
context, fenced code kept whole, tables), ``gif`` (the first frame, through the image/OCR path), ``eml``
(an e-mail's headers and body), and the office files: ``word`` (DOCX), ``slides`` (PPTX), ``sheets`` (XLSX and
CSV), after ``ooxml`` has checked an Office Open XML package within bounds (a zip, never an encrypted OLE file;
entries and sizes checked before a byte is inflated).

Each module has one ``parse_<format>(data, settings) -> ParsedDocument`` and is registered in
``documents/filetypes.py`` (what an upload is) and ``documents/reader.py`` (``FORMAT_READERS``, the dispatch of
``parse``). The text formats hand their blocks to :func:`documents.formats.flow.to_chunks`, which chunks them
like a PDF page (sizes, heading context, tables under their header) and sets each chunk's ``locator``; the
office readers lay theirs out with ``common.Flow``.

A chunk of these formats has no bbox and no page picture: its ``page`` is the chapter, slide, sheet or section
(numbered from 1, so page filters work), and its ``locator`` says where it is in words a user can follow
("slide 3: Results", "Budget rows 2-40 (A2:D40)", "section 2: Installation > Requirements"); see decisions 66 and 74.
"""
