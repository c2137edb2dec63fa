"""File loaders: `(path, source) -> list[Document]`, chosen by file suffix.

`source` is the file's path relative to the ingested root ('/' separated); it is copied into every
Document. Every failure raises LoadError naming the file and a specific reason; a file over one of
the ingest.max_* limits (or empty, or a scan without text) raises its subclass FileSkipped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ingest.loaders.docx import load_docx
from ingest.loaders.html import load_html
from ingest.loaders.markdown import load_markdown
from ingest.loaders.pdf import load_pdf
from ingest.loaders.text import load_text
from kb.config import IngestConfig
from kb.errors import LoadError
from kb.schema import Document

Loader = Callable[..., list[Document]]  # (path, source, *, limits: IngestConfig | None = None)

LOADERS: dict[str, Loader] = {
    ".pdf": load_pdf,
    ".docx": load_docx,
    ".html": load_html,
    ".htm": load_html,
    ".md": load_markdown,
    ".markdown": load_markdown,
    ".txt": load_text,
}


def load(path: Path, source: str, limits: IngestConfig | None = None) -> list[Document]:
    """Load one file with the loader for its suffix; `limits` (ingest config) bound what one file may
    cost, the defaults apply when it is None."""
    path = Path(path)
    loader = LOADERS.get(path.suffix.lower())
    if loader is None:
        supported = ", ".join(sorted(LOADERS))
        raise LoadError(
            str(path), f"unsupported file type {path.suffix or '(no suffix)'!r} (supported: {supported})"
        )
    if not path.is_file():
        raise LoadError(str(path), "not a file" if path.exists() else "file not found")
    return loader(path, source) if limits is None else loader(path, source, limits=limits)


__all__ = ["LOADERS", "Loader", "load", "load_docx", "load_html", "load_markdown", "load_pdf", "load_text"]
