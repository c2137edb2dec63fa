"""PDF: one Document per page with text, repaired for layout artefacts (see ingest.clean)."""

from __future__ import annotations

import re
from pathlib import Path

from pypdf import PdfReader
from pypdf.errors import DependencyError, FileNotDecryptedError, PdfReadError, PdfStreamError

from ingest.clean import normalize_text, repair_pdf_page, strip_page_furniture
from kb.config import IngestConfig
from kb.errors import FileSkipped, LoadError
from kb.schema import Document

# Fewer visible characters than this per page on average: the text layer is missing or only page
# numbers / stray marks; the pages are images.
MIN_CHARS_PER_PAGE = 5
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*$", re.MULTILINE)


def _open(path: Path) -> PdfReader:
    try:
        reader = PdfReader(path)
    except OSError as e:
        raise LoadError(str(path), f"cannot read: {e.strerror or e}") from e
    except Exception as e:  # pypdf signals damaged files with many exception types
        raise LoadError(str(path), f"corrupt or truncated PDF: {type(e).__name__}: {e}") from e
    if reader.is_encrypted:
        # Many PDFs are encrypted only to restrict printing or copying: the user password is empty.
        try:
            opened = reader.decrypt("")
        except DependencyError as e:
            raise LoadError(str(path), f"encrypted PDF needs a crypto library: {e}") from e
        except (PdfReadError, ValueError, NotImplementedError) as e:
            raise LoadError(str(path), f"encrypted PDF with an unsupported scheme: {e}") from e
        if not opened:
            raise FileSkipped(str(path), "encrypted PDF: a password is required")
    return reader


def _page_texts(path: Path, reader: PdfReader, max_pages: int) -> list[str]:
    try:
        pages = list(reader.pages)
    except FileNotDecryptedError as e:
        raise FileSkipped(str(path), "encrypted PDF: a password is required") from e
    except (PdfReadError, PdfStreamError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise LoadError(str(path), f"corrupt or truncated PDF: cannot read its page tree ({e})") from e
    if not pages:
        raise LoadError(str(path), "corrupt or truncated PDF: no pages")
    if len(pages) > max_pages:
        raise FileSkipped(str(path), f"{len(pages)} pages is over ingest.max_pdf_pages={max_pages}")
    texts = []
    for number, page in enumerate(pages, start=1):
        try:
            texts.append(page.extract_text() or "")
        except Exception as e:  # pypdf's content-stream parsing raises a wide range of types
            raise LoadError(
                str(path), f"corrupt PDF: page {number}: text extraction failed: {type(e).__name__}: {e}"
            ) from e
    return texts


def load_pdf(path: Path, source: str, *, limits: IngestConfig | None = None) -> list[Document]:
    limits = limits or IngestConfig()
    if path.stat().st_size == 0:
        raise FileSkipped(str(path), "empty file")
    reader = _open(path)
    raw = [normalize_text(t) for t in _page_texts(path, reader, limits.max_pdf_pages)]
    visible = sum(len("".join(t.split())) for t in raw)
    if visible < MIN_CHARS_PER_PAGE * len(raw):
        raise FileSkipped(str(path), "no text layer (scanned?); OCR is not supported")
    pages = [repair_pdf_page(t) for t in strip_page_furniture(raw)]
    docs = []
    # Heading path in effect at the top of each page, carried over from '#' lines on earlier pages.
    path_stack: list[tuple[int, str]] = []
    empty = [n for n, text in enumerate(pages, start=1) if not text.strip()]
    for number, text in enumerate(pages, start=1):
        headings = [title for _, title in path_stack]
        levels = [level for level, _ in path_stack]
        for match in _HEADING.finditer(text):
            level = len(match.group(1))
            path_stack = [(lv, t) for lv, t in path_stack if lv < level] + [(level, match.group(2))]
        if text.strip():
            # heading_levels lets the chunker nest this page's own '#' lines under the carried path.
            meta = {"format": "pdf", "pages": len(pages), "empty_pages": empty, "heading_levels": levels}
            docs.append(Document(text=text.strip(), source=source, page=number, headings=headings, meta=meta))
    return docs
