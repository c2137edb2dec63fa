"""Source text of the generated (PDF/DOCX/encoded TXT) corpus documents.

Each module holds plain data (lists of blocks or strings); corpus/build.py renders them.
Block kinds: ("title", text), ("meta", text), ("h1", text), ("h2", text), ("p", text),
("ul", [items]), ("table", header, rows, col_widths), ("break",).
"""
