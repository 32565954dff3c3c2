"""Reading documents: bytes in, chunks and OCR work out. PDFs page by page (`layout`: text blocks, headings,
`tables`, `images`, scanned pages), image files, plain text and Markdown (`extract`), OCR (`ocr`), chunking sized for
the embedding model (`chunks`). Pure and synchronous: no NATS, no I/O beyond the bytes handed in.
"""
