"""Readers of the formats that have no pages of their own: office files (``docx``, ``pptx``, ``sheets``: XLSX and
CSV), each a module with one ``parse_<format>(data, settings) -> ParsedDocument``; ``ooxml`` opens an Office
Open XML package within bounds first (a zip, never an encrypted OLE file; entries and sizes checked before a
byte is inflated).

A chunk of these formats has no bbox and no page picture: its ``page`` is the slide, the sheet or the section
(numbered from 1, so page filters work), and its ``locator`` says where it is in words a user can follow
("slide 3", "Budget rows 2-40 (A2:D40)", "section 2: Installation > Requirements"); see decision 66.
"""
